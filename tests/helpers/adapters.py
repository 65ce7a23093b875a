"""Reading what the two adapters (Chat Completions, Responses) yield: their provider events."""

from __future__ import annotations

from conversations.streaming.events import ProviderEvent, TextDelta


def text_of(events: list[ProviderEvent]) -> str:
    return "".join(event.text for event in events if isinstance(event, TextDelta))


def of_type[T](events: list[ProviderEvent], kind: type[T]) -> list[T]:
    return [event for event in events if isinstance(event, kind)]
