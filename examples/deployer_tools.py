"""Two tools of a deployer's own, as CHAT_TOOLS names them (docs/settings.md):

    CHAT_TOOLS=examples.deployer_tools.convert_units,examples.deployer_tools.SAVE_NOTE make run

`convert_units` is a plain function: its schema comes from its type hints and its description
from its docstring. `SAVE_NOTE` is a `Tool` built from a function with options: it asks the user
before it runs (Approve or Deny on its card, from any tab or API client), since it writes a file.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Literal

from conversations.streaming.tools import Tool

# Metres, grams and seconds per unit.
UNITS = {
    "m": ("length", 1.0),
    "km": ("length", 1000.0),
    "mi": ("length", 1609.344),
    "ft": ("length", 0.3048),
    "g": ("mass", 1.0),
    "kg": ("mass", 1000.0),
    "lb": ("mass", 453.59237),
    "s": ("time", 1.0),
    "min": ("time", 60.0),
    "h": ("time", 3600.0),
}
Unit = Literal["m", "km", "mi", "ft", "g", "kg", "lb", "s", "min", "h"]


def convert_units(
    value: Annotated[float, "The amount to convert."],
    unit: Annotated[Unit, "The unit it is in."],
    to: Annotated[Unit, "The unit wanted."],
) -> str:
    """Convert an amount between units of length, mass or time."""
    kind, factor = UNITS[unit]
    wanted, wanted_factor = UNITS[to]
    if kind != wanted:
        raise ValueError(f"cannot convert {kind} ({unit}) to {wanted} ({to})")
    return f"{value:g} {unit} = {value * factor / wanted_factor:.6g} {to}"


NOTES_FILE = Path(os.environ.get("NOTES_FILE", "var/notes.txt"))


def save_note(text: Annotated[str, "The note, one line."]) -> str:
    """Save a short note for the site's operator, with the time."""
    line = " ".join(text.split())
    if not line:
        raise ValueError("the note is empty")
    NOTES_FILE.parent.mkdir(parents=True, exist_ok=True)
    with NOTES_FILE.open("a", encoding="utf-8") as notes:
        notes.write(f"{datetime.now(UTC).isoformat(timespec='seconds')} {line}\n")
    return f"Saved the note ({len(line)} characters)."


SAVE_NOTE = Tool.from_function(save_note, needs_approval=True, timeout=5.0)
