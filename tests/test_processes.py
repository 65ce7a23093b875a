"""Two Daphne processes sharing PostgreSQL and Redis, as a multi-process deployment runs.

An answer run by one process streams live to a page on the other through channels-redis, Stop
and a tool call's Deny pressed on the other reach it, an answer whose process is killed shows as
interrupted on the other, an idle socket stays open on Redis, and an open socket outlives its
database connections.
These need a real database and Redis, so they run in `make test`'s PostgreSQL + Redis pass.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import User
from django.db import connection

from conversations.models import Conversation, Message, ToolCall
from tests.helpers.chat import answer_id, appended_text, finished, session_cookie, shown_text
from tests.helpers.fake_openai import FakeOpenAI, sse, text_stream, tool_calls_stream
from tests.helpers.pages import Page
from tests.helpers.servers import daphne, daphne_process, shared_database_url, shared_server_env

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        not (os.environ.get("REDIS_URL") and os.environ.get("DATABASE_URL", "").startswith("post")),
        reason="needs PostgreSQL and Redis (DATABASE_URL, REDIS_URL): make test's second pass",
    ),
]


@pytest.fixture
def two_processes(fake_openai: FakeOpenAI, tmp_path: Path) -> Iterator[tuple[str, str]]:
    env = shared_server_env(fake_openai)
    with (
        daphne(env, log=tmp_path / "first.log") as first,
        daphne(env, log=tmp_path / "second.log") as second,
    ):
        yield first, second


@pytest.fixture
async def open_page(user: User) -> AsyncIterator[Any]:
    cookie = (await sync_to_async(session_cookie)(user)).decode()
    opened: list[Page] = []

    async def open_page(server: str, conversation: Conversation) -> Page:
        # The page's origin is the server's: sockets from another port are refused.
        opened.append(await Page.open(server, conversation.pk, cookie))
        return opened[-1]

    yield open_page
    for page in opened:
        await page.socket.close()


async def test_another_process_shows_the_answer_live_and_its_stop_reaches_the_run(
    two_processes: tuple[str, str], fake_openai: FakeOpenAI, user: User, open_page: Any
) -> None:
    first, second = two_processes
    words = " ".join(f"word{number}" for number in range(40))
    fake_openai.queue(sse(text_stream(words), delay=0.03))
    fake_openai.queue(sse(text_stream(" ".join(["again"] * 400)), delay=0.03))
    conversation = await Conversation.objects.acreate(owner=user)
    writer = await open_page(first, conversation)
    watcher = await open_page(second, conversation)

    await writer.send({"message": "count"})
    turn = await watcher.until(lambda frame: 'hx-swap-oob="beforeend"' in frame)
    answer = answer_id(turn)
    frames = await watcher.until(finished)

    streamed = appended_text(frames, answer)
    assert len(streamed) >= 5, "the other process showed the answer as it was written"
    assert words.startswith("".join(streamed))
    assert words in frames[-1]

    # A long answer, stopped from the page on the process that does not run it.
    await writer.until(finished)
    await writer.send({"message": "talk forever"})
    await watcher.until(lambda frame: "again again" in "".join(appended_text([frame])))
    await watcher.send({"action": "stop"})
    await watcher.until(lambda frame: 'data-status="cancelled"' in frame)
    await writer.until(lambda frame: 'data-status="cancelled"' in frame)

    stopped = await Message.objects.filter(conversation=conversation).alatest("created_at")
    assert stopped.status == Message.Status.CANCELLED
    assert 0 < stopped.content.count("again") < 400
    await fake_openai.wait_for_closed_early()


async def test_a_denial_on_another_process_reaches_the_run(
    two_processes: tuple[str, str], fake_openai: FakeOpenAI, user: User, open_page: Any
) -> None:
    first, second = two_processes
    fake_openai.queue(sse(tool_calls_stream([("rename_conversation", '{"title": "New"}')])))
    fake_openai.queue(sse(text_stream("I left the title alone.")))
    conversation = await Conversation.objects.acreate(owner=user, title="Old")
    writer = await open_page(first, conversation)
    watcher = await open_page(second, conversation)

    await writer.send({"message": "rename this"})
    frames = await watcher.until(lambda frame: 'data-status="awaiting_approval"' in frame)
    [tool_call] = set(re.findall(r'name="tool_call" value="([\d:]+)"', frames[-1]))
    await watcher.send({"action": "deny", "tool_call": tool_call, "reason": "Keep it."})
    await watcher.until(finished)
    await writer.until(finished)

    call = await ToolCall.objects.aget(message__conversation=conversation)
    assert (call.status, call.decision, call.decided_by) == ("denied", "denied", "alice")
    assert fake_openai.requests[1]["messages"][-1]["content"] == (
        "The user denied this tool call: Keep it."
    )
    await conversation.arefresh_from_db()
    assert conversation.title == "Old"


async def test_a_page_that_reconnects_to_the_other_process_misses_nothing(
    two_processes: tuple[str, str], fake_openai: FakeOpenAI, user: User, open_page: Any
) -> None:
    first, second = two_processes
    words = " ".join(f"w{number}" for number in range(60))
    fake_openai.queue(sse(text_stream(words), delay=0.03))
    conversation = await Conversation.objects.acreate(owner=user)
    writer = await open_page(first, conversation)
    await writer.send({"message": "count"})
    # Past the first checkpoint (CHAT_CHECKPOINT_INTERVAL), so the rows hold part of it.
    await writer.until(lambda frame: "w40" in "".join(appended_text([frame])))

    # The page reloads, and the load balancer sends it to the other process.
    reloaded = await open_page(second, conversation)
    message = await Message.objects.filter(conversation=conversation).alatest("created_at")
    snapshot = reloaded.frames[0]
    # Generous: on a loaded machine the end may come by the follower's re-read (hub.SILENT).
    frames = await reloaded.until(finished, timeout=30)

    shown = "".join(appended_text(frames, message.pk))
    before = shown_text(snapshot, message.pk)
    assert before.startswith("w0 w1")
    assert words.startswith(before + shown), "nothing lost or repeated across the reload"
    assert words in frames[-1]


async def test_an_idle_socket_stays_open_on_redis(
    two_processes: tuple[str, str], user: User, open_page: Any
) -> None:
    conversation = await Conversation.objects.acreate(owner=user)
    page = await open_page(two_processes[0], conversation)

    # channels-redis reads each socket's channel with a 5 s blocking pop.
    await asyncio.sleep(12)
    await page.send({"action": "ping"})
    assert await page.until(lambda frame: frame == '<template id="pong"></template>')


async def test_an_answer_whose_process_is_killed_shows_interrupted_on_the_other_process(
    fake_openai: FakeOpenAI, user: User, open_page: Any, tmp_path: Path
) -> None:
    env = shared_server_env(fake_openai)
    fake_openai.queue(sse(text_stream(" ".join(["word"] * 2000)), delay=0.05))
    fake_openai.queue(sse(text_stream("Still here.")))
    conversation = await Conversation.objects.acreate(owner=user)
    with (
        daphne_process(env, log=tmp_path / "killed.log") as (first, process),
        daphne(env, log=tmp_path / "second.log") as second,
    ):
        writer = await open_page(first, conversation)
        watcher = await open_page(second, conversation)
        await writer.send({"message": "talk forever"})
        await watcher.until(lambda frame: "word" in "".join(appended_text([frame])))
        await asyncio.sleep(1.5)  # past a checkpoint: the rows hold some of it

        process.kill()
        killed = time.monotonic()
        frames = await watcher.until(lambda frame: 'data-status="interrupted"' in frame, 45)
        waited = time.monotonic() - killed
        await watcher.send({"message": "are you there?"})
        await watcher.until(lambda frame: "Still here." in frame and finished(frame))

    assert waited < 36, f"interrupted shown {waited:.1f} s after the kill"
    assert "word word" in frames[-1]
    interrupted, answered = [
        message
        async for message in Message.objects.filter(
            conversation=conversation, role="assistant"
        ).order_by("created_at")
    ]
    assert interrupted.status == Message.Status.INTERRUPTED
    assert interrupted.content.startswith("word word")
    assert answered.status == Message.Status.COMPLETE


@sync_to_async
def terminate_connections(application_name: str) -> int:
    """What a PostgreSQL restart does to a client: its connections are closed under it."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name = %s",
            [application_name],
        )
        return int(cursor.fetchone()[0])


