"""A streaming scanner for the `<think>` and `<tool_call>` blocks some models write as text."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Literal

SegmentKind = Literal["text", "reasoning", "tool_call"]

_OPENING_TAGS: dict[str, SegmentKind] = {"<think>": "reasoning", "<tool_call>": "tool_call"}
_CLOSING_TAGS: dict[SegmentKind, str] = {"reasoning": "</think>", "tool_call": "</tool_call>"}
_NAME = re.compile(r'"name"\s*:\s*"([^"\\]+)"')


@dataclass(frozen=True, slots=True)
class Segment:
    kind: SegmentKind
    text: str


class TaggedTextScanner:
    """Feed text pieces as they stream; get back text, reasoning and whole tool-call bodies.

    Only what may be the start of a tag is held back, so plain text passes through at once.
    Whitespace right after a tag is dropped, as models put a line break there.
    """

    def __init__(self) -> None:
        self._kind: SegmentKind = "text"
        self._pending = ""
        self._after_tag = False

    def feed(self, piece: str) -> list[Segment]:
        if self._kind == "text" and not self._pending and not self._after_tag and "<" not in piece:
            # Most pieces: plain text that cannot start a tag.
            return [Segment("text", piece)]
        self._pending += piece
        segments: list[Segment] = []
        while self._skip_space_after_tag():
            found = _first_tag(self._pending, _tags_ending(self._kind))
            if found is None:
                break
            position, tag = found
            self._emit(segments, self._pending[:position], closed=True)
            self._pending = self._pending[position + len(tag) :]
            self._kind = _OPENING_TAGS.get(tag, "text")
            self._after_tag = True
        if self._kind != "tool_call" and self._pending:
            held = _partial_tag_length(self._pending, self._kind)
            self._emit(segments, self._pending[: len(self._pending) - held], closed=False)
            self._pending = self._pending[len(self._pending) - held :]
        return segments

    def flush(self) -> list[Segment]:
        """What is still held back once the text has ended; an unclosed tool call counts."""
        segments: list[Segment] = []
        self._emit(segments, self._pending, closed=True)
        self._pending = ""
        return segments

    def _skip_space_after_tag(self) -> bool:
        """Drop whitespace after the last tag; False when nothing else is left to scan."""
        if self._after_tag:
            self._pending = self._pending.lstrip()
            self._after_tag = not self._pending
        return bool(self._pending)

    def _emit(self, segments: list[Segment], text: str, *, closed: bool) -> None:
        if self._kind == "tool_call":
            if closed and text.strip():
                segments.append(Segment("tool_call", text.strip()))
        elif text:
            segments.append(Segment(self._kind, text))


def parse_tool_call(body: str) -> tuple[str, str] | None:
    """The (name, arguments JSON) of a `<tool_call>` body, or None when it names no tool.

    A body that is not valid JSON but names a tool keeps its raw text as the arguments, so the
    tool's validation reports the problem back to the model.
    """
    try:
        data = json.loads(body)
    except ValueError:
        match = _NAME.search(body)
        return (match.group(1), body) if match else None
    if not isinstance(data, dict) or not isinstance(data.get("name"), str) or not data["name"]:
        return None
    arguments = data.get("arguments", data.get("parameters", {}))
    return data["name"], arguments if isinstance(arguments, str) else json.dumps(arguments)


def _tags_ending(kind: SegmentKind) -> tuple[str, ...]:
    """The tags that end a run of `kind`: a closing tag, or for text any opening tag."""
    return tuple(_OPENING_TAGS) if kind == "text" else (_CLOSING_TAGS[kind],)


def _first_tag(text: str, tags: tuple[str, ...]) -> tuple[int, str] | None:
    hits = [(position, tag) for tag in tags if (position := text.find(tag)) >= 0]
    return min(hits) if hits else None


def _partial_tag_length(text: str, kind: SegmentKind) -> int:
    """How many characters at the end of `text` may begin a tag that ends `kind`'s run."""
    tags = _tags_ending(kind)
    for length in range(min(len(text), max(map(len, tags)) - 1), 0, -1):
        if any(tag.startswith(text[-length:]) for tag in tags):
            return length
    return 0
