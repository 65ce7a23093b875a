"""A message's parts: its text split where the model made tool calls, for rows and drafts alike."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol


class PlacedCall(Protocol):
    @property
    def step(self) -> int: ...

    @property
    def text_offset(self) -> int: ...


def group_by_step[C: PlacedCall](calls: Iterable[C]) -> list[list[C]]:
    """Tool calls, in (step, index) order, grouped by the model call (step) that made them."""
    steps: dict[int, list[C]] = {}
    for call in calls:
        steps.setdefault(call.step, []).append(call)
    return list(steps.values())


def split_parts[C: PlacedCall](content: str, steps: Sequence[list[C]]) -> list[tuple[str, list[C]]]:
    """The text split where the model made tool calls: [(text, calls made after it), ...]."""
    parts: list[tuple[str, list[C]]] = []
    offset = 0
    for calls in steps:
        at = min(max(calls[0].text_offset, offset), len(content))
        parts.append((content[offset:at], calls))
        offset = at
    parts.append((content[offset:], []))
    return parts
