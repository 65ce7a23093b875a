"""The JSON API's shapes: how messages and tool calls look to programs (docs/api.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..live.draft import answer_state

if TYPE_CHECKING:
    from ..live.draft import AnswerDraft
    from ..models import Conversation, Message


def tool_call_id(*, message_id: int, step: int, index: int) -> str:
    """A tool call's id in the API: unique on the site and known from the call's first event."""
    return f"{message_id}:{step}:{index}"


def tool_call_position(value: object) -> tuple[int, int, int] | None:
    """(message_id, step, index) of an API tool call id, or None if `value` is not one."""
    if not isinstance(value, str):
        return None
    parts = value.split(":")
    if len(parts) != 3 or not all(part.isascii() and part.isdigit() for part in parts):
        return None
    message_id, step, index = (int(part) for part in parts)
    return message_id, step, index


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
