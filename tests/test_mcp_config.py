"""MCP_SERVERS_FILE: the shape users already write, each mistake named by file, server and key,
and a file that cannot be used stops `serve` (and `check`) before it starts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from conversations.mcp_servers.config import ConfigError, load, parse


def one(entry: dict[str, Any], name: str = "time") -> Any:
    [server] = parse(json.dumps({"mcpServers": {name: entry}}), source="mcp.json")
    return server


def refusal(text: str) -> str:
    with pytest.raises(ConfigError) as raised:
        parse(text, source="mcp.json")
    return str(raised.value)


def entry_refusal(entry: Any, name: str = "time") -> str:
    return refusal(json.dumps({"mcpServers": {name: entry}}))


def test_a_claude_desktop_file_is_read_as_it_is() -> None:
    servers = parse(
        json.dumps(
            {
                "mcpServers": {
                    "time": {"command": "uvx", "args": ["mcp-server-time"], "env": {"TZ": "UTC"}},
                    "docs": {"url": "https://docs.example/mcp", "headers": {"X-Team": "a"}},
                    "old": {"type": "sse", "url": "http://127.0.0.1:9/sse"},
                }
            }
        ),
        source="mcp.json",
    )
    time, docs, old = servers
    assert (time.transport, time.command, time.args, time.env) == (
        "stdio",
        "uvx",
        ("mcp-server-time",),
        {"TZ": "UTC"},
    )
    assert (docs.transport, docs.url, docs.headers) == (
        "http",
        "https://docs.example/mcp",
        {"X-Team": "a"},
    )
    assert old.transport == "sse"
    # A remote tool can do anything: every call asks first unless the file says otherwise.
    assert all(server.requires_approval for server in servers)
    assert [server.timeout for server in servers] == [60.0, 60.0, 60.0]
    assert time.offered_name("get_current_time") == "time__get_current_time"


def test_the_projects_own_keys() -> None:
    server = one(
        {
            "command": "x",
            "requires_approval": False,
            "tools": ["a", "b"],
            "timeout": 2.5,
            "enabled": False,
        }
    )
    assert (server.requires_approval, server.tools, server.timeout, server.enabled) == (
        False,
        ("a", "b"),
        2.5,
        False,
    )


def test_secrets_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCS_TOKEN", "s3cret")
    server = one(
        {"url": "https://docs.example/mcp", "headers": {"Authorization": "Bearer ${DOCS_TOKEN}"}}
    )
    assert server.headers == {"Authorization": "Bearer s3cret"}

    monkeypatch.delenv("DOCS_TOKEN")
    message = entry_refusal(
        {"url": "https://d.example/mcp", "headers": {"Authorization": "Bearer ${DOCS_TOKEN}"}}
    )
    assert message == (
        "mcp.json: server 'time': key 'headers': 'Authorization' names the unset environment "
        "variable DOCS_TOKEN"
    )


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"command": "x", "comand": "y"}, "mcp.json: server 'time': unknown key 'comand'"),
        (
            {"command": "x", "url": "http://a"},
            "mcp.json: server 'time': unknown key 'url' (a stdio server has no 'url')",
        ),
        (
            {"command": "x", "requires_approval": "no"},
            "mcp.json: server 'time': key 'requires_approval': expected true or false, got \"no\"",
        ),
        (
            {"command": "x", "timeout": 0},
            "mcp.json: server 'time': key 'timeout': expected a positive number of seconds, got 0",
        ),
        (
            {"command": "x", "args": "mcp-server-time"},
            "mcp.json: server 'time': key 'args': expected a list of strings",
        ),
        (
            {"command": "x", "tools": [1]},
            "mcp.json: server 'time': key 'tools': expected a list of strings",
        ),
        ({"command": ""}, "mcp.json: server 'time': key 'command': expected a non-empty string"),
        (
            {"url": "ftp://a"},
            "mcp.json: server 'time': key 'url': expected an http:// or https:// URL",
        ),
        (
            {"type": "websocket", "url": "http://a"},
            "mcp.json: server 'time': key 'type': 'websocket' is not one of 'stdio', 'http', "
            "'streamable-http', 'streamableHttp', 'sse'",
        ),
        ({}, "mcp.json: server 'time': needs a 'command' (stdio) or a 'url' (streamable HTTP)"),
        ("uvx", "mcp.json: server 'time': expected an object, got str"),
    ],
)
def test_each_mistake_is_named(entry: Any, message: str) -> None:
    assert entry_refusal(entry) == message


def test_names_and_the_files_shape() -> None:
    assert entry_refusal({"command": "x"}, name="my server") == (
        "mcp.json: server 'my server': a server's name is letters, digits, '_' and '-'"
    )
    assert entry_refusal({"command": "x"}, name="a__b") == (
        "mcp.json: server 'a__b': a server's name may not contain '__'"
    )
    assert refusal("{").startswith("mcp.json: not valid JSON: ")
    assert (
        refusal('{"servers": {}}')
        == 'mcp.json: expected an object with "mcpServers": {"<name>": {...}}'
    )
    assert refusal('{"mcpServers": {}, "inputs": []}') == (
        "mcp.json: unknown key 'inputs' (only \"mcpServers\" is read)"
    )


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"mcp.json: cannot be read: No such file"):
        load(tmp_path / "mcp.json")
