"""MCP_SERVERS_FILE: the MCP servers whose tools the model is offered, in the shape Claude
Desktop, VS Code and Cursor use.

    {"mcpServers": {
        "time": {"command": "uvx", "args": ["mcp-server-time"]},
        "docs": {"url": "https://example.com/mcp",
                 "headers": {"Authorization": "Bearer ${DOCS_TOKEN}"},
                 "requires_approval": false, "tools": ["search"], "timeout": 30}
    }}

A value in `env` or `headers` may name environment variables as ${NAME}, so secrets stay out of
the file. Plain Python: no Django (the settings hand the path in).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

SERVER_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
# In `user_headers`: a value each user enters on their settings page (stored encrypted).
USER_VARIABLE = re.compile(r"\$\{user:([A-Za-z_][A-Za-z0-9_]*)\}")
# What separates a server's name from its tool's in the name the model is offered.
SEPARATOR = "__"

Transport = Literal["stdio", "http", "sse"]
TRANSPORT_TYPES: dict[str, Transport] = {
    "stdio": "stdio",
    "http": "http",
    "streamable-http": "http",
    "streamableHttp": "http",
    "sse": "sse",
}

COMMON_KEYS = {"type", "requires_approval", "tools", "timeout", "enabled", "description"}
STDIO_KEYS = {"command", "args", "env", "cwd"}
HTTP_KEYS = {"url", "headers", "user_headers"}


class ConfigError(Exception):
    """The file cannot be used; the message names the file, the server and the key."""


@dataclass(frozen=True)
class ServerConfig:
    name: str
    transport: Transport
    command: str = ""
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    url: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    # Headers with each user's own values, ${user:NAME}: a user without them is not offered the
    # server's tools; with them, they get a session of their own.
    user_headers: dict[str, str] = field(default_factory=dict)
    # A remote tool can do anything: each call asks the user first unless this is false.
    requires_approval: bool = True
    # The server's tools that are offered (by the server's names for them); None: all.
    tools: tuple[str, ...] | None = None
    # Seconds a call may go without progress before it fails.
    timeout: float = 60.0
    enabled: bool = True
    description: str = ""

    def offered_name(self, tool: str) -> str:
        return f"{self.name}{SEPARATOR}{tool}"

    @property
    def credential_names(self) -> tuple[str, ...]:
        """The names of the values each user enters for this server (${user:NAME})."""
        found = {
            name for value in self.user_headers.values() for name in USER_VARIABLE.findall(value)
        }
        return tuple(sorted(found))

    def headers_for(self, credentials: dict[str, str]) -> dict[str, str] | None:
        """The headers of a user's session: the shared ones and theirs, or None if they lack a
        value it needs."""
        if any(name not in credentials for name in self.credential_names):
            return None
        mine = {
            header: USER_VARIABLE.sub(lambda match: credentials[match.group(1)], value)
            for header, value in self.user_headers.items()
        }
        return {**self.headers, **mine}


def load(path: str | Path) -> list[ServerConfig]:
    """The servers the file at `path` configures (disabled ones included); ConfigError for a file
    that does not parse or an entry with an unknown, missing or mistyped key."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"{path}: cannot be read: {error.strerror or error}") from None
    return parse(text, source=str(path))


def parse(text: str, *, source: str) -> list[ServerConfig]:
    try:
        data = json.loads(text)
    except ValueError as error:
        raise ConfigError(f"{source}: not valid JSON: {error}") from None
    if not isinstance(data, dict) or not isinstance(data.get("mcpServers"), dict):
        raise ConfigError(f'{source}: expected an object with "mcpServers": {{"<name>": {{...}}}}')
    unknown = sorted(set(data) - {"mcpServers"})
    if unknown:
        raise ConfigError(f'{source}: unknown key {unknown[0]!r} (only "mcpServers" is read)')
    return [server(name, entry, source) for name, entry in data["mcpServers"].items()]


