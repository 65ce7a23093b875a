"""Decisions on tool calls that ask before they run: from any page or API client to the run."""

from __future__ import annotations


class NotWaiting(Exception):
    """No call by that id waits for a decision in this conversation; the message says so."""


async def decide(
    *, conversation_id: int, tool_call_id: str, approved: bool, reason: str, decided_by: str
) -> None:
    """Approve or deny a waiting tool call of the conversation, wherever its answer runs.

    Raises NotWaiting for a call that is not waiting (decided already, unknown, or in another
    conversation: all look the same).
    """
    raise NotWaiting(f"No tool call {tool_call_id} is waiting for a decision.")
