"""What the multi-process tests share: the settings of server processes on the tests' PostgreSQL
and Redis, and a chat page's socket to one of them."""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

from django.conf import settings
from websockets.asyncio.client import ClientConnection

from tests.helpers.fake_openai import FakeOpenAI
from tests.helpers.servers import shared_database_url


def shared_server_env(fake_openai: FakeOpenAI) -> dict[str, str]:
    """Settings of a server process on the tests' database and Redis, its model `fake_openai`."""
    return {
        # The test's own, which signed the session cookies the pages send.
        "SECRET_KEY": settings.SECRET_KEY,
        "DATABASE_URL": shared_database_url(),
        "REDIS_URL": os.environ["REDIS_URL"],
        "REDIS_PREFIX": settings.REDIS_PREFIX,
        "OPENAI_BASE_URL": fake_openai.base_url,
        "OPENAI_API_KEY": "test-key",
        "LLM_MODEL": "fake-model",
        "LLM_MAX_RETRIES": "0",
        # The tests' own processes sweep only when asked; these sweep as production does.
        "CHAT_SWEEP_INTERVAL": "2",
    }


class Page:
    """A chat socket opened as the page opens it, reading frames as htmx would get them."""

    def __init__(self, socket: ClientConnection) -> None:
        self.socket = socket
        self.frames: list[str] = []

    async def until(self, predicate: Any, timeout: float = 10) -> list[str]:
        start = len(self.frames)
        async with asyncio.timeout(timeout):
            while True:
                self.frames.append(str(await self.socket.recv()))
                if predicate(self.frames[-1]):
                    return self.frames[start:]

    async def send(self, frame: dict[str, str]) -> None:
        await self.socket.send(json.dumps(frame))
