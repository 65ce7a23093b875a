"""The real servers' stream shapes, one file each in tests/data/server_shapes/.

Each file holds the response the loopback server replays (`response`: its streamed chunks, or one
plain JSON body), what the Chat Completions adapter reads from it (`answer`), and what the chat
stores of it (`stored`). tests/test_server_shapes.py and tests/test_server_shapes_stored.py read
them all.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.helpers.fake_openai import Script, json_body, sse

DATA = Path(__file__).resolve().parents[1] / "data" / "server_shapes"


@dataclass(frozen=True)
class Shape:
    name: str
    description: str
    response: dict[str, Any]
    answer: dict[str, Any]
    stored: dict[str, Any]

    def script(self) -> Script:
        """The response, for `FakeOpenAI.queue`."""
        if "chunks" in self.response:
            return sse(self.response["chunks"])
        return json_body(self.response["json_body"], content_type=self.response["content_type"])


def _load(path: Path) -> Shape:
    return Shape(name=path.stem, **json.loads(path.read_text()))


SHAPES = {shape.name: shape for shape in map(_load, sorted(DATA.glob("*.json")))}
