"""The JSON API's shapes: how messages and tool calls look to programs (docs/api.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..live.draft import answer_state
from ..live.events import tool_call_id

if TYPE_CHECKING:
    from ..live.draft import AnswerDraft
    from ..models import Conversation, Message


def message_state(message: Message | AnswerDraft) -> dict[str, Any]:
    """The whole message as the API shows it: its role, and an id on every tool call."""
    return state_with_ids(answer_state(message), role=message.role)


def state_with_ids(state: dict[str, Any], *, role: str = "assistant") -> dict[str, Any]:
    """An answer's state (`answer_state`, as events carry it) as the API shows it: a copy with
    its role and an id on every tool call."""
    state = {**state, "role": role}
    state["tool_calls"] = [
        {
            **call,
            "tool_call_id": tool_call_id(
                message_id=state["id"], step=call["step"], index=call["index"]
            ),
        }
        for call in state["tool_calls"]
    ]
    return state


def conversation_state(conversation: Conversation) -> dict[str, Any]:
    """A conversation as the API lists it (without its messages)."""
    return {
        "id": conversation.pk,
        "title": conversation.title,
        "model": conversation.model,
        "api_style": conversation.api_style,
        "created_at": conversation.created_at.isoformat(),
        "updated_at": conversation.updated_at.isoformat(),
    }
