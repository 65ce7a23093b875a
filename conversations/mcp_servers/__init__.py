"""The MCP servers of MCP_SERVERS_FILE, in this process: started with the first answer (or when
`serve` is ready), shared by all answers, stopped with `serve`.

`await offered_tools()` is what an answer offers of them: the tools of every server that is up,
after waiting (MCP_START_WAIT seconds at most) for servers still on their first try.
"""

from __future__ import annotations

import asyncio
import functools
import logging

from django.conf import settings
from django.core import checks

from ..streaming.tools import Tool
from .config import ConfigError, ServerConfig, load
from .sessions import McpServer, ServerState

__all__ = [
    "ConfigError",
    "McpServer",
    "ServerConfig",
    "ServerState",
    "check_mcp_servers",
    "configured",
    "offered_tools",
    "running",
    "stop",
]

logger = logging.getLogger("conversations.mcp")


@functools.lru_cache(maxsize=4)
def _configured(path: str) -> tuple[ServerConfig, ...]:
    return tuple(load(path)) if path else ()


def configured() -> tuple[ServerConfig, ...]:
    """The servers MCP_SERVERS_FILE names (ConfigError if it cannot be used)."""
    return _configured(settings.MCP_SERVERS_FILE)


def check_mcp_servers(**kwargs: object) -> list[checks.CheckMessage]:
    """`manage.py serve` (and `check`) refuse to start with a file that cannot be used."""
    try:
        configured()
    except ConfigError as error:
        return [checks.Error(str(error), id="conversations.E002")]
    return []


class Servers:
    """The servers' sessions on one event loop."""

    def __init__(self, configs: tuple[ServerConfig, ...]) -> None:
        self.loop = asyncio.get_running_loop()
        self.servers = {
            config.name: McpServer(config, image_limit=settings.CHAT_TOOL_IMAGE_LIMIT)
            for config in configs
            if config.enabled
        }
        for server in self.servers.values():
            server.start()

    async def offered(self, wait: float) -> list[Tool]:
        starting = [
            server.tried.wait() for server in self.servers.values() if not server.tried.is_set()
        ]
        if starting:
            await asyncio.wait([asyncio.ensure_future(ready) for ready in starting], timeout=wait)
        tools: list[Tool] = []
        owner: dict[str, str] = {}
        for server in self.servers.values():
            if server.state != ServerState.UP:
                continue
            for tool in server.tools:
                if tool.name in owner:
                    logger.warning(
                        "MCP servers %s and %s both offer a tool named %r; %s's is left out.",
                        owner[tool.name],
                        server.name,
                        tool.name,
                        server.name,
                    )
                    continue
                owner[tool.name] = server.name
                tools.append(tool)
        return tools

    async def stop(self) -> None:
        await asyncio.gather(*(server.stop() for server in self.servers.values()))


_servers: Servers | None = None


def running() -> Servers | None:
    """This process's servers, if they were started on the running event loop."""
    if _servers is None or _servers.loop is not asyncio.get_running_loop():
        return None
    return _servers


def start() -> Servers:
    """Start the configured servers on the running loop, once (a new loop starts them anew)."""
    global _servers
    servers = running()
    if servers is None:
        servers = _servers = Servers(configured())
    return servers


async def offered_tools() -> list[Tool]:
    """The tools of the servers that are up, as the model is offered them."""
    if not settings.MCP_SERVERS_FILE:
        return []
    return await start().offered(settings.MCP_START_WAIT)


def overview() -> list[dict[str, object]]:
    """Every configured server as this process has it, for the admin: its transport and where,
    state, tools offered (and listed), last error and restarts. Read from any thread."""
    try:
        configs = configured()
    except ConfigError as error:
        return [{"name": "?", "state": "not started", "last_error": str(error)}]
    started = _servers.servers if _servers is not None else {}
    rows: list[dict[str, object]] = []
    for config in configs:
        server = started.get(config.name)
        state = "disabled" if not config.enabled else "not started in this process yet"
        rows.append(
            {
                "name": config.name,
                "transport": config.transport,
                "where": config.url or " ".join([config.command, *config.args]),
                "requires_approval": config.requires_approval,
                "timeout": config.timeout,
                "state": server.state.value if server else state,
                "tools": [tool.name for tool in server.tools] if server else [],
                "listed": len(server.listed) if server else 0,
                "last_error": server.last_error if server else "",
                "restarts": server.restarts if server else 0,
                "last_restart_at": server.last_restart_at if server else None,
                "up_since": server.up_since if server else None,
            }
        )
    return rows


async def stop() -> None:
    """Stop this process's servers (serve, once drained; tests)."""
    global _servers
    servers = running()
    if servers is not None:
        _servers = None
        await servers.stop()
