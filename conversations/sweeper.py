"""Sweeps for answers no live process is writing, every CHAT_SWEEP_INTERVAL seconds.

A run saves its answer at least every CHAT_HEARTBEAT_INTERVAL seconds; an answer whose last
save is older than CHAT_RUN_STALE_AFTER belongs to a process that died. Every serving process
sweeps for those (actions.answers_sweep) and marks them interrupted, keeping their text; the
conversation's pages get the answer's final state (`answer.ended`), with no reload.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from typing import Any

from django.conf import settings

from .actions import answers_sweep

logger = logging.getLogger(__name__)

_sweepers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task[None]] = (
    weakref.WeakKeyDictionary()
)


async def sweep_forever() -> None:
    while True:
        try:
            await answers_sweep()
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
