"""Load driver for the Chainlit peer: C browser sessions, one question each, every token timed.

    bench/.venv-chainlit/bin/python bench/chainlit_peer/client.py --url http://127.0.0.1:9200 \\
        --streams 100 --tokens 100 --timeout 120 --out result.json

Each session does what Chainlit 2.12's web frontend (@chainlit/react-client) does on page load:
GET /auth/config, /user and /project/settings, then POST /set-session-cookie (the sticky-session
cookie, sent again with the socket), then opens socket.io at /ws/socket.io (long-polling first,
then the upgrade to a WebSocket that offers permessage-deflate, like a browser) with the auth
payload {clientType, sessionId, threadId, userEnv, chatProfile}, and on connect emits
`connection_successful` and `fetch_favorites`. Once every session is connected, all send one
`client_message` at about the same time.

The answer's first token arrives inside `stream_start` (Chainlit sends the message with its first
token as content) and every later one in a `stream_token`; the answer ends with the
`update_message` (or `new_message`) for the same message id. A token's latency is the time it is
first seen here minus the stamp the upstream wrote into it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import re
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import socketio  # type: ignore[import-untyped]

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tally import now_us, percentile  # bench/tally.py and upstream.py, stdlib only
from upstream import TOKEN_PATTERN

TOKEN = re.compile(TOKEN_PATTERN)
LANGUAGE = "en-US"


@dataclass
class Session:
    """One browser tab: its own cookie jar, socket and answer."""

    url: str
    session_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    seen: dict[int, int] = field(default_factory=dict)  # token index -> latency in µs
    duplicated: int = 0
    answer_id: str | None = None
    failed: str | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    http: aiohttp.ClientSession | None = None
    sio: socketio.AsyncClient | None = None

    async def connect(self) -> None:
        # unsafe=True: aiohttp's jar otherwise drops cookies set by an IP-address host.
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        for path in ("/auth/config", "/user", f"/project/settings?language={LANGUAGE}"):
            async with self.http.get(self.url + path) as response:
                await response.read()
        async with self.http.post(
            self.url + "/set-session-cookie", json={"session_id": self.session_id}
        ) as response:
            response.raise_for_status()
        self.sio = socketio.AsyncClient(
            reconnection=False,
            http_session=self.http,
            websocket_extra_options={"compress": 15},
        )
        self.sio.on("connect", self.on_connect)
        self.sio.on("stream_start", self.on_stream_start)
        self.sio.on("stream_token", self.on_stream_token)
        self.sio.on("new_message", self.on_message)
        self.sio.on("update_message", self.on_message)
        self.sio.on("disconnect", self.on_disconnect)
        await self.sio.connect(
            self.url,
            socketio_path="/ws/socket.io",
            auth={
                "clientType": "webapp",
                "sessionId": self.session_id,
                "threadId": "",
                "userEnv": "{}",
                "chatProfile": "",
            },
            wait_timeout=60,
        )

    async def on_connect(self) -> None:
        assert self.sio is not None
        await self.sio.emit("connection_successful")
        await self.sio.emit("fetch_favorites")

    async def ask(self, question: str) -> None:
        assert self.sio is not None
        # The message composer's step: undefined fields (command, modes) are dropped by JSON.
        step = {
            "threadId": "",
            "id": str(uuid.uuid4()),
            "name": "User",
            "type": "user_message",
            "output": question,
            "createdAt": datetime.now(UTC).isoformat(timespec="milliseconds")[:-6] + "Z",
            "metadata": {"location": self.url + "/"},
        }
        await self.sio.emit("client_message", {"message": step, "fileReferences": []})

    def record(self, text: str) -> None:
        seen_at = now_us()
        for match in TOKEN.finditer(text):
            index = int(match[1])
            if index in self.seen:
                self.duplicated += 1
            else:
                self.seen[index] = seen_at - int(match[2])

    async def on_stream_start(self, step: dict[str, Any]) -> None:
        self.answer_id = step["id"]
        self.record(step.get("output") or "")

    async def on_stream_token(self, payload: dict[str, Any]) -> None:
        if payload.get("id") == self.answer_id and not payload.get("isInput"):
            self.record(payload.get("token") or "")

    async def on_message(self, step: dict[str, Any]) -> None:
        if step.get("isError"):
            self.failed = f"error message: {step.get('output')!r}"
            self.done.set()
        elif step.get("id") == self.answer_id and not step.get("streaming"):
            self.done.set()

    async def on_disconnect(self, *_: object) -> None:
        if not self.done.is_set():
            self.failed = "disconnected"
            self.done.set()

    async def close(self) -> None:
        if self.sio is not None and self.sio.connected:
            await self.sio.disconnect()
        if self.http is not None:
            await self.http.close()


async def run(
    url: str,
    streams: int,
    tokens: int,
    answer_window_s: float,
    connecting: int,
    question: str,
    wait: bool,
) -> dict[str, Any]:
    sessions = [Session(url.rstrip("/")) for _ in range(streams)]
    gate = asyncio.Semaphore(connecting)

    async def connect(session: Session) -> None:
        async with gate:
            try:
                await session.connect()
            except Exception as error:  # any failure to connect is that session's failed answer
                session.failed = f"connect: {error!r}"

    try:
        await asyncio.gather(*(connect(session) for session in sessions))
        ready = [session for session in sessions if session.failed is None]
        # Park the setup's objects outside the collector: a full collection over hundreds of
        # sessions stalls this loop for tens of milliseconds, which would be counted as latency.
        gc.collect()
        gc.freeze()
        if wait:
            # The benchmark measures the server from here: the streams, not the connecting.
            print("connected", flush=True)
            await asyncio.to_thread(sys.stdin.readline)
        started = time.perf_counter()
        await asyncio.gather(*(session.ask(question) for session in ready))
        finished = asyncio.gather(*(session.done.wait() for session in ready))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(finished, answer_window_s)
        wall_s = time.perf_counter() - started
    finally:
        await asyncio.gather(*(session.close() for session in sessions), return_exceptions=True)

    completed = [s for s in sessions if s.failed is None and s.done.is_set()]
    latencies_ms = sorted(us / 1000 for session in sessions for us in session.seen.values())
    tokens_seen = sum(len(session.seen) for session in sessions)
    lost = sum(1 for s in sessions for index in range(tokens) if index not in s.seen)
    failures = sorted({s.failed for s in sessions if s.failed})
    return {
        "system": "chainlit",
        "streams": streams,
        "answers_completed": len(completed),
        "answers_failed": streams - len(completed),
        "tokens_expected": streams * tokens,
        "tokens_seen": tokens_seen,
        "tokens_lost": lost,
        "tokens_duplicated": sum(session.duplicated for session in sessions),
        "latencies_ms": latencies_ms,
        "p50_ms": percentile(latencies_ms, 0.50),
        "p95_ms": percentile(latencies_ms, 0.95),
        "p99_ms": percentile(latencies_ms, 0.99),
        "wall_s": round(wall_s, 3),
        "client_cpu_s": round(sum(os.times()[:2]), 2),
        "failures": failures[:5],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:9200")
    parser.add_argument("--streams", type=int, default=10)
    parser.add_argument("--tokens", type=int, default=100, help="tokens in each answer")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds for all answers")
    parser.add_argument("--connecting", type=int, default=20, help="sessions set up at once")
    parser.add_argument("--question", default="Say something.", help='"tokens=2" to warm up')
    parser.add_argument(
        "--wait", action="store_true", help='print "connected", then wait for a line on stdin'
    )
    parser.add_argument("--out", type=Path)
    options = parser.parse_args()
    result = asyncio.run(
        run(
            options.url,
            options.streams,
            options.tokens,
            options.timeout,
            options.connecting,
            options.question,
            options.wait,
        )
    )
    if options.out:
        options.out.write_text(json.dumps(result))

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}"

    print(
        f"chainlit streams={result['streams']} completed={result['answers_completed']}"
        f" failed={result['answers_failed']}"
        f" tokens={result['tokens_seen']}/{result['tokens_expected']}"
        f" lost={result['tokens_lost']} dup={result['tokens_duplicated']}"
        f" p50={ms(result['p50_ms'])}ms p95={ms(result['p95_ms'])}ms p99={ms(result['p99_ms'])}ms"
        f" wall={result['wall_s']}s client_cpu={result['client_cpu_s']}s"
        + (f" failures={result['failures']}" if result["failures"] else "")
    )


if __name__ == "__main__":
    main()
