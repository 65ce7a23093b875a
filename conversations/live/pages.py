"""What the open pages of a conversation show of it besides its messages: its title and its
sidebar entry, sent to them all through the conversation's group (`conversation.changed`)."""

from __future__ import annotations

import logging

from channels.layers import get_channel_layer

from .. import rendering, services
from ..models import Conversation
from .hub import conversation_group

logger = logging.getLogger(__name__)


async def conversation_changed(*, conversation_id: int) -> None:
    """Show the conversation's title and sidebar entry, as the rows have them, on every page of
    it that is open (in any process)."""
    try:
        conversation = await services.asidebar_entry(conversation_id=conversation_id)
    except Conversation.DoesNotExist:
        return
    event = {
        "type": "conversation.changed",
        "title": conversation.title,
        "html": rendering.render_conversation_changed(conversation),
    }
    layer = get_channel_layer()
    assert layer is not None
    try:
        await layer.group_send(conversation_group(conversation_id), event)
    except Exception:
        logger.warning("could not show conversation %s's new title on its pages", conversation_id)
