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
)


def scripted(*steps: list[ProviderEvent]) -> Any:
    """A provider answering each model call with the next list of events."""
    remaining = list(steps)
    seen: list[list[dict[str, Any]]] = []

    async def provider(
        messages: list[dict[str, Any]], tools: list[dict[str, Any]]
    ) -> AsyncIterator[ProviderEvent]:
        seen.append([dict(m) for m in messages])
        for event in remaining.pop(0):
            yield event

    provider.seen = seen  # type: ignore[attr-defined]
    return provider


def call(index: int, name: str, arguments: dict[str, Any]) -> list[ProviderEvent]:
    text = json.dumps(arguments)
    return [
        ToolCallStarted(index, f"call_{index}", name),
        ToolArgumentsDelta(index, text[:5]),
        ToolArgumentsDelta(index, text[5:]),
        ToolCallReady(index, f"call_{index}", name, text),
    ]
