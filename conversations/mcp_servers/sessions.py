"""One session per MCP server in each serving process, shared by every answer, kept alive.

`McpServer` supervises one server: it connects (a stdio server is started as a child that ends
with this process), lists its tools and offers them as `Tool`s named `<server>__<tool>`, lists
them again when the server says they changed, and when the connection ends (the process
exited, the HTTP session dropped) logs why and connects again after a backoff. While it is down
its tools are not offered; every other tool keeps working.

Plain Python over the official SDK: no Django.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import re
import sys
import tempfile
from collections.abc import AsyncIterator, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, TextIO

import anyio
import httpx2
import mcp_types
from jsonschema.exceptions import SchemaError
from mcp import Client, StdioServerParameters
from mcp.client.sse import sse_client
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError
from mcp_types.jsonrpc import CONNECTION_CLOSED

from ..streaming.tools import Tool, ToolResult, progress_reporter
from .config import ServerConfig
from .results import tool_result

logger = logging.getLogger("conversations.mcp")

TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# Seconds to start (or reach) a server and list its tools before the try counts as failed.
START_TIMEOUT = 30.0
# Waits before each new try after a failure; the last repeats. Reset once a session lasted.
BACKOFF = (1.0, 2.0, 5.0, 10.0, 30.0)
STABLE_AFTER = 60.0
STDERR_TAIL = 2000
WITH_PARENT = Path(__file__).resolve().parent.parent / "with_parent.py"
EXIT_CODE = re.compile(r"\[exit code (-?\d+)\]\s*$")


class ServerState(StrEnum):
    STARTING = "starting"
    UP = "up"
    DOWN = "down"
    STOPPED = "stopped"


class Gone(Exception):
    """The session ended: the server exited or the connection dropped."""


def now() -> datetime:
    return datetime.now(UTC)


class McpServer:
    """One configured server: its session, its state and the tools it offers."""

    def __init__(
        self,
        config: ServerConfig,
        *,
        image_limit: int = 1024 * 1024,
        headers: dict[str, str] | None = None,
        user_id: int | None = None,
    ) -> None:
        self.config = config
        self.image_limit = image_limit
        self.name = config.name
        # A user's own session (user_headers): its headers, theirs included, are never logged.
        self.headers = config.headers if headers is None else headers
        self.user_id = user_id
        self.label = config.name if user_id is None else f"{config.name} (user {user_id})"
        self.last_used = 0.0
        self.calls_running = 0
        self.state = ServerState.STARTING
        self.last_error = ""
        self.restarts = 0
        self.last_restart_at: datetime | None = None
        self.up_since: datetime | None = None
        # The server's tools as it lists them, and those offered (allowed, well named).
        self.listed: tuple[mcp_types.Tool, ...] = ()
        self.tools: tuple[Tool, ...] = ()
        self.client: Client | None = None
        # Set once the first try has ended either way: the first answer waits for it.
        self.tried = asyncio.Event()
        self._wake = asyncio.Event()
        self._relist = False
        self._gone = ""
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._supervise(), name=f"mcp-{self.label}")

    async def stop(self, within: float = 5.0) -> None:
        """End the session (a stdio server is told to exit, then terminated)."""
        self._stopping = True
        self._wake.set()
        task = self._task
        if task is not None and not task.done():
            try:
                async with asyncio.timeout(within):
                    await asyncio.shield(task)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        self.state = ServerState.STOPPED
        self.tools = ()
        self.tried.set()

    # The session.

    async def _supervise(self) -> None:
        failures = 0
        while not self._stopping:
            # The server's stderr, whose tail the log shows when it exits (closed below).
            errlog = tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace")  # noqa: SIM115
            started = asyncio.get_running_loop().time()
            try:
                await self._session(errlog)
                problem = ""
            except asyncio.CancelledError:
                raise
            except BaseException as error:  # an ExceptionGroup from the SDK's task groups too
                problem = describe(error)
            finally:
                self.client = None
                self.tools = ()
                self.up_since = None
            tail = stderr_tail(errlog)
            errlog.close()
            if self._stopping:
                break
            if asyncio.get_running_loop().time() - started >= STABLE_AFTER:
                failures = 0
            delay = BACKOFF[min(failures, len(BACKOFF) - 1)]
            failures += 1
            code = EXIT_CODE.search(tail)
            if code and problem != timed_out():
                # The connection ended because the process did (not the other way round).
                problem = f"exited with code {code.group(1)}"
            self.state = ServerState.DOWN
            self.last_error = problem or "the session ended"
            logger.warning(
                "MCP server %s is down: %s; trying again in %g s.%s",
                self.label,
                self.last_error,
                delay,
                f" Its stderr ended with:\n{tail}" if tail.strip() else "",
            )
            self.tried.set()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            self.restarts += 1
            self.last_restart_at = now()

    async def _session(self, errlog: TextIO) -> None:
        self._gone = ""
        self._relist = False
        self._wake.clear()
        async with AsyncExitStack() as stack:
            async with asyncio.timeout(START_TIMEOUT):
                transport = await self._transport(stack, errlog)
                client = await stack.enter_async_context(
                    Client(
                        transport,
                        message_handler=self._message,
                        client_info=mcp_types.Implementation(name="djchat", version="1"),
                        cache=None,
                    )
                )
                await self._list(client)
            self.client = client
            self.state = ServerState.UP
            self.up_since = now()
            self.last_error = ""
            logger.info(
                "MCP server %s is up: %s.",
                self.label,
                ", ".join(tool.name for tool in self.tools) or "no tools offered",
            )
            self.tried.set()
            while True:
                await self._wake.wait()
                self._wake.clear()
                if self._stopping:
                    return
                if self._gone:
                    raise Gone(self._gone)
                if self._relist:
                    self._relist = False
                    async with asyncio.timeout(START_TIMEOUT):
                        await self._list(client)
                    logger.info(
                        "MCP server %s changed its tools: %s.",
                        self.label,
                        ", ".join(tool.name for tool in self.tools) or "none offered",
                    )

    async def _transport(self, stack: AsyncExitStack, errlog: TextIO) -> Any:
        config = self.config
        if config.transport == "stdio":
            # Through with_parent.py: the server ends with this process even if it is killed,
            # and its exit code reaches the stderr kept here.
            parameters = StdioServerParameters(
                command=sys.executable,
                args=[str(WITH_PARENT), str(os.getpid()), "--run", config.command, *config.args],
                env=config.env or None,
                cwd=config.cwd,
            )
            inner: Any = stdio_client(parameters, errlog=errlog)
        elif config.transport == "sse":
            inner = sse_client(config.url, headers=self.headers or None)
        else:
            http = create_mcp_http_client(headers=self.headers or None)
            await stack.enter_async_context(http)
            inner = streamable_http_client(config.url, http_client=http)
        return watched(inner, self._lost)

    async def _message(self, message: Any) -> None:
        if isinstance(message, Exception):
            logger.warning("MCP server %s sent something unreadable: %s", self.label, message)
        elif isinstance(message, mcp_types.ToolListChangedNotification):
            self._relist = True
            self._wake.set()

    def _lost(self, why: str) -> None:
        """The connection ended (or a call found it broken): the supervisor starts again."""
        if not self._gone:
            self._gone = why
        self._wake.set()

    async def _list(self, client: Client) -> None:
        listed: list[mcp_types.Tool] = []
        cursor: str | None = None
        for _ in range(100):
            page = await client.list_tools(cursor=cursor, cache_mode="bypass")
            listed.extend(page.tools)
            cursor = page.next_cursor
            if not cursor:
                break
        self.listed = tuple(listed)
        self.tools = tuple(self._offered(listed))

    def _offered(self, listed: Iterable[mcp_types.Tool]) -> Iterable[Tool]:
        config = self.config
        for tool in listed:
            if config.tools is not None and tool.name not in config.tools:
                continue
            name = config.offered_name(tool.name)
            if not TOOL_NAME.match(name):
                logger.warning(
                    "MCP server %s: its tool %r would be offered as %r, which is not a tool name "
                    "(1-64 letters, digits, '_' or '-'); it is left out.",
                    self.name,
                    tool.name,
                    name,
                )
                continue
            schema = dict(tool.input_schema or {})
            schema.setdefault("type", "object")
            try:
                yield Tool(
                    name=name,
                    description=tool.description or tool.title or "",
                    parameters=schema,
                    function=functools.partial(self.call, tool.name),
                    timeout=config.timeout,
                    needs_approval=config.requires_approval,
                    server=self.name,
                    idle_timeout=True,
                )
            except (ValueError, SchemaError) as error:
                logger.warning(
                    "MCP server %s: its tool %r has an input schema that is not valid JSON "
                    "Schema (%s); it is left out.",
                    self.name,
                    tool.name,
                    str(error).splitlines()[0],
                )

    # Calls.

    async def call(self, tool: str, **arguments: Any) -> ToolResult:
        """Call one of the server's tools; its progress goes to the running call's reporter.
        Cancelling the call (Stop, the timeout) sends the server notifications/cancelled."""
        client = self.client
        if client is None or self.state != ServerState.UP:
            return ToolResult.failure(
                f"the MCP server {self.name!r} is down"
                + (f" ({self.last_error})" if self.last_error else "")
            )
        reporter = progress_reporter()

        async def relay(progress: float, total: float | None, message: str | None) -> None:
            if reporter is not None:
                await reporter(progress, total, message or "")

        self.calls_running += 1
        try:
            result = await client.call_tool(tool, arguments, progress_callback=relay)
        except MCPError as error:
            if error.error.code == CONNECTION_CLOSED:
                self._lost("the connection closed during a call")
                return ToolResult.failure(
                    f"the MCP server {self.name!r} closed the connection during the call"
                )
            return ToolResult.failure(f"the MCP server {self.name!r} refused the call: {error}")
        except (httpx2.HTTPError, OSError, anyio.BrokenResourceError) as error:
            self._lost(describe(error))
            return ToolResult.failure(f"the MCP server {self.name!r} could not be reached: {error}")
        finally:
            self.calls_running -= 1
        if not isinstance(result, mcp_types.CallToolResult):
            return ToolResult.failure(
                f"the MCP server {self.name!r} answered with a {type(result).__name__}, "
                "not a tool result"
            )
        return tool_result(result, image_limit=self.image_limit)


class _WatchedStream:
    """A transport's read stream that tells when it ends (the server exited or dropped)."""

    def __init__(self, stream: Any, ended: Any) -> None:
        self._stream = stream
        self._ended = ended

    @property
    def last_context(self) -> Any:
        return getattr(self._stream, "last_context", None)

    async def receive(self) -> Any:
        try:
            return await self._stream.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            self._ended("the connection ended")
            raise

    async def aclose(self) -> None:
        await self._stream.aclose()

    def __aiter__(self) -> _WatchedStream:
        return self

    async def __anext__(self) -> Any:
        try:
            return await self.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise StopAsyncIteration from None

    async def __aenter__(self) -> _WatchedStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


@asynccontextmanager
async def watched(transport: Any, ended: Any) -> AsyncIterator[tuple[Any, Any]]:
    async with transport as (read_stream, write_stream):
        yield _WatchedStream(read_stream, ended), write_stream


def stderr_tail(errlog: TextIO) -> str:
    with contextlib.suppress(OSError, ValueError):
        errlog.flush()
        size = errlog.seek(0, os.SEEK_END)
        errlog.seek(max(0, size - STDERR_TAIL * 4))
        return errlog.read()[-STDERR_TAIL:]
    return ""


def timed_out() -> str:
    return f"did not start (or answer) within {START_TIMEOUT:g} s"


def describe(error: BaseException) -> str:
    """The first real error in `error` (the SDK raises ExceptionGroups from its task groups)."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    if isinstance(error, Gone):
        return str(error)
    if isinstance(error, TimeoutError):
        return timed_out()
    message = str(error)
    return f"{type(error).__name__}: {message}" if message else type(error).__name__
