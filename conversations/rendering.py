"""Socket frames built from the same template partials as the page."""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache
from typing import Any

from django.conf import settings
from django.template import Template
from django.template.loader import get_template
from django.utils.html import format_html

from .dom_ids import dom_id
from .live.draft import AnswerDraft, CallDraft
from .live.events import (
    Event,
    MessageStatus,
    ReasoningDelta,
    Snapshot,
    TextDelta,
    ToolArguments,
    ToolCreated,
    ToolProgress,
    ToolStatus,
    Usage,
)
from .markdown import render_markdown, stable_length
from .models import Conversation, Message

PAGE = "conversations/detail.html"
SIDEBAR = "conversations/sidebar.html"


@cache
def cached_partial(name: str, page: str = PAGE) -> Template:
    return get_template(f"{page}#{name}")  # type: ignore[return-value]


def render(name: str, context: dict[str, Any], page: str = PAGE) -> str:
    """A partial of the chat page (or of `page`); looked up once (stream updates render them
    many times), except with DEBUG, where templates are edited."""
    template = get_template(f"{page}#{name}") if settings.DEBUG else cached_partial(name, page)
    return template.render(context)  # type: ignore[arg-type]


def render_messages(messages: list[Message]) -> str:
    """Every message, replacing the whole list (sent when a socket connects)."""
    running = any(message.in_progress for message in messages)
    return render("messages", {"history": messages}) + render_run_controls(running=running)


def render_new_messages(turn: list[Message | AnswerDraft]) -> str:
    """A new turn (the user's message and the answer), appended; the title too, which the first
    message sets."""
    user_message = turn[0]
    assert isinstance(user_message, Message)
    running = any(message.in_progress for message in turn)
    return (
        render("new-messages", {"history": turn})
        + render_heading(conversation=user_message.conversation, status=turn[-1].status)
        + render_run_controls(running=running)
    )


def render_sidebar_entry(*, conversation: Conversation, status: str | None) -> str:
    """The conversation's entry in the sidebar of its own page (marked current), replacing the
    one there; `status` is its latest answer's (None before the first)."""
    return render(
        "sidebar-entry",
        {"entry": conversation, "status": status, "current_id": conversation.pk},
        page=SIDEBAR,
    )


def render_conversation_changed(conversation: Conversation) -> str:
    """The title and the sidebar entry of a conversation renamed (or its answer status changed),
    for its open pages; `conversation` is annotated with `answer_status`."""
    return render_heading(
        conversation=conversation, status=getattr(conversation, "answer_status", None)
    )


def render_heading(*, conversation: Conversation, status: str | None) -> str:
    """The conversation's title and its sidebar entry (`status`: its latest answer's)."""
    return render("title", {"conversation": conversation}) + render_sidebar_entry(
        conversation=conversation, status=status
    )


def render_branch(*, conversation: Conversation, messages: list[Message | AnswerDraft]) -> str:
    """The whole list after a message action superseded some messages: they disappear, and the
    new answer (the last) shows as it streams."""
    running = any(message.in_progress for message in messages)
    status = messages[-1].status if messages else None
    return (
        render("messages", {"history": messages})
        + render_heading(conversation=conversation, status=status)
        + render_run_controls(running=running)
    )


def render_message(message: Message | AnswerDraft) -> str:
    """The whole message, morphed into the page's (idiomorph keeps what did not change)."""
    return render("message", {"message": message, "morph_message": True}) + render_run_controls(
        running=message.in_progress
    )


def render_usage(usage: dict[str, int]) -> str:
    """The conversation's token total (`services.usage_total`), replacing the page's."""
    return render("conversation-usage", {"usage": usage, "morph": True})


def render_run_controls(*, running: bool) -> str:
    return render("run-controls", {"running": running})


def render_chat_error(error: str, *, until_answer_ends: bool = False) -> str:
    """The error line; with `until_answer_ends` the page empties it once no answer runs."""
    return render(
        "chat-error", {"error": error, "clears": "answer-end" if until_answer_ends else ""}
    )


def render_message_accepted() -> str:
    """The acknowledgement of a message: the page clears what it sent from the box (the form
    stays, with its focus and any text typed since), and the error line."""
    return render("composer-ack", {}) + render_chat_error("")


def render_pong() -> str:
    """The answer to {"action": "ping"}: proof the socket and the server's event loop are alive."""
    return f'<template id="{dom_id("pong")}"></template>'


