"""Per-user credentials for MCP servers over HTTP (user_headers): each user enters their value on
their settings page; it is stored encrypted, reaches the server only in that user's session, and
never shows in a page, a log line, a row or an export. A user without a value is not offered the
server's tools."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client

from conversations import mcp_servers, runner
from conversations.models import UserCredential
from conversations.services import credentials_of
from tests.helpers.chat import (
    Connect,
    finished,
    new_conversation,
    opened,
    receive_until,
)
from tests.helpers.fake_openai import FakeOpenAI, sse, text_stream, tool_calls_stream
from tests.helpers.mcp import faults_http, marked, servers_file

pytestmark = pytest.mark.django_db(transaction=True)

ALICE_SECRET = "alice-s3cret-7f1c"
BOB_SECRET = "bob-s3cret-99d2"


@pytest.fixture
def markers(tmp_path: Path) -> Path:
    folder = tmp_path / "markers"
    folder.mkdir()
    return folder


@pytest.fixture
def remote(markers: Path) -> Iterator[str]:
    with faults_http(markers) as url:
        yield url


@pytest.fixture
async def configured(settings: Any, tmp_path: Path, remote: str) -> AsyncIterator[Path]:
    path = servers_file(
        tmp_path,
        {
            "remote": {
                "url": remote,
                "headers": {"X-Site": "djchat"},
                "user_headers": {"Authorization": "Bearer ${user:TOKEN}"},
                "requires_approval": False,
                "description": "The team's tools",
            }
        },
    )
    settings.MCP_SERVERS_FILE = str(path)
    yield path
    await mcp_servers.stop()


async def ask_whoami(
    connect: Connect, user: User, model_server: FakeOpenAI
) -> tuple[set[str], list[str]]:
    """One answer for `user` that calls remote__whoami if it is offered; the tools offered, and
    the page's frames."""
    offered_before = len(model_server.requests)
    model_server.queue(sse(tool_calls_stream([("remote__whoami", "{}")])))
    model_server.queue(sse(text_stream("Done.")))
    conversation = await new_conversation(user)
    page = await opened(connect, conversation, user)
    await page.send_json_to({"message": "Who am I?"})
    frames = await receive_until(page, finished, timeout=20)
    await runner.wait_for_local_runs()
    tools = {tool["function"]["name"] for tool in model_server.requests[offered_before]["tools"]}
    return tools, frames


def post(client: Client, user: User, **data: str) -> Any:
    client.force_login(user)
    return client.post("/settings/credentials/", data, follow=True)


async def test_each_users_value_reaches_the_server_in_their_session_only(
    configured: Path,
    connect: Connect,
    user: User,
    other_user: User,
    model_server: FakeOpenAI,
    markers: Path,
    client: Client,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    caplog.set_level(logging.DEBUG)
    # Without a value, the server's tools are not offered (the call fails as unknown).
    tools, _ = await ask_whoami(connect, user, model_server)
    assert "remote__whoami" not in tools and "calculator" in tools
    assert marked(markers, "whoami") == []

    page = await sync_to_async(post)(
        client, user, server="remote", name="TOKEN", value=ALICE_SECRET
    )
    assert "Saved TOKEN for remote. It is not shown again." in page.content.decode()
    tools, frames = await ask_whoami(connect, user, model_server)
    assert "remote__whoami" in tools
    assert marked(markers, "whoami") == [f"Bearer {ALICE_SECRET}"]

    await sync_to_async(post)(client, other_user, server="remote", name="TOKEN", value=BOB_SECRET)
    tools, more = await ask_whoami(connect, other_user, model_server)
    assert marked(markers, "whoami") == [f"Bearer {ALICE_SECRET}", f"Bearer {BOB_SECRET}"]
    # Alice's session is hers: her next call still carries her value.
    await ask_whoami(connect, user, model_server)
    assert marked(markers, "whoami")[-1] == f"Bearer {ALICE_SECRET}"

    # The values are nowhere but encrypted in their rows.
    stored = await sync_to_async(lambda: list(UserCredential.objects.all()))()
    assert len(stored) == 2
    assert all(ALICE_SECRET.encode() not in bytes(row.encrypted) for row in stored)
    assert await sync_to_async(credentials_of)(user_id=user.pk) == {
        "remote": {"TOKEN": ALICE_SECRET}
    }
    dump = tmp_path / "dump.json"
    await sync_to_async(call_command)("dumpdata", "conversations", output=str(dump))
    everywhere = [
        dump.read_text(),
        "\n".join(record.getMessage() for record in caplog.records),
        "".join(frames + more),
    ]
    await sync_to_async(client.force_login)(user)
    for conversation in await sync_to_async(lambda: list(user.conversations.all()))():
        for kind in ("md", "json"):
            response = await sync_to_async(client.get)(
                f"/conversations/{conversation.pk}/export.{kind}"
            )
            everywhere.append(response.content.decode())
    everywhere.append((await sync_to_async(client.get)("/settings/credentials/")).content.decode())
    for text in everywhere:
        assert ALICE_SECRET not in text and BOB_SECRET not in text


async def test_the_settings_page_shows_what_is_set_never_the_value(
    configured: Path, user: User, client: Client
) -> None:
    await sync_to_async(client.force_login)(user)
    html = (await sync_to_async(client.get)("/settings/credentials/")).content.decode()
    assert "Tool credentials" in html and "The team&#x27;s tools" in html
    assert "not set" in html and 'type="password"' in html
    await sync_to_async(post)(client, user, server="remote", name="TOKEN", value=ALICE_SECRET)
    html = (await sync_to_async(client.get)("/settings/credentials/")).content.decode()
    assert ALICE_SECRET not in html and "set <time" in html

    bad = await sync_to_async(post)(client, user, server="remote", name="TOKEN", value="a\nb")
    assert "TOKEN for remote: A value is one line, as a header sends it." in bad.content.decode()
    nowhere = await sync_to_async(post)(client, user, server="other", name="TOKEN", value="x")
    assert "No MCP server asks for that value." in nowhere.content.decode()
    assert await sync_to_async(credentials_of)(user_id=user.pk) == {
        "remote": {"TOKEN": ALICE_SECRET}
    }

    await sync_to_async(post)(client, user, server="remote", name="TOKEN", action="remove")
    assert await sync_to_async(credentials_of)(user_id=user.pk) == {}


def test_user_headers_must_name_a_users_value_and_are_for_http_only() -> None:
    from conversations.mcp_servers.config import ConfigError, parse

    def refusal(entry: dict[str, Any]) -> str:
        with pytest.raises(ConfigError) as raised:
            parse(json.dumps({"mcpServers": {"remote": entry}}), source="mcp.json")
        return str(raised.value)

    assert refusal({"url": "https://a/mcp", "user_headers": {"X-Team": "a"}}) == (
        "mcp.json: server 'remote': key 'user_headers': no value names a user's own, as "
        "${user:NAME} (shared values go in 'headers')"
    )
    assert refusal({"command": "x", "user_headers": {"A": "${user:B}"}}) == (
        "mcp.json: server 'remote': unknown key 'user_headers' (a stdio server has no "
        "'user_headers')"
    )
    [server] = parse(
        json.dumps(
            {
                "mcpServers": {
                    "remote": {
                        "url": "https://a/mcp",
                        "user_headers": {"A": "t ${user:B} ${user:C}"},
                    }
                }
            }
        ),
        source="mcp.json",
    )
    assert server.credential_names == ("B", "C")
    assert server.headers_for({"B": "1"}) is None
    assert server.headers_for({"B": "1", "C": "2"}) == {"A": "t 1 2"}
