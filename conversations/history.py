"""The provider history: what is sent back to the model, each tool call paired with its output
as the API expects."""

from __future__ import annotations

from typing import Any

from django.conf import settings

from .models import Conversation, Message, ToolCall
from .services.database import database_async
from .services.selectors import current_messages
from .streaming.events import ToolCallReady
from .streaming.loop import assistant_tool_calls_message, tool_output_message


def provider_history(*, conversation: Conversation, before: Message) -> list[dict[str, Any]]:
    """The Chat Completions messages for everything said before `before` (current messages only).

    Each stored tool call is paired with its output, as the API requires; calls that never
    produced an output (a stopped run) are left out together with their step.
    """
    history: list[dict[str, Any]] = [{"role": "system", "content": settings.LLM_SYSTEM_PROMPT}]
    messages = (
        current_messages(conversation)
        .filter(created_at__lte=before.created_at)
        .exclude(pk=before.pk)
    )
    for message in messages.order_by("created_at", "id").prefetch_related("tool_calls"):
        if message.role == Message.Role.USER:
            history.append({"role": "user", "content": message.content})
            continue
        offset = 0
        for step_calls in message.tool_call_steps():
            answered = [call for call in step_calls if call.status in ToolCall.FINISHED]
            if not answered:
                continue
            text = message.content[offset : answered[0].text_offset]
            offset = answered[0].text_offset
            history.append(
                assistant_tool_calls_message(
                    text,
                    [ToolCallReady(c.index, c.call_id, c.name, c.arguments) for c in answered],
                )
            )
            history.extend(tool_output_message(call.call_id, call.output) for call in answered)
        rest = message.content[offset:]
        if rest:
            history.append({"role": "assistant", "content": rest})
    return history


aprovider_history = database_async(provider_history)