def render_events(answer: AnswerDraft, events: Iterable[Event]) -> str:
    """Apply `events` to the page's copy of the answer; the fragments that show them.

    New text is appended to the plain tail of the answer's last text element, and the blocks a
    new line finishes are moved from there to its Markdown, rendered as the finished answer
    will be; new tool cards are appended to its body;
    changed cards, arguments and the footer are replaced; a new status (or a snapshot)
    re-renders the whole message once, Markdown and all when it is finished. Raises
    `live.draft.SequenceGap` when an event is missing.
    """
    fragments: list[str] = []
    text: list[str] = []
    reasoning: list[str] = []
    # Text goes after the last group of tool calls: its number is the text element's.
    groups = len({step for step, _ in answer.calls})
    whole = reasoning_block = footer = False
    retry = answer.retry
    changed_calls: dict[tuple[int, int], bool] = {}  # key -> the whole card (or arguments only)
    if answer.shown_stable is None:
        answer.shown_stable = shown_stable(answer)

    def flush_text() -> None:
        if text:
            delta = "".join(text)
            text.clear()
            fragments.append(text_append(dom_id("message-text-tail", answer.id, groups), delta))
            # Blocks can only be finished by a new line: the tail is parsed then, not per token.
            if "\n" in delta:
                fragments.extend(finish_blocks(answer, groups))

    for event in events:
        # The first reasoning makes the hidden reasoning block appear.
        reasoning_block |= isinstance(event, ReasoningDelta) and not answer.has_reasoning
        if not answer.apply(event) or whole:
            continue
        match event:
            case TextDelta(text=delta):
                text.append(delta)
            case ReasoningDelta(text=delta):
                if not reasoning_block:
                    reasoning.append(delta)
            case ToolCreated(step=step, index=index):
                flush_text()
                call = answer.calls[(step, index)]
                opens_group = sum(1 for other, _ in answer.calls if other == step) == 1
                if opens_group:
                    # The text before the calls is done: its tail becomes Markdown too.
                    fragments.extend(finish_blocks(answer, groups, whole_part=True))
                fragments.append(card_append(answer, call, new_group=opens_group))
                groups += opens_group
            case ToolArguments(step=step, index=index):
                changed_calls.setdefault((step, index), False)
            case ToolStatus(step=step, index=index) | ToolProgress(step=step, index=index):
                changed_calls[(step, index)] = True
            case Usage():
                footer = True
            case MessageStatus() | Snapshot():
                whole = True
    if whole:
        answer.shown_stable = None  # the page shows the split the template makes
        return render_message(answer)
    flush_text()
    context: dict[str, Any] = {"message": answer}
    if reasoning_block:
        fragments.append(render("reasoning", context))
    elif reasoning:
        target = dom_id("message-reasoning-text", answer.id)
        fragments.append(text_append(target, "".join(reasoning)))
    for key, whole_card in changed_calls.items():
        call = answer.calls[key]
        fragments.append(
            render("tool-card" if whole_card else "tool-arguments", {"call": call, "morph": True})
        )
    if footer:
        fragments.append(render("message-footer", {"message": answer, "morph": True}))
    if answer.retry is not retry:
        fragments.append(render("message-retry", context))
    return "".join(fragments)


def text_append(target: str, text: str) -> str:
    """More text for the element `target`: its children are appended there (htmx OOB swap).

    Formatted with `format_html`, which escapes `text`, rather than through a template: this is
    the fragment sent for nearly every token, and the template engine cost several times more.
    """
    return format_html('<div hx-swap-oob="beforeend:#{}">{}</div>', target, text)


def shown_stable(answer: AnswerDraft) -> int:
    """Where the tail of the answer's last text part starts, as its page shows it
    (`streaming_markdown` in the message partial)."""
    content = answer.content
    last = answer.parts()[-1][0]
    return len(content) - len(last) + stable_length(last)


def finish_blocks(answer: AnswerDraft, part: int, *, whole_part: bool = False) -> list[str]:
    """The blocks of text part `part` finished since the last call, appended as Markdown to
    its Markdown element, and the plain tail that is left; the whole rest with `whole_part`."""
    assert answer.shown_stable is not None
    tail = answer.content[answer.shown_stable :]
    done = len(tail) if whole_part else stable_length(tail)
    if not done:
        return []
    answer.shown_stable += done
    return [
        format_html(
            '<div hx-swap-oob="beforeend:#{}">{}</div>',
            dom_id("message-text-md", answer.id, part),
            render_markdown(tail[:done]),
        ),
        format_html(
            '<div hx-swap-oob="innerHTML:#{}">{}</div>',
            dom_id("message-text-tail", answer.id, part),
            tail[done:],
        ),
    ]


def card_append(answer: AnswerDraft, call: CallDraft, *, new_group: bool) -> str:
    if new_group:
        part = len({step for step, _ in answer.calls})
        return render("tool-calls-append", {"message": answer, "calls": [call], "part": part})
    return render("tool-card-append", {"call": call})
