"""A scripted model for tests of the tool loop and its observers: no server, no Django."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from conversations.streaming.events import (
    ProviderEvent,
    ToolArgumentsDelta,
    ToolCallReady,
    ToolCallStarted,
    Usage,
)
from conversations.streaming.loop import Decision
from conversations.streaming.tools import ToolResult


def scripted(*steps: list[ProviderEvent]) -> Any:
    """A provider answering each model call with the next list of events.

    `seen` holds the messages and `offered` the tools of each call, in order.
    """
    remaining = list(steps)
    seen: list[list[dict[str, Any]]] = []
    offered: list[list[dict[str, Any]]] = []

    async def provider(
        messages: list[dict[str, Any]], tools: list[dict[str, Any]]
    ) -> AsyncIterator[ProviderEvent]:
        seen.append([dict(m) for m in messages])
        offered.append(tools)
        for event in remaining.pop(0):
            yield event

    provider.seen = seen  # type: ignore[attr-defined]
    provider.offered = offered  # type: ignore[attr-defined]
    return provider


def call(index: int, name: str, arguments: dict[str, Any]) -> list[ProviderEvent]:
    text = json.dumps(arguments)
    return [
        ToolCallStarted(index, f"call_{index}", name),
        ToolArgumentsDelta(index, text[:5]),
        ToolArgumentsDelta(index, text[5:]),
        ToolCallReady(index, f"call_{index}", name, text),
    ]


class Log:
    """Records what the loop reported, in order."""

    def __init__(self) -> None:
        self.entries: list[tuple[Any, ...]] = []

    async def step_started(self, step: int) -> None:
        self.entries.append(("step", step))

    async def text(self, delta: str) -> None:
        self.entries.append(("text", delta))

    async def reasoning_delta(self, delta: str) -> None:
        self.entries.append(("reasoning", delta))

    async def tool_started(self, step: int, index: int, call_id: str, name: str) -> None:
        self.entries.append(("started", step, index, call_id, name))

    async def tool_arguments(self, step: int, index: int, delta: str) -> None:
        self.entries.append(("arguments", step, index, delta))

    async def tool_ready(
        self, step: int, index: int, call_id: str, name: str, arguments: str
    ) -> None:
        self.entries.append(("ready", step, index, call_id, name, arguments))

    async def tool_awaiting_approval(self, step: int, index: int) -> None:
        self.entries.append(("awaiting", step, index))

    async def tool_running(self, step: int, index: int, decision: Decision | None = None) -> None:
        approved = () if decision is None else (decision.name, decision.by)
        self.entries.append(("running", step, index, *approved))

    async def tool_denied(self, step: int, index: int, decision: Decision, output: str) -> None:
        self.entries.append(("denied", step, index, decision.name, decision.by, output))

    async def tool_progress(
        self, step: int, index: int, progress: float, total: float | None, message: str
    ) -> None:
        self.entries.append(("progress", step, index, progress, total, message))

    async def tool_finished(self, step: int, index: int, result: ToolResult) -> None:
        self.entries.append(("finished", step, index, result.ok, result.output))

    async def usage(self, usage: Usage) -> None:
        self.entries.append(("usage", usage.total_tokens))

    def of(self, kind: str) -> list[tuple[Any, ...]]:
        return [entry for entry in self.entries if entry[0] == kind]
