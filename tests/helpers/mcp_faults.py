"""An MCP server written with the SDK (MCPServer) for the faults a real server can have: a long
call that reports progress and tells when it is cancelled, a flood of progress, a crash mid-call,
10 MB of output, an error result, garbage on stdout, an input schema that is no JSON Schema.

    python -m tests.helpers.mcp_faults            # stdio
    python -m tests.helpers.mcp_faults http PORT  # streamable HTTP

MARKERS (an environment variable) names a folder where `slow` writes "started" and then
"cancelled" or "finished", so a test sees what reached the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import sys
from pathlib import Path

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

server = MCPServer("faults")


def mark(name: str, text: str) -> None:
    folder = os.environ.get("MARKERS")
    if folder:
        with (Path(folder) / name).open("a") as file:
            file.write(text + "\n")


@server.tool()
async def slow(seconds: float, ctx: Context) -> str:
    """Work for `seconds`, reporting progress every 0.1 s."""
    mark("slow", "started")
    steps = max(1, int(seconds * 10))
    try:
        for step in range(1, steps + 1):
            await asyncio.sleep(0.1)
            await ctx.report_progress(step, steps, f"step {step} of {steps}")
    except anyio.get_cancelled_exc_class():
        mark("slow", "cancelled")
        raise
    mark("slow", "finished")
    return f"worked {seconds:g} s"


@server.tool()
async def quiet(seconds: float) -> str:
    """Work for `seconds` without a word of progress."""
    mark("quiet", "started")
    try:
        await asyncio.sleep(seconds)
    except anyio.get_cancelled_exc_class():
        mark("quiet", "cancelled")
        raise
    return "done quietly"


@server.tool()
async def flood(count: int, ctx: Context) -> str:
    """Report progress `count` times as fast as it can."""
    for done in range(1, count + 1):
        await ctx.report_progress(done, count)
    return f"flooded {count}"


@server.tool()
def crash() -> str:
    """Exit in the middle of the call."""
    sys.stderr.write("about to crash on purpose\n")
    sys.stderr.flush()
    os._exit(3)


@server.tool()
def huge(megabytes: int) -> str:
    """Return `megabytes` MB of text."""
    return "x" * (megabytes * 1024 * 1024)


@server.tool()
def fail(reason: str) -> str:
    """Fail with `reason` (the result has isError: true)."""
    raise ToolError(reason)


@server.tool()
def garbage() -> str:
    """Write a line that is not JSON-RPC on stdout, then answer."""
    os.write(wire(), b"this is not JSON-RPC\n")
    return "answered after the garbage"


def wire() -> int:
    """The pipe the protocol goes out on: the SDK moves it off fd 1 (which then goes to stderr),
    to the one other descriptor open for writing on a pipe (stderr is a file in the tests)."""
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2 and os.readlink(f"/proc/self/fd/{fd}").startswith("pipe:"):
            with contextlib.suppress(OSError):
                if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_WRONLY:
                    return fd
    raise RuntimeError("no pipe to write on")


@server.tool()
def broken_schema(value: str) -> str:
    """Its input schema is replaced by one that is no JSON Schema, below."""
    return value


@server.tool()
def whoami(ctx: Context) -> str:
    """Tell the test (MARKERS/whoami) which Authorization header the call came with (HTTP)."""
    request = ctx.request_context.request
    headers = getattr(request, "headers", None)
    mark("whoami", headers.get("authorization", "none") if headers is not None else "stdio")
    return "seen"


@server.tool()
def echo(text: str) -> str:
    """Say it back."""
    return text


server._tool_manager._tools["broken_schema"].parameters = {
    "type": "object",
    "properties": {"value": {"type": "no-such-type"}},
}


if __name__ == "__main__":
    if sys.argv[1:2] == ["http"]:
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        server.run()
