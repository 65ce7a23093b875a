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
    "credential_fields",
    "needs_credentials",
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
    """The servers' sessions on one event loop: one per server, and for a server with
    `user_headers` one per user who entered their values."""

    def __init__(self, configs: tuple[ServerConfig, ...]) -> None:
        self.loop = asyncio.get_running_loop()
        enabled = [config for config in configs if config.enabled]
        self.per_user = [config for config in enabled if config.user_headers]
        self.servers = {
            config.name: McpServer(config, image_limit=settings.CHAT_TOOL_IMAGE_LIMIT)
            for config in enabled
            if not config.user_headers
        }
        self.user_servers: dict[tuple[str, int], McpServer] = {}
        for server in self.servers.values():
            server.start()

    def for_user(
        self, user_id: int | None, credentials: dict[str, dict[str, str]]
    ) -> list[McpServer]:
        """The user's own sessions (started if need be) with the servers that take their values;
        none with a server whose values they have not all entered."""
        found: list[McpServer] = []
        if user_id is None:
            return found
        for config in self.per_user:
            headers = config.headers_for(credentials.get(config.name, {}))
            if headers is None:
                continue
            key = (config.name, user_id)
            server = self.user_servers.get(key)
            if server is not None and server.headers != headers:
                # They changed a value: the old session goes, a new one has the new headers.
                self.loop.create_task(server.stop())
                server = None
            if server is None:
                server = McpServer(
                    config,
                    image_limit=settings.CHAT_TOOL_IMAGE_LIMIT,
                    headers=headers,
                    user_id=user_id,
                )
                server.start()
                self.user_servers[key] = server
            server.last_used = self.loop.time()
            found.append(server)
        return found

    def close_idle(self) -> None:
        """Close the users' sessions unused for MCP_USER_SESSION_IDLE seconds."""
        idle = self.loop.time() - settings.MCP_USER_SESSION_IDLE
        for key, server in list(self.user_servers.items()):
            if server.last_used < idle and not server.calls_running:
                del self.user_servers[key]
                self.loop.create_task(server.stop())

    async def offered(
        self,
        wait: float,
        *,
        user_id: int | None = None,
        credentials: dict[str, dict[str, str]] | None = None,
    ) -> list[Tool]:
        self.close_idle()
        servers = [*self.servers.values(), *self.for_user(user_id, credentials or {})]
        starting = [server.tried.wait() for server in servers if not server.tried.is_set()]
        if starting:
            await asyncio.wait([asyncio.ensure_future(ready) for ready in starting], timeout=wait)
        tools: list[Tool] = []
        owner: dict[str, str] = {}
        for server in servers:
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
        everyone = [*self.servers.values(), *self.user_servers.values()]
        self.user_servers.clear()
        await asyncio.gather(*(server.stop() for server in everyone))


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


def needs_credentials() -> bool:
    """Whether a server takes users' own values (user_headers)."""
    return any(config.user_headers for config in configured() if config.enabled)


def credential_fields() -> list[tuple[ServerConfig, str]]:
    """Each (server, name) a user may enter a value for, in the file's order."""
    return [
        (config, name)
        for config in configured()
        if config.enabled
        for name in config.credential_names
    ]


async def offered_tools(
    *, user_id: int | None = None, credentials: dict[str, dict[str, str]] | None = None
) -> list[Tool]:
    """The tools of the servers that are up, as the model is offered them; with a user's
    `credentials`, those of their own sessions too."""
    if not settings.MCP_SERVERS_FILE:
        return []
    return await start().offered(settings.MCP_START_WAIT, user_id=user_id, credentials=credentials)


def overview() -> list[dict[str, object]]:
    """Every configured server as this process has it, for the admin: its transport and where,
    state, tools offered (and listed), last error and restarts. Read from any thread."""
    try:
        configs = configured()
    except ConfigError as error:
        return [{"name": "?", "state": "not started", "last_error": str(error)}]
    started = _servers.servers if _servers is not None else {}
    sessions = list(_servers.user_servers) if _servers is not None else []
    rows: list[dict[str, object]] = []
    for config in configs:
        server = started.get(config.name)
        state = "disabled" if not config.enabled else "not started in this process yet"
        if config.enabled and config.user_headers:
            users = sum(1 for name, _ in sessions if name == config.name)
            state = f"one session per user ({users} open)"
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
