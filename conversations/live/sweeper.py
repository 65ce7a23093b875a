"""Ends answers no live process is writing, and tells their pages.

A run saves its answer at least every CHAT_HEARTBEAT_INTERVAL seconds; an answer whose last
save is older than CHAT_RUN_STALE_AFTER belongs to a process that died. Every serving process
sweeps for those every CHAT_SWEEP_INTERVAL seconds and marks them interrupted, keeping their
text. Stop ends at once, as cancelled, an answer no process claims. Either way the conversation's
pages get the answer's final state (`answer.ended`), with no reload.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from typing import Any

from channels.layers import get_channel_layer
from django.conf import settings

from .. import services
from ..models import Conversation, Message
from .draft import answer_state
from .hub import conversation_group, hub

logger = logging.getLogger(__name__)

_sweepers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task[None]] = (
    weakref.WeakKeyDictionary()
)


async def sweep(*, conversation_id: int | None = None) -> list[Message]:
    """Mark the answers whose process died interrupted (every conversation's, or one's)."""
    ended = await services.aruns_end(
        status=Message.Status.INTERRUPTED,
        error=services.INTERRUPTED_ERROR,
        conversation_id=conversation_id,
        stale=True,
    )
    await announce_ended(ended)
    return ended


async def stop(*, conversation: Conversation) -> None:
    """Stop the conversation's running answers; one that no process runs ends at once."""
    message_ids = await services.astop_request(conversation=conversation)
    unclaimed = await hub().stop(conversation.pk, message_ids)
    if unclaimed:
        ended = await services.aruns_end(status=Message.Status.CANCELLED, message_ids=unclaimed)
        await announce_ended(ended)


async def announce_ended(messages: list[Message]) -> None:
    """Send each ended answer's final state to its conversation's pages."""
    layer = get_channel_layer()
    assert layer is not None
    for message in messages:
        event = {"type": "answer.ended", "answer": answer_state(message), "seq": message.seq}
        try:
            await layer.group_send(conversation_group(message.conversation_id), event)
        except Exception:
            # Its pages see it ended when they next read it from the rows.
            logger.warning("could not tell the pages that message %s ended", message.pk)


async def sweep_forever() -> None:
    while True:
        try:
            await sweep()
        except Exception:
            logger.warning("sweeping for interrupted answers failed", exc_info=True)
        await asyncio.sleep(settings.CHAT_SWEEP_INTERVAL)


def start() -> None:
    """Sweep on this event loop from now on (once per loop; not when CHAT_SWEEP_INTERVAL is 0)."""
    if settings.CHAT_SWEEP_INTERVAL <= 0:
        return
    loop = asyncio.get_running_loop()
    running = _sweepers.get(loop)
    if running is None or running.done():
        _sweepers[loop] = loop.create_task(sweep_forever(), name="answer-sweeper")


async def stop_sweeping() -> None:
    """Stop this event loop's sweeper (a test that started one ends with this)."""
    task = _sweepers.pop(asyncio.get_running_loop(), None)
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class SweeperMiddleware:
    """Starts the process's sweeper with its first request or socket.

    Daphne sends no ASGI lifespan events, so this is the first moment the server's event loop
    is known.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope["type"] in ("http", "websocket"):
            start()
        return await self.app(scope, receive, send)
