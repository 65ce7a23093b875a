"""A chat page's socket to a server process (Daphne, `manage.py serve`, nginx in front of
workers), keeping every frame it got, as htmx gets them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.helpers.chat import appended_text


class Page:
    """A chat page's socket: sends what the page sends and keeps the frames it receives."""

    def __init__(self, socket: ClientConnection) -> None:
        self.socket = socket
        self.frames: list[str] = []

    @classmethod
    async def open(cls, url: str, conversation: int, cookie: str, *, timeout: float = 10) -> Page:
        """The page of `conversation` on the server at `url`, opened with the session `cookie`
        (`sessionid=...`) from the server's own origin, once its messages are shown."""
        socket = await connect(
            f"ws{url.removeprefix('http')}/ws/conversations/{conversation}/",
            additional_headers={"Cookie": cookie, "Origin": url},
        )
        page = cls(socket)
        await page.until(lambda frame: 'id="messages"' in frame, timeout)
        return page

    async def send(self, frame: dict[str, str]) -> None:
        await self.socket.send(json.dumps(frame))

    async def until(self, predicate: Callable[[str], bool], timeout: float = 10) -> list[str]:
        """Receive frames until one satisfies `predicate`; the frames received."""
        start = len(self.frames)
        async with asyncio.timeout(timeout):
            while True:
                self.frames.append(str(await self.socket.recv()))
                if predicate(self.frames[-1]):
                    return self.frames[start:]

    async def shown(self, text: str, timeout: float = 20) -> None:
        """Wait until the answer's text on the page contains `text`."""
        if text not in self.text():
            await self.until(lambda _: text in self.text(), timeout)

    async def closed_with(self, timeout: float = 10) -> int:
        """Receive frames until the server closes the socket; the close frame's code."""
        with pytest.raises(ConnectionClosed) as closed:
            async with asyncio.timeout(timeout):
                while True:
                    self.frames.append(str(await self.socket.recv()))
        assert closed.value.rcvd is not None, "closed without a close frame"
        return closed.value.rcvd.code

    def text(self) -> str:
        """The answer text the page was sent, as it shows it."""
        return "".join(appended_text(self.frames))
