"""The events of one answer, numbered 1, 2, 3… with no gaps (`seq`), and their wire form.

Every change to an answer being written is one of these. The runner's draft makes them; pages
and API clients apply them, in order, to what they already have. `Snapshot` replaces everything
at once, for a subscriber that fell too far behind for the kept events to catch it up.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar


@dataclass(frozen=True, slots=True)
class MessageStatus:
    """The answer is queued, streaming, or finished (complete, failed, cancelled, interrupted)."""

    TYPE: ClassVar[str] = "message.status"
    seq: int
    status: str
    error: str = ""
    at: str = ""


@dataclass(frozen=True, slots=True)
class Step:
    """The answer's next model call (the first, or the one after a round of tool calls)."""

    TYPE: ClassVar[str] = "step"
    seq: int
    step: int


@dataclass(frozen=True, slots=True)
class TextDelta:
    TYPE: ClassVar[str] = "text.delta"
    seq: int
    text: str


@dataclass(frozen=True, slots=True)
class ReasoningDelta:
    TYPE: ClassVar[str] = "reasoning.delta"
    seq: int
    text: str


@dataclass(frozen=True, slots=True)
class ToolCreated:
    """The model began a tool call; `text_offset` is how much answer text came before it."""

    TYPE: ClassVar[str] = "tool.created"
    seq: int
    step: int
    index: int
    call_id: str
    name: str
    text_offset: int
    # The MCP server the tool comes from, "" for the site's own tools.
    server: str = ""


@dataclass(frozen=True, slots=True)
class ToolArguments:
    """More of a call's arguments, and all of them so far parsed as far as they go."""

    TYPE: ClassVar[str] = "tool.arguments"
    seq: int
    step: int
    index: int
    delta: str
    parsed: Any


@dataclass(frozen=True, slots=True)
class ToolStatus:
    """A call's new status: pending (with its whole arguments), awaiting_approval, running, or
    how it ended. The status after someone decided on a call that asks first carries the
    `decision` (approved, denied, timed_out), who made it and why."""

    TYPE: ClassVar[str] = "tool.status"
    seq: int
    step: int
    index: int
    status: str
    arguments: str | None = None
    parsed: Any = None
    output: str = ""
    error: str = ""
    at: str = ""
    decision: str = ""
    decided_by: str = ""
    reason: str = ""
    # A finished call's JSON result beside its text (an MCP tool's structuredContent), or None.
    structured: Any = None
    # Its images, as {"mime_type", "size"}; the page and clients fetch each one.
    images: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ToolProgress:
    """How far a running call has got, as its tool reported it (an MCP server's
    notifications/progress): `progress` of `total` (None when the tool does not know), and what
    it is doing. Reports closer together than CHAT_PROGRESS_INTERVAL are merged."""

    TYPE: ClassVar[str] = "tool.progress"
    seq: int
    step: int
    index: int
    progress: float
    total: float | None = None
    message: str = ""


@dataclass(frozen=True, slots=True)
class Usage:
    """The tokens the answer has used so far, all model calls together."""

    TYPE: ClassVar[str] = "usage"
    seq: int
    input_tokens: int
    output_tokens: int
    total_tokens: int


@dataclass(frozen=True, slots=True)
class Retrying:
    """The model call failed before answering (`reason`); try `attempt` of `attempts` starts in
    `delay` seconds. Shown until the answer's next event."""

    TYPE: ClassVar[str] = "retrying"
    seq: int
    delay: float
    attempt: int
    attempts: int
    reason: str


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The whole answer as of `seq` (see `AnswerDraft.state`)."""

    TYPE: ClassVar[str] = "snapshot"
    seq: int
    message: dict[str, Any]


Event = (
    MessageStatus
    | Step
    | TextDelta
    | ReasoningDelta
    | ToolCreated
    | ToolArguments
    | ToolStatus
    | ToolProgress
    | Usage
    | Retrying
    | Snapshot
)

EVENT_TYPES: dict[str, type[Event]] = {
    kind.TYPE: kind
    for kind in (
        MessageStatus,
        Step,
        TextDelta,
        ReasoningDelta,
        ToolCreated,
        ToolArguments,
        ToolStatus,
        ToolProgress,
        Usage,
        Retrying,
        Snapshot,
    )
}


def event_to_dict(event: Event) -> dict[str, Any]:
    """The event as JSON-ready data: {"type": ..., "seq": ..., its fields}."""
    data: dict[str, Any] = {"type": event.TYPE}
    for item in fields(event):
        data[item.name] = getattr(event, item.name)
    return data


def event_from_dict(data: dict[str, Any]) -> Event:
    """The event `event_to_dict` made; KeyError or TypeError if `data` is not one."""
    kind = EVENT_TYPES[data["type"]]
    return kind(**{item.name: data[item.name] for item in fields(kind) if item.name in data})


def tool_call_id(*, message_id: int, step: int, index: int) -> str:
    """A tool call's id on the wire: unique on the site and known from the call's first event."""
    return f"{message_id}:{step}:{index}"


def tool_call_position(value: object) -> tuple[int, int, int] | None:
    """(message_id, step, index) of a tool call id, or None if `value` is not one."""
    if not isinstance(value, str):
        return None
    parts = value.split(":")
    if len(parts) != 3 or not all(part.isascii() and part.isdigit() for part in parts):
        return None
    message_id, step, index = (int(part) for part in parts)
    return message_id, step, index
