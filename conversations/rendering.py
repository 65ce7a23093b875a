"""Socket frames built from the same template partials as the page."""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache
from typing import Any

from django.conf import settings
from django.template import Template
from django.template.loader import get_template
from django.utils.html import format_html

from .live.draft import AnswerDraft, CallDraft
from .live.events import (
    CallArgumentsAppended,
    CallChanged,
    CallStarted,
    Event,
    ReasoningAppended,
    Snapshot,
    StatusChanged,
    TextAppended,
    UsageChanged,
)
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
    conversation = user_message.conversation
    return (
        render("new-messages", {"history": turn})
        + render("title", {"conversation": conversation})
        + render_sidebar_entry(conversation=conversation, status=turn[-1].status)
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
    status = getattr(conversation, "answer_status", None)
    return render("title", {"conversation": conversation}) + render_sidebar_entry(
        conversation=conversation, status=status
    )


def render_branch(*, conversation: Conversation, messages: list[Message | AnswerDraft]) -> str:
    """The whole list after a message action superseded some messages: they disappear, and the
    new answer (the last) shows as it streams."""
    running = any(message.in_progress for message in messages)
    title = render("title", {"conversation": conversation})
    entry = render_sidebar_entry(
        conversation=conversation, status=messages[-1].status if messages else None
    )
    return (
        render("messages", {"history": messages})
        + title
        + entry
        + render_run_controls(running=running)
    )


def render_message(message: Message | AnswerDraft) -> str:
    return render("message", {"message": message}) + render_run_controls(
        running=message.in_progress
    )


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
    return '<template id="pong"></template>'


def render_events(answer: AnswerDraft, events: Iterable[Event]) -> str:
    """Apply `events` to the page's copy of the answer; the fragments that show them.

    New text is appended to the answer's last text element, new tool cards to its body;
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

    def flush_text() -> None:
        if text:
            fragments.append(text_append(f"message-{answer.id}-text-{groups}", "".join(text)))
            text.clear()

    for event in events:
        # The first reasoning makes the hidden reasoning block appear.
        reasoning_block |= isinstance(event, ReasoningAppended) and not answer.has_reasoning
        if not answer.apply(event) or whole:
            continue
        match event:
            case TextAppended(text=delta):
                text.append(delta)
            case ReasoningAppended(text=delta):
                if not reasoning_block:
                    reasoning.append(delta)
            case CallStarted(step=step, index=index):
                flush_text()
                call = answer.calls[(step, index)]
                opens_group = sum(1 for other, _ in answer.calls if other == step) == 1
                fragments.append(card_append(answer, call, new_group=opens_group))
                groups += opens_group
            case CallArgumentsAppended(step=step, index=index):
                changed_calls.setdefault((step, index), False)
            case CallChanged(step=step, index=index):
                changed_calls[(step, index)] = True
            case UsageChanged():
                footer = True
            case StatusChanged() | Snapshot():
                whole = True
    if whole:
        return render_message(answer)
    flush_text()
    context: dict[str, Any] = {"message": answer}
    if reasoning_block:
        fragments.append(render("reasoning", context))
    elif reasoning:
        target = f"message-{answer.id}-reasoning-text"
        fragments.append(text_append(target, "".join(reasoning)))
    for key, whole_card in changed_calls.items():
        call = answer.calls[key]
        fragments.append(render("tool-card" if whole_card else "tool-arguments", {"call": call}))
    if footer:
        fragments.append(render("message-footer", context))
    if answer.retry is not retry:
        fragments.append(render("message-retry", context))
    return "".join(fragments)


def text_append(target: str, text: str) -> str:
    """More text for the element `target`: its children are appended there (htmx OOB swap).

    Formatted with `format_html`, which escapes `text`, rather than through a template: this is
    the fragment sent for nearly every token, and the template engine cost several times more.
    """
    return format_html('<div hx-swap-oob="beforeend:#{}">{}</div>', target, text)


def card_append(answer: AnswerDraft, call: CallDraft, *, new_group: bool) -> str:
    if new_group:
        part = len({step for step, _ in answer.calls})
        return render("tool-calls-append", {"message": answer, "calls": [call], "part": part})
    return render("tool-card-append", {"call": call})