async def test_an_answer_and_its_socket_outlive_the_database_closing_their_connections(
    fake_openai: FakeOpenAI, user: User, open_page: Any, tmp_path: Path
) -> None:
    # Named, so that only the server's connections are closed, not the test's own.
    env = shared_server_env(fake_openai) | {
        "DATABASE_URL": f"{shared_database_url()}?application_name=served"
    }
    words = " ".join(f"w{number}" for number in range(60))
    fake_openai.queue(sse(text_stream(words), delay=0.05))
    fake_openai.queue(sse(text_stream("Second answer.")))
    conversation = await Conversation.objects.acreate(owner=user)
    with daphne(env, log=tmp_path / "server.log") as server:
        page = await open_page(server, conversation)
        await page.send({"message": "count"})
        await page.until(lambda frame: "w10" in "".join(appended_text([frame])))
        await asyncio.sleep(1.2)  # past a checkpoint: the run's connection has been used

        # What a PostgreSQL restart does to the server, while the answer is being written.
        assert await terminate_connections("served") >= 1
        await page.until(finished)
        await page.send({"message": "and now?"})
        await page.until(lambda frame: "Second answer." in frame and finished(frame))

    saved = [
        (message.status, message.content)
        async for message in Message.objects.filter(
            conversation=conversation, role="assistant"
        ).order_by("created_at")
    ]
    assert saved == [
        (Message.Status.COMPLETE, words),
        (Message.Status.COMPLETE, "Second answer."),
    ]
