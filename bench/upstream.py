"""An independent model server for the benchmark: stamped tokens at a steady rate.

    python bench/upstream.py --port 9100 --tokens 100 --rate 20

It speaks just enough of OpenAI's Chat Completions over HTTP/1.1 (keep-alive, chunked SSE) for
the openai SDK and any OpenAI-compatible client. Every answer streams `--tokens` content deltas
(or N, when the last message says "tokens=N", to warm a server up), `--rate` per second, each one
written as " w<index>s<unix time in microseconds>" at the moment it is sent, so a client that sees
the token can tell how long it took to reach it. Stdlib only, so any virtual environment can
run it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import time
from typing import Any

TOKEN_PATTERN = r"w(\d+)s(\d+)"


def token(index: int) -> str:
    return f" w{index}s{time.time_ns() // 1000}"


def sse(payload: dict[str, object] | str) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    body = f"data: {data}\n\n".encode()
    return b"%X\r\n%s\r\n" % (len(body), body)


def chunk(
    completion_id: str, delta: dict[str, object], finish: str | None = None
) -> dict[str, object]:
    return {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": "bench-model",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


class Upstream:
    def __init__(self, tokens: int, rate: float) -> None:
        self.tokens = tokens
        self.rate = rate
        self.answers = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                request_line, *header_lines = head.decode("latin-1").split("\r\n")
                method, path, _ = request_line.split(" ", 2)
                headers = {
                    name.strip().lower(): value.strip()
                    for name, _, value in (line.partition(":") for line in header_lines if line)
                }
                length = int(headers.get("content-length") or 0)
                body = await reader.readexactly(length) if length else b""
                if method == "GET" and path.rstrip("/").endswith("/models"):
                    models = [{"id": "bench-model", "object": "model"}]
                    await self.send_json(writer, {"object": "list", "data": models})
                elif method == "POST" and path.endswith("/chat/completions"):
                    await self.stream(writer, json.loads(body or b"{}"))
                else:
                    await self.send_json(writer, {"error": {"message": "not found"}}, status=404)
                if headers.get("connection", "").lower() == "close":
                    break
        writer.close()

    async def send_json(
        self, writer: asyncio.StreamWriter, body: dict[str, object], status: int = 200
    ) -> None:
        data = json.dumps(body).encode()
        writer.write(
            b"HTTP/1.1 %d OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            % (status, len(data), data)
        )
        await writer.drain()

    async def stream(self, writer: asyncio.StreamWriter, request: dict[str, Any]) -> None:
        self.answers += 1
        completion_id = f"chatcmpl-bench{self.answers}"
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        writer.write(sse(chunk(completion_id, {"role": "assistant", "content": ""})))
        await writer.drain()
        tokens = self.tokens
        messages = request.get("messages")
        if isinstance(messages, list) and messages:
            asked = re.search(r"tokens=(\d+)", str(messages[-1].get("content")))
            tokens = int(asked.group(1)) if asked else tokens
        started = time.monotonic()
        for index in range(tokens):
            delay = started + index / self.rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            writer.write(sse(chunk(completion_id, {"content": token(index)})))
            await writer.drain()
        writer.write(sse(chunk(completion_id, {}, "stop")))
        options = request.get("stream_options")
        if isinstance(options, dict) and options.get("include_usage"):
            usage = {"prompt_tokens": 10, "completion_tokens": tokens}
            usage["total_tokens"] = 10 + tokens
            writer.write(sse({**chunk(completion_id, {}), "choices": [], "usage": usage}))
        writer.write(sse("[DONE]"))
        writer.write(b"0\r\n\r\n")
        await writer.drain()


async def serve(port: int, tokens: int, rate: float) -> None:
    upstream = Upstream(tokens, rate)
    server = await asyncio.start_server(upstream.handle, "127.0.0.1", port, backlog=4096)
    print(f"upstream listening on 127.0.0.1:{port}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--tokens", type=int, default=100)
    parser.add_argument("--rate", type=float, default=20.0)
    options = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(options.port, options.tokens, options.rate))


if __name__ == "__main__":
    main()
