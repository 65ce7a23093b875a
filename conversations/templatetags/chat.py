"""Template tags and filters for chat pages."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django import template
from django.conf import settings
from django.utils.safestring import SafeString

from .. import dom_ids, limits, services
from ..live.draft import AnswerDraft, RetryDraft
from ..markdown import StreamingText, render_markdown, render_streaming
from ..models import Message
from ..services import answer_cut_off

register = template.Library()

# Tool output longer than this is cut (stream.js shows the rest on demand).
LONG_OUTPUT_CHARACTERS = 1500
LONG_OUTPUT_LINES = 20

# The inputs' maxlength: the most characters the server takes in each (it refuses more).
MAX_LENGTHS: dict[str, Callable[[], int]] = {
    "message": lambda: settings.CHAT_MESSAGE_MAX_LENGTH,  # a message, or its edit
    "title": lambda: services.TITLE_MAX_LENGTH,
    "search": lambda: services.SEARCH_QUERY_MAX_LENGTH,
    "reason": lambda: limits.REASON_MAX_LENGTH,  # a denial's
}


@register.simple_tag
def dom_id(name: str, *values: object) -> str:
    """An element's id: `{% dom_id "message-body" message.id %}` is "message-7-body"
    (dom_ids.IDS has the names; rendering.py and the tests use the same)."""
    return dom_ids.dom_id(name, *values)


@register.simple_tag
def max_length(field: str) -> int:
    """`maxlength="{% max_length "message" %}"`: the limit the server enforces (MAX_LENGTHS)."""
    return MAX_LENGTHS[field]()


@register.filter
def markdown(text: str) -> SafeString:
    return render_markdown(text)


@register.filter
def streaming_markdown(text: str, last: bool) -> StreamingText:
    """A text part of an answer being written: the last one split into finished Markdown blocks
    and the plain rest, as the stream shows it (rendering.render_events); earlier ones whole."""
    return render_streaming(text, finished=not last)


@register.filter
def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)


@register.filter
def is_structured(value: Any) -> bool:
    return isinstance(value, dict | list)


@register.filter
def argument_text(value: Any) -> str:
    """A tool call's argument as shown: text as it is, other values as (indented) JSON."""
    return value if isinstance(value, str) else pretty_json(value)


@register.filter
def tool_label(call: Any) -> str:
    """A call's tool as its card names it: an MCP tool without its server's prefix (the card
    shows the server beside it)."""
    prefix = f"{call.server}__"
    if call.server and call.name.startswith(prefix):
        return str(call.name[len(prefix) :])
    return str(call.name)


@register.filter
def progress_percent(call: Any) -> int | None:
    """A running call's progress as a whole percentage, when its tool said of how much."""
    if call.progress is None or not call.progress_total or call.progress_total <= 0:
        return None
    percent: float = 100 * call.progress / call.progress_total
    return max(0, min(100, round(percent)))


@register.filter
def is_long_output(text: str) -> bool:
    """Output a tool card shows cut, with a "Show all" button."""
    return len(text) > LONG_OUTPUT_CHARACTERS or text.count("\n") >= LONG_OUTPUT_LINES


@register.filter
def seconds(value: timedelta | None) -> str:
    if value is None:
        return ""
    return f"{value.total_seconds():.2f} s"


@register.filter
def usage_summary(message: Message | AnswerDraft) -> str:
    """A message's footer: "10 in / 5 out tokens · 2.00 s" (what it has of the two)."""
    shown = []
    if message.total_tokens:
        shown.append(f"{message.input_tokens} in / {message.output_tokens} out tokens")
    if message.duration:
        shown.append(seconds(message.duration))
    return " · ".join(shown)


@register.filter
def usage_title(message: Message | AnswerDraft) -> str:
    """The footer's title: "10 input and 5 output tokens, written in 2.00 s"."""
    shown = []
    if message.total_tokens:
        shown.append(f"{message.input_tokens} input and {message.output_tokens} output tokens")
    if message.duration:
        shown.append(f"written in {seconds(message.duration)}")
    return ", ".join(shown)


@register.filter
def retry_note(retry: RetryDraft | None) -> str:
    """An answer's model call waiting to be tried again: "<reason> Retrying in 2 s (try 2 of 3).";
    "" when none waits."""
    if not retry:
        return ""
    return (
        f"{retry.reason} Retrying in {retry.seconds} s (try {retry.attempt} of {retry.attempts})."
    )


@register.filter
def cut_off(message: Message | AnswerDraft) -> bool:
    """Whether the answer was cut off at the token limit (it can be continued)."""
    return answer_cut_off(message)
