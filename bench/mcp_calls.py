"""What an MCP call costs over a warm session: from the call being ready to its result, through
the tool loop's own path (validation, the running and finished events on an answer's draft),
for a trivial tool (echo) over stdio and over streamable HTTP, against the same tool as a
Python function of this process.

    .venv/bin/python bench/mcp_calls.py [--calls 500]

Prints p50 and p99 in milliseconds; `make bench` runs it after the streaming benchmark.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import socket
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
os.environ.setdefault("SECRET_KEY", "bench")

from conversations.live.draft import AnswerDraft  # noqa: E402
from conversations.mcp_servers.config import parse  # noqa: E402
from conversations.mcp_servers.sessions import McpServer  # noqa: E402
from conversations.streaming.events import ToolCallReady  # noqa: E402
from conversations.streaming.loop import Approval, run_one_call  # noqa: E402
from conversations.streaming.tools import Tool, Toolbox  # noqa: E402


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def timed_calls(toolbox: Toolbox, name: str, calls: int) -> list[float]:
    """Milliseconds from ready to result for each of `calls` calls, after 20 to warm up."""
    draft = AnswerDraft(message_id=1, created_at=datetime.now(UTC))
    approval = Approval(None, 1.0)
    took: list[float] = []
    for number in range(calls + 20):
        index = number % 1000
        call_id = f"call_{number}"
        arguments = json.dumps({"text": f"ping {number}"})
        await draft.tool_started(1, index, call_id, name)
        await draft.tool_ready(1, index, call_id, name, arguments)
        started = time.perf_counter()
        result = await run_one_call(
            toolbox, draft, 1, ToolCallReady(index, call_id, name, arguments), approval
        )
        if number >= 20:
            took.append((time.perf_counter() - started) * 1000)
        assert result.ok, result.output
    return took


def summary(label: str, took: list[float]) -> str:
    ordered = sorted(took)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return f"{label:<28} p50 {statistics.median(ordered):6.2f} ms   p99 {p99:6.2f} ms"


async def main(calls: int) -> None:
    def echo(text: str) -> str:
        """Say it back."""
        return text

    async def aecho(text: str) -> str:
        """Say it back."""
        return text

    local = Toolbox(
        [Tool.from_function(echo, name="echo"), Tool.from_function(aecho, name="aecho")]
    )
    print(summary("Python tool (thread)", await timed_calls(local, "echo", calls)))
    print(summary("Python tool (async)", await timed_calls(local, "aecho", calls)))

    port = free_port()
    http = subprocess.Popen(  # noqa: ASYNC220 (started once, before anything is timed)
        [sys.executable, "-m", "tests.helpers.mcp_faults", "http", str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the HTTP server did not start"
                await asyncio.sleep(0.1)
        configs = parse(
            json.dumps(
                {
                    "mcpServers": {
                        "stdio": {
                            "command": sys.executable,
                            "args": ["-m", "tests.helpers.mcp_faults"],
                            "cwd": str(ROOT),
                            "requires_approval": False,
                        },
                        "http": {"url": f"http://127.0.0.1:{port}/mcp", "requires_approval": False},
                    }
                }
            ),
            source="bench",
        )
        for config in configs:
            server = McpServer(config)
            server.start()
            await server.tried.wait()
            assert server.state == "up", server.last_error
            toolbox = Toolbox(server.tools)
            took = await timed_calls(toolbox, f"{config.name}__echo", calls)
            print(summary(f"MCP over {config.transport}", took))
            await server.stop()
    finally:
        http.terminate()
        http.wait(timeout=10)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=500)
    arguments = parser.parse_args()
    import django

    django.setup()
    logging.getLogger("httpx2").setLevel(logging.WARNING)
    asyncio.run(main(arguments.calls))
