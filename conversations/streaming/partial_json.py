"""Optimistic parsing of tool-call arguments while they are still streaming."""

from __future__ import annotations

from typing import Any

import jiter


def parse_partial_arguments(text: str) -> dict[str, Any] | None:
    """The JSON object in `text` as far as it has arrived, or None if there is none yet."""
    try:
        value = jiter.from_json(text.encode(), partial_mode="trailing-strings")
    except Exception:  # jiter raises ValueError; encode() can raise on lone surrogates.
        return None
    return value if isinstance(value, dict) else None
