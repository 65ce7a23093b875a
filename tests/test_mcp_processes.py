"""MCP servers under `manage.py serve`: a drain past its grace cancels a running call on the
server and stops the server with the site; a stdio server never outlives a worker killed with
SIGKILL; with two workers, a page on one sees the progress of a call running on the other."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import User

from tests.helpers.chat import new_conversation, session_cookie
from tests.helpers.fake_openai import FakeOpenAI, sse, text_stream, tool_calls_stream
from tests.helpers.mcp import faults_stdio, marked, servers_file
from tests.helpers.pages import Page
from tests.helpers.servers import (
    alive,
    daphne_process,
    manage_shell,
    migrate,
    serve_workers,
    shared_server_env,
    site_env,
    wait_until,
)
from tests.test_drain import SEED

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def descendants(pid: int) -> list[int]:
    """Every process below `pid`, children of children too."""
    found: list[int] = []
    listing = subprocess.run(["ps", "-eo", "pid=,ppid="], capture_output=True, text=True).stdout
    parents = {int(a): int(b) for a, b in (line.split() for line in listing.splitlines())}
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        for child, of in parents.items():
            if of == parent:
                found.append(child)
                frontier.append(child)
    return found


def fault_server_pids() -> list[int]:
    listing = subprocess.run(
        ["pgrep", "-f", "tests.helpers.mcp_faults"], capture_output=True, text=True
    )
    return [int(pid) for pid in listing.stdout.split()]


def slow_call(seconds: float) -> bytes:
    return sse(tool_calls_stream([("faults__slow", json.dumps({"seconds": seconds}))]))


async def test_a_drain_cancels_a_running_call_on_the_server_and_stops_it(
    fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    mcp = servers_file(tmp_path, {"faults": faults_stdio(markers, requires_approval=False)})
    database = tmp_path / "db.sqlite3"
    env = site_env(
        fake_openai,
        database,
        SECRET_KEY="mcp-drain",
        CHAT_GENERATE_TITLES="0",
        REDIS_URL="",
        MCP_SERVERS_FILE=str(mcp),
        CHAT_DRAIN_GRACE="1",
    )
    migrate(env)
    session, conversation = manage_shell(env, SEED).split()
    fake_openai.queue(slow_call(60))

    with daphne_process(env, serve=True, log=tmp_path / "serve.log") as (url, process):
        page = await Page.open(url, int(conversation), f"sessionid={session}", timeout=20)
        await page.send({"message": "Work slowly"})
        await page.until(lambda frame: "<progress" in frame, timeout=30)
        servers = [pid for pid in descendants(process.pid) if pid in fault_server_pids()]
        assert servers, "the fault server runs below the site"

        process.send_signal(signal.SIGTERM)
        assert await page.closed_with() == 1012
        assert await asyncio.to_thread(process.wait, 30) == 0

    with sqlite3.connect(database) as db:
        [(status,)] = db.execute(
            "SELECT status FROM conversations_message WHERE role = 'assistant'"
        ).fetchall()
        [(call_status, progress)] = db.execute(
            "SELECT status, progress FROM conversations_toolcall"
        ).fetchall()
    assert (status, call_status) == ("interrupted", "cancelled")
    assert progress is not None and progress > 0
    assert marked(markers, "slow") == ["started", "cancelled"]
    assert not [pid for pid in servers if alive(pid)], "the MCP server stopped with the site"


async def test_a_stdio_server_does_not_outlive_a_worker_killed_with_sigkill(
    fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    mcp = servers_file(tmp_path, {"faults": faults_stdio(markers)})
    env = site_env(
        fake_openai,
        tmp_path / "db.sqlite3",
        SECRET_KEY="mcp-kill",
        REDIS_URL="",
        MCP_SERVERS_FILE=str(mcp),
    )
    migrate(env)
    with daphne_process(env, serve=True, log=tmp_path / "serve.log") as (_, process):
        # Started when the server is ready, before any answer.
        await asyncio.to_thread(
            wait_until,
            lambda: any(pid in fault_server_pids() for pid in descendants(process.pid)),
            30,
            "the MCP server starts with the site",
        )
        servers = [pid for pid in descendants(process.pid) if pid in fault_server_pids()]
        os.kill(process.pid, signal.SIGKILL)
        await asyncio.to_thread(process.wait, 10)
        await asyncio.to_thread(
            wait_until,
            lambda: not [pid for pid in servers if alive(pid)],
            10,
            "the MCP server ends with the killed site",
        )


@pytest.mark.skipif(
    not (os.environ.get("REDIS_URL") and os.environ.get("DATABASE_URL", "").startswith("post")),
    reason="needs PostgreSQL and Redis (DATABASE_URL, REDIS_URL): make test's second pass",
)
@pytest.mark.django_db(transaction=True)
async def test_a_page_on_one_worker_sees_the_progress_of_a_call_on_the_other(
    fake_openai: FakeOpenAI, tmp_path: Path, user: User
) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    mcp = servers_file(tmp_path, {"faults": faults_stdio(markers, requires_approval=False)})
    env = shared_server_env(fake_openai) | {
        "MCP_SERVERS_FILE": str(mcp),
        "CHAT_GENERATE_TITLES": "0",
    }
    conversation = await new_conversation(user)
    cookie = (await sync_to_async(session_cookie)(user)).decode()
    fake_openai.queue(slow_call(1.5))
    fake_openai.queue(sse(text_stream("Done slowly.")))

    with serve_workers(env, workers=2, log=tmp_path / "serve.log") as served:
        first, second = served.urls
        writer = await Page.open(first, conversation.pk, cookie, timeout=20)
        watcher = await Page.open(second, conversation.pk, cookie, timeout=20)
        await writer.send({"message": "Work slowly"})
        frames = await watcher.until(lambda frame: "Done slowly" in frame, timeout=30)

    bars = [frame for frame in frames if "<progress" in frame]
    assert bars, "the other worker's page showed the call's progress"
    assert marked(markers, "slow") == ["started", "finished"]
