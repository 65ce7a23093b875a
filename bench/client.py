"""Load driver for this project: C chat pages on the browser's socket protocol, every token timed.

    .venv/bin/python bench/client.py --pages pages.json --tokens 100 --out result.json

`pages.json` lists one entry per stream: {"writer": {"url", "cookie"}, "watcher": {...} or null}.
Every page connects and reads its snapshot as htmx's ws extension would; once all are open, each
writer sends one message. A stream is measured on its watcher when it has one (a page on another
server process), else on its writer: text appended by `beforeend` swaps is "streamed" (a token
that comes twice there is a duplicate), and the finished message's final rendering "shows" any
token not seen before.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

from tally import Answer, now_us, summary
from websockets.asyncio.client import ClientConnection, connect

APPEND = re.compile(r'<div hx-swap-oob="beforeend:#message-(\d+)-text-\d+-tail">(.*?)</div>', re.S)
ASSISTANT = re.compile(r'<article id="message-(\d+)" class="message role-assistant status-(\w+)"')
ENDED = {"complete", "failed", "cancelled", "interrupted"}


def page_origin(socket_url: str) -> str:
    """The Origin a browser sends with the socket: the page's scheme, host and port."""
    scheme, _, rest = socket_url.partition("://")
    return f"{'https' if scheme == 'wss' else 'http'}://{rest.split('/', 1)[0]}"


class Page:
    def __init__(self, url: str, cookie: str, answer: Answer | None) -> None:
        self.url = url
        self.cookie = cookie
        self.answer = answer  # None: frames are read and dropped
        self.socket: ClientConnection | None = None
        self.message_id = ""
        self.done = asyncio.Event()

    async def open(self) -> None:
        self.socket = await connect(
            self.url,
            additional_headers={"Cookie": self.cookie, "Origin": page_origin(self.url)},
            max_size=None,
            open_timeout=60,
        )
        await self.socket.recv()  # the snapshot

    async def read(self) -> None:
        assert self.socket is not None
        try:
            async for frame in self.socket:
                if self.read_frame(str(frame)):
                    break
        except Exception as error:
            if self.answer is not None:
                self.answer.failed = f"socket: {error}"[:200]
        self.done.set()

    def read_frame(self, frame: str) -> bool:
        """Record the frame; True once this page's answer has ended."""
        at = now_us()
        for message_id, status in ASSISTANT.findall(frame):
            self.message_id = self.message_id or message_id  # the new turn's frame
            if message_id != self.message_id:
                continue
            if self.answer is not None:
                # A whole rendering of the answer (this project's snapshots and final frame;
                # every frame, before it appended deltas).
                self.answer.shown(frame, at)
            if status in ENDED:
                if self.answer is not None:
                    self.answer.finished = True
                    if status != "complete":
                        self.answer.failed = f"answer {status}"
                return True
        if self.answer is not None:
            for message_id, text in APPEND.findall(frame):
                if message_id == self.message_id:
                    self.answer.streamed(text, at)
        return False


async def run(
    streams: list[dict[str, Any]], tokens: int, limit_s: float, message: str, wait: bool
) -> dict[str, Any]:
    answers: list[Answer] = []
    writers: list[Page] = []
    pages: list[Page] = []
    for stream in streams:
        answer = Answer(tokens)
        answers.append(answer)
        watcher = stream.get("watcher")
        writer = Page(
            stream["writer"]["url"], stream["writer"]["cookie"], None if watcher else answer
        )
        writers.append(writer)
        pages.append(writer)
        if watcher:
            pages.append(Page(watcher["url"], watcher["cookie"], answer))
    # Open the sockets a few at a time, as pages would load: not all at the same instant.
    gate = asyncio.Semaphore(20)

    async def open_page(page: Page) -> None:
        async with gate:
            await page.open()

    await asyncio.gather(*(open_page(page) for page in pages))
    gc.collect()
    gc.freeze()  # the client's own garbage collection would otherwise count as latency
    if wait:
        # The benchmark measures the server from here: the streams, not the connecting.
        print("connected", flush=True)
        await asyncio.to_thread(sys.stdin.readline)
    readers = [asyncio.create_task(page.read()) for page in pages]
    started = time.monotonic()
    for writer in writers:
        assert writer.socket is not None
        await writer.socket.send(json.dumps({"message": message}))
    try:
        async with asyncio.timeout(limit_s):
            await asyncio.gather(*(page.done.wait() for page in pages))
    except TimeoutError:
        for answer in answers:
            if not answer.finished:
                answer.failed = answer.failed or "timed out"
    wall = time.monotonic() - started
    for task in readers:
        task.cancel()
    for page in pages:
        if page.socket is not None:
            await page.socket.close()
    return summary("this project", answers, wall)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pages", type=Path, required=True)
    parser.add_argument("--tokens", type=int, default=100)
    parser.add_argument("--timeout", type=float, default=120)
    parser.add_argument("--message", default="go", help='"tokens=2" to warm a server up')
    parser.add_argument(
        "--wait", action="store_true", help='print "connected", then wait for a line on stdin'
    )
    parser.add_argument("--out", type=Path, required=True)
    options = parser.parse_args()
    streams = json.loads(options.pages.read_text())
    result = asyncio.run(
        run(streams, options.tokens, options.timeout, options.message, options.wait)
    )
    options.out.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
