"""examples/chat_client.py against a live Daphne and the loopback model, as a user runs it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.fake_openai import FakeOpenAI, sse, text_stream, tool_calls_stream
from tests.helpers.mcp import faults_stdio, servers_file
from tests.helpers.servers import ROOT, daphne, free_port, migrate, site_env

CLIENT = ROOT / "examples" / "chat_client.py"


@pytest.fixture
def site_settings(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    """Settings the site gets besides the fixture's own: none, or with the parameter "mcp" the
    fault server of tests/helpers/mcp_faults.py as an MCP server whose calls run at once."""
    if getattr(request, "param", None) != "mcp":
        return {}
    markers = tmp_path / "markers"
    markers.mkdir()
    path = servers_file(tmp_path, {"faults": faults_stdio(markers, requires_approval=False)})
    return {"MCP_SERVERS_FILE": str(path)}


@pytest.fixture
def site(
    fake_openai: FakeOpenAI, tmp_path: Path, site_settings: dict[str, str]
) -> Iterator[tuple[str, str]]:
    """A live server on its own SQLite database with one user; its URL and an API token of hers."""
    env = site_env(
        fake_openai,
        tmp_path / "site.sqlite3",
        SECRET_KEY="example-client-test",
        # The in-memory channel layer: one process.
        REDIS_URL="",
        **site_settings,
    )
    migrate(env)
    manage(
        env,
        "shell",
        "-c",
        "from django.contrib.auth.models import User; "
        "User.objects.create_user('ada', password='a-long-password-1')",
    )
    token = manage(env, "api_token", "create", "ada").strip()
    with daphne(env, log=tmp_path / "server.log") as url:
        yield url, token


def manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout


async def run_client(*args: str, stdin: str = "", timeout: float = 60) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(CLIENT),
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(stdin.encode()), timeout)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def conversation(url: str, token: str, conversation_id: int) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{url}/api/conversations/{conversation_id}/",
        headers={"Authorization": f"Bearer {token}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        data: dict[str, Any] = json.load(response)
        return data


def conversation_id(stderr: str) -> int:
    line = next(line for line in stderr.splitlines() if line.startswith("[conversation "))
    return int(line.removeprefix("[conversation ").rstrip("]"))


async def test_the_client_streams_an_answer_with_a_tool_call_and_exits_0(
    site: tuple[str, str], fake_openai: FakeOpenAI
) -> None:
    url, token = site
    fake_openai.queue(sse(tool_calls_stream([("calculator", '{"expression": "17 * 23"}')])))
    fake_openai.queue(sse(text_stream("17 times 23 is 391.")))

    code, out, err = await run_client("--url", url, "--token", token, "What is 17 * 23?")

    assert code == 0, err
    assert out == "17 times 23 is 391.\n"
    assert '[calculator({"expression": "17 * 23"}) running…]' in err
    assert "[calculator done in " in err
    stored = conversation(url, token, conversation_id(err))
    assert [message["content"] for message in stored["messages"]] == [
        "What is 17 * 23?",
        "17 times 23 is 391.",
    ]


@pytest.mark.parametrize("site_settings", ["mcp"], indirect=True)
async def test_the_client_prints_a_tools_progress(
    site: tuple[str, str], fake_openai: FakeOpenAI
) -> None:
    url, token = site
    fake_openai.queue(sse(tool_calls_stream([("faults__slow", '{"seconds": 0.5}')])))
    fake_openai.queue(sse(text_stream("Worked.")))

    code, out, err = await run_client("--url", url, "--token", token, "Work a little")

    assert code == 0, err
    assert out == "Worked.\n"
    assert "[faults__slow: 1/5 step 1 of 5]" in err
    assert "[faults__slow done in " in err


async def test_the_client_asks_before_a_tool_that_needs_approval(
    site: tuple[str, str], fake_openai: FakeOpenAI
) -> None:
    url, token = site
    fake_openai.queue(sse(tool_calls_stream([("rename_conversation", '{"title": "Sums"}')])))
    fake_openai.queue(sse(text_stream("Renamed.")))

    code, out, err = await run_client(
        "--url", url, "--token", token, "Call this conversation Sums", stdin="y\n"
    )

    assert code == 0, err
    assert 'Allow rename_conversation({"title": "Sums"})? [y/N]' in err
    assert "[rename_conversation done in " in err
    assert out == "Renamed.\n"
    stored = conversation(url, token, conversation_id(err))
    assert stored["title"] == "Sums"
    call = stored["messages"][1]["tool_calls"][0]
    assert (call["decision"], call["decided_by"], call["status"]) == (
        "approved",
        "ada",
        "succeeded",
    )


async def test_a_denial_at_the_prompt_reaches_the_model(
    site: tuple[str, str], fake_openai: FakeOpenAI
) -> None:
    url, token = site
    fake_openai.queue(sse(tool_calls_stream([("rename_conversation", '{"title": "Sums"}')])))
    fake_openai.queue(sse(text_stream("Left it as it was.")))

    code, out, err = await run_client(
        "--url", url, "--token", token, "Call this conversation Sums", stdin="n\n"
    )

    assert code == 0, err
    assert "[rename_conversation denied (Denied at the terminal.)]" in err
    assert out == "Left it as it was.\n"
    denial = fake_openai.requests[-1]["messages"][-1]
    assert denial["role"] == "tool" and "Denied at the terminal." in denial["content"]
    stored = conversation(url, token, conversation_id(err))
    assert stored["title"] != "Sums"


@contextlib.asynccontextmanager
async def cutting_proxy(target: str, *, cut_after: int) -> AsyncIterator[str]:
    """A TCP proxy to `target` that drops the first WebSocket connection once `cut_after` bytes
    have gone to the client, as a flaky network does; its URL."""
    host, port = target.removeprefix("http://").split(":")
    cut: list[bool] = []

    async def pump(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, watch: bool
    ) -> None:
        sent = 0
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(4096):
                writer.write(data)
                await writer.drain()
                sent += len(data)
                if watch and not cut and sent > cut_after:
                    cut.append(True)
                    break
        writer.close()

    async def connection(client_reader: asyncio.StreamReader, client: asyncio.StreamWriter) -> None:
        upstream_reader, upstream = await asyncio.open_connection(host, int(port))
        first = await client_reader.read(4096)
        upstream.write(first)
        websocket = first.startswith(b"GET /ws/")
        await asyncio.gather(
            pump(client_reader, upstream, watch=False),
            pump(upstream_reader, client, watch=websocket),
        )
        client.close()
        upstream.close()

    listening = free_port()
    server = await asyncio.start_server(connection, "127.0.0.1", listening)
    async with server:
        yield f"http://127.0.0.1:{listening}"
    assert cut, "the proxy never cut a connection"


async def test_the_client_resumes_after_a_dropped_connection_without_losing_or_repeating(
    site: tuple[str, str], fake_openai: FakeOpenAI
) -> None:
    url, token = site
    words = " ".join(f"word{number}" for number in range(80))
    fake_openai.queue(sse(text_stream(words), delay=0.02))

    async with cutting_proxy(url, cut_after=1500) as flaky:
        code, out, err = await run_client("--url", flaky, "--token", token, "Count to 80")

    assert code == 0, err
    assert "[connection lost; reconnecting" in err
    assert out == words + "\n"


async def test_a_wrong_token_exits_2_with_the_reason(site: tuple[str, str]) -> None:
    url, _ = site

    code, out, err = await run_client("--url", url, "--token", "chat_wrong", "Hello")

    assert code == 2
    assert out == ""
    assert "error:" in err and "token" in err.lower()
