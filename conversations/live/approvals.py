"""Decisions on tool calls that ask before they run: from any page or API client to the run."""

from __future__ import annotations

from ..api.protocol import tool_call_position
from ..streaming.loop import Decision
from .hub import hub

# The longest reason a denial may give, in characters.
REASON_MAX_LENGTH = 1000


class NotWaiting(Exception):
    """No call by that id waits for a decision in this conversation; the message says so."""


async def decide(
    *, conversation_id: int, tool_call_id: str, approved: bool, reason: str, decided_by: str
) -> None:
    """Approve or deny a waiting tool call of the conversation, wherever its answer runs.

    Raises NotWaiting for a call that is not waiting (decided already, unknown, or in another
    conversation: all look the same).
    """
    position = tool_call_position(tool_call_id)
    decision = Decision(approved=approved, by=decided_by, reason="" if approved else reason)
    if position is None or not await hub().decide(conversation_id, *position, decision):
        shown = tool_call_id if len(tool_call_id) <= 40 else tool_call_id[:39] + "…"
        raise NotWaiting(
            f"Tool call {shown} is not waiting for a decision (decided already, or no such call)."
        )
