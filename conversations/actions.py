"""What pages, API clients and the model's tools do to conversations: save, then tell every open
socket of the conversation (Zulip's `zerver/actions` habit). Every group event goes out through
`conversation_notify`.

Stop and decisions reach a run through the process's hub (live.hub), wherever the run is.
"""

from __future__ import annotations

import logging
from typing import Any

from channels.layers import get_channel_layer

from . import rendering, services
from .live.draft import answer_state
from .live.events import tool_call_position
from .live.hub import conversation_group, hub
from .models import Conversation, Message
from .refusals import NotWaiting
from .streaming.loop import Decision

logger = logging.getLogger(__name__)


async def conversation_notify(conversation_id: int, event: dict[str, Any]) -> None:
    """Send `event` to every socket of the conversation, in every process. The layer is
    at-most-once: a socket that misses it catches up from the rows when it reconnects."""
    layer = get_channel_layer()
    assert layer is not None
    try:
        await layer.group_send(conversation_group(conversation_id), event)
    except Exception:
        logger.warning("could not send %s to conversation %s", event["type"], conversation_id)


async def conversation_changed(*, conversation_id: int) -> None:
    """Show the conversation's title and sidebar entry, as the rows have them, on every page of
    it that is open (`conversation.changed`)."""
    try:
        conversation = await services.asidebar_entry(conversation_id=conversation_id)
    except Conversation.DoesNotExist:
        return
    await conversation_notify(
        conversation_id,
        {
            "type": "conversation.changed",
            "title": conversation.title,
            "html": rendering.render_conversation_changed(conversation),
        },
    )


async def answers_ended(messages: list[Message]) -> None:
    """Send each answer that ended without its run its final state (`answer.ended`)."""
    for message in messages:
        await conversation_notify(
            message.conversation_id,
            {"type": "answer.ended", "answer": answer_state(message), "seq": message.seq},
        )


async def answers_sweep(*, conversation_id: int | None = None) -> list[Message]:
    """Mark the answers whose process died interrupted (every conversation's, or one's)."""
    ended = await services.aruns_end(
        status=Message.Status.INTERRUPTED,
        error=services.INTERRUPTED_ERROR,
        conversation_id=conversation_id,
        stale=True,
    )
    await answers_ended(ended)
    return ended


async def answers_stop(*, conversation: Conversation) -> None:
    """Stop the conversation's running answers; one that no process runs ends at once."""
    message_ids = await services.astop_request(conversation=conversation)
    unclaimed = await hub().stop(conversation.pk, message_ids)
    if unclaimed:
        ended = await services.aruns_end(status=Message.Status.CANCELLED, message_ids=unclaimed)
        await answers_ended(ended)


async def tool_call_decide(
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


async def conversation_rename(
    *, owner_id: int, conversation_id: int, title: object
) -> Conversation:
    """Rename one of the owner's conversations (services.conversation_rename, which refuses a bad
    title); every open page of it shows the new title."""
    renamed = await services.aconversation_rename(
        owner_id=owner_id, conversation_id=conversation_id, title=title
    )
    await conversation_changed(conversation_id=renamed.pk)
    return renamed


async def conversation_delete(*, conversation: Conversation) -> None:
    """Stop the conversation's running answers, then delete it: the same from the page, the API
    and the model's tool."""
    await answers_stop(conversation=conversation)
    await services.aconversation_delete(conversation=conversation)


async def conversation_delete_owned(*, owner_id: int, conversation_id: int) -> str:
    """conversation_delete for one of the owner's conversations by id (the model's tool); its
    title. NoSuchConversation if the owner has none by that id."""
    conversation = await services.aconversation_owned(
        owner_id=owner_id, conversation_id=conversation_id
    )
    await conversation_delete(conversation=conversation)
    return str(conversation)