def server(name: str, entry: Any, source: str) -> ServerConfig:
    where = f"{source}: server {name!r}"
    if not SERVER_NAME.match(name):
        raise ConfigError(f"{where}: a server's name is letters, digits, '_' and '-'")
    if SEPARATOR in name:
        raise ConfigError(f"{where}: a server's name may not contain {SEPARATOR!r}")
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: expected an object, got {type(entry).__name__}")
    transport = transport_of(entry, where)
    allowed = COMMON_KEYS | (STDIO_KEYS if transport == "stdio" else HTTP_KEYS)
    for key in entry:
        if key not in allowed:
            other = HTTP_KEYS if transport == "stdio" else STDIO_KEYS
            hint = f" (a {transport} server has no {key!r})" if key in other else ""
            raise ConfigError(f"{where}: unknown key {key!r}{hint}")
    read = Reader(entry, where)
    options: dict[str, Any] = {
        "requires_approval": read.boolean("requires_approval", True),
        "enabled": read.boolean("enabled", True),
        "timeout": read.seconds("timeout", 60.0),
        "tools": read.names("tools"),
        "description": read.text("description", ""),
    }
    if transport == "stdio":
        return ServerConfig(
            name,
            transport,
            command=read.text("command", None),
            args=tuple(read.strings("args")),
            env=read.mapping("env"),
            cwd=read.text("cwd", "") or None,
            **options,
        )
    url = read.text("url", None)
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"{where}: key 'url': expected an http:// or https:// URL")
    user_headers = read.mapping("user_headers")
    if user_headers and not any(USER_VARIABLE.search(value) for value in user_headers.values()):
        raise ConfigError(
            f"{where}: key 'user_headers': no value names a user's own, as ${{user:NAME}} "
            "(shared values go in 'headers')"
        )
    return ServerConfig(
        name,
        transport,
        url=url,
        headers=read.mapping("headers"),
        user_headers=user_headers,
        **options,
    )


def transport_of(entry: dict[str, Any], where: str) -> Transport:
    kind = entry.get("type")
    if kind is None:
        if "command" in entry:
            return "stdio"
        if "url" in entry:
            return "http"
        raise ConfigError(f"{where}: needs a 'command' (stdio) or a 'url' (streamable HTTP)")
    if kind not in TRANSPORT_TYPES:
        raise ConfigError(
            f"{where}: key 'type': {kind!r} is not one of {', '.join(map(repr, TRANSPORT_TYPES))}"
        )
    return TRANSPORT_TYPES[kind]


class Reader:
    """Reads an entry's keys, each checked for its type; ConfigError names the key."""

    def __init__(self, entry: dict[str, Any], where: str) -> None:
        self.entry = entry
        self.where = where

    def fail(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.where}: key {key!r}: {problem}")

    def text(self, key: str, default: str | None) -> str:
        value = self.entry.get(key, default)
        if value is None:
            raise ConfigError(f"{self.where}: missing key {key!r}")
        if not isinstance(value, str) or (default is None and not value.strip()):
            raise self.fail(key, "expected a non-empty string")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self.entry.get(key, default)
        if not isinstance(value, bool):
            raise self.fail(key, f"expected true or false, got {json.dumps(value)}")
        return value

    def seconds(self, key: str, default: float) -> float:
        value = self.entry.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise self.fail(key, f"expected a positive number of seconds, got {json.dumps(value)}")
        return float(value)

    def strings(self, key: str) -> list[str]:
        value = self.entry.get(key, [])
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise self.fail(key, "expected a list of strings")
        return value

    def names(self, key: str) -> tuple[str, ...] | None:
        if key not in self.entry:
            return None
        return tuple(self.strings(key))

    def mapping(self, key: str) -> dict[str, str]:
        value = self.entry.get(key, {})
        if not isinstance(value, dict) or not all(isinstance(item, str) for item in value.values()):
            raise self.fail(key, "expected an object of strings")
        return {name: self.expanded(key, name, item) for name, item in value.items()}

    def expanded(self, key: str, name: str, value: str) -> str:
        def variable(match: re.Match[str]) -> str:
            found = os.environ.get(match.group(1))
            if found is None:
                raise self.fail(
                    key,
                    f"{name!r} names the unset environment variable {match.group(1)}",
                )
            return found

        return VARIABLE.sub(variable, value)
