"""The normalised events every provider adapter yields."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class ReasoningDelta:
    """Thinking the model shows apart from its answer (reasoning fields, `<think>` blocks)."""

    text: str


@dataclass(frozen=True, slots=True)
class ToolCallStarted:
    index: int
    call_id: str
    name: str


@dataclass(frozen=True, slots=True)
class ToolArgumentsDelta:
    index: int
    delta: str


@dataclass(frozen=True, slots=True)
class ToolCallReady:
    index: int
    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class ResponseDone:
    """A finished Responses API response: its id and output items, to continue from or replay."""

    response_id: str
    output: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int
    output_tokens: int
    total_tokens: int


@dataclass(frozen=True, slots=True)
class Finished:
    reason: str


@dataclass(frozen=True, slots=True)
class StreamError:
    message: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Retrying:
    """The model call failed before its first event; try `attempt` of `attempts` follows in
    `delay` seconds."""

    delay: float
    attempt: int
    attempts: int
    reason: str


ProviderEvent = (
    TextDelta
    | ReasoningDelta
    | ToolCallStarted
    | ToolArgumentsDelta
    | ToolCallReady
    | ResponseDone
    | Usage
    | Finished
    | StreamError
    | Retrying
)
