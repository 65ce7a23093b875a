"""A server told to stop (SIGTERM) drains: it stops listening, closes its sockets with 1012, lets
running answers finish within CHAT_DRAIN_GRACE, ends the rest `interrupted` with all their text
saved, and exits 0. While draining it takes no new socket and no new answer."""

from __future__ import annotations

import asyncio
import contextlib
import html
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.contrib.auth.models import User

from conversations import drain, runner
from conversations.models import Message
from tests.helpers.chat import (
    ApiConnect,
    Connect,
    appended_text,
    assistant_message,
    finished,
    new_conversation,
    opened,
    receive_text,
    receive_until,
)
from tests.helpers.fake_openai import FakeOpenAI, sse, text_stream
from tests.helpers.pages import Page
from tests.helpers.servers import accepts, daphne_process, manage_shell, migrate, site_env

SEED = """
from django.contrib.auth.models import User
from django.contrib.sessions.backends.db import SessionStore
from conversations.models import Conversation
alice = User.objects.create_user("alice", password="a-long-password-1")
session = SessionStore()
session["_auth_user_id"] = str(alice.pk)
session["_auth_user_backend"] = "django.contrib.auth.backends.ModelBackend"
session["_auth_user_hash"] = alice.get_session_auth_hash()
session.create()
print(session.session_key, Conversation.objects.create(owner=alice).pk)
"""


@dataclass
class Site:
    env: dict[str, str]
    database: Path
    session: str
    conversation: int

    def answers(self) -> list[tuple[str, str, str]]:
        """Every answer's (status, content, error), as the database holds them."""
        with sqlite3.connect(self.database) as db:
            return db.execute(
                "SELECT status, content, error FROM conversations_message"
                " WHERE role = 'assistant' ORDER BY id"
            ).fetchall()


@pytest.fixture
def site(tmp_path: Path, fake_openai: FakeOpenAI) -> Site:
    database = tmp_path / "db.sqlite3"
    env = site_env(
        fake_openai, database, SECRET_KEY="drain-test", CHAT_GENERATE_TITLES="0", REDIS_URL=""
    )
    migrate(env)
    session, conversation = manage_shell(env, SEED).split()
    return Site(env, database, session, int(conversation))


@pytest.fixture(autouse=True)
def serving() -> Iterator[None]:
    """This process serves again after a test that drained it."""
    yield
    drain.reset()


@contextlib.contextmanager
def served(
    site: Site, tmp_path: Path, *, grace: float
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`manage.py serve` on the site, with CHAT_DRAIN_GRACE `grace`: its URL and process."""
    env = site.env | {"CHAT_DRAIN_GRACE": str(grace)}
    with daphne_process(env, serve=True, log=tmp_path / "serve.log") as found:
        yield found


def port_of(url: str) -> int:
    return int(url.rpartition(":")[2])


async def exit_code(process: subprocess.Popen[bytes], timeout: float) -> int:
    return await asyncio.to_thread(process.wait, timeout)


async def test_an_answer_running_at_sigterm_finishes_within_the_grace(
    site: Site, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    words = " ".join(f"w{number}" for number in range(60))
    fake_openai.queue(sse(text_stream(words), delay=0.05))
    with served(site, tmp_path, grace=30) as (url, process):
        page = await Page.open(url, site.conversation, f"sessionid={site.session}", timeout=20)
        await page.send({"message": "count"})
        await page.shown("w5 ")

        process.send_signal(signal.SIGTERM)
        assert await page.closed_with() == 1012
        assert process.poll() is None, "still finishing the answer"
        assert not accepts(port_of(url)), "no longer listening"
        assert await exit_code(process, 30) == 0

    assert site.answers() == [("complete", words, "")]
    assert words.startswith(page.text())


async def test_an_answer_still_running_after_the_grace_ends_interrupted_with_all_its_text(
    site: Site, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    words = " ".join(f"w{number}" for number in range(2000))
    fake_openai.queue(sse(text_stream(words), delay=0.02))
    with served(site, tmp_path, grace=1.5) as (url, process):
        page = await Page.open(url, site.conversation, f"sessionid={site.session}", timeout=20)
        await page.send({"message": "count"})
        await page.shown("w20 ")

        process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        assert await page.closed_with() == 1012
        assert not accepts(port_of(url))
        assert await exit_code(process, 30) == 0
        took = time.monotonic() - signalled

    [(status, content, error)] = site.answers()
    assert (status, error) == ("interrupted", drain.INTERRUPTED_ERROR)
    seen = page.text()
    assert content.startswith(seen), "every character the page was sent is saved"
    assert words.startswith(content)
    assert len(content) > len(seen), "it went on writing during the grace"
    assert took < 1.5 + 8, f"exited {took:.1f} s after SIGTERM"
    await fake_openai.wait_for_closed_early()


async def test_a_second_sigterm_interrupts_at_once_and_still_saves(
    site: Site, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    words = " ".join(f"w{number}" for number in range(2000))
    fake_openai.queue(sse(text_stream(words), delay=0.02))
    with served(site, tmp_path, grace=120) as (url, process):
        page = await Page.open(url, site.conversation, f"sessionid={site.session}", timeout=20)
        await page.send({"message": "count"})
        await page.shown("w20 ")
        process.send_signal(signal.SIGTERM)
        assert await page.closed_with() == 1012
        await asyncio.sleep(0.5)
        process.send_signal(signal.SIGTERM)
        hurried = time.monotonic()
        assert await exit_code(process, 30) == 0
        took = time.monotonic() - hurried

    [(status, content, error)] = site.answers()
    assert (status, error) == ("interrupted", drain.INTERRUPTED_ERROR)
    assert content.startswith(page.text()) and words.startswith(content)
    assert took < 8, f"exited {took:.1f} s after the second SIGTERM"


# In this process: the consumers and the runs of a draining server.


@pytest.mark.django_db(transaction=True)
async def test_a_draining_server_refuses_new_sockets_and_new_answers(
    connect: Connect, api_connect: ApiConnect, user: User, model_server: FakeOpenAI
) -> None:
    conversation = await new_conversation(user)
    page = await opened(connect, conversation, user)
    api = await api_connect(conversation, user)
    await api.connect()

    drain.begin()
    await page.send_json_to({"message": "Hi"})
    refusal = await page.receive_from()
    assert 'id="chat-error"' in refusal
    assert drain.REFUSED in html.unescape(refusal)
    assert await api.command({"type": "send", "text": "Hi", "id": 7}) == {
        "type": "error",
        "seq": None,
        "code": "restarting",
        "message": drain.REFUSED,
        "command_id": 7,
    }
    late_page = await connect(conversation, user)
    assert (await late_page.connect())[0] is False
    late_client = await api_connect(conversation, user)
    assert (await late_client.communicator.connect())[0] is False
    assert await Message.objects.filter(conversation=conversation).acount() == 0


@pytest.mark.django_db(transaction=True)
async def test_drain_lets_an_answer_end_within_the_grace(
    connect: Connect, user: User, model_server: FakeOpenAI
) -> None:
    model_server.queue(sse(text_stream("One two three four five."), delay=0.05))
    conversation = await new_conversation(user)
    page = await opened(connect, conversation, user)
    await page.send_json_to({"message": "count"})
    await receive_until(page, lambda frame: 'hx-swap-oob="beforeend"' in frame)

    assert await drain.drain_runs(grace=10) == drain.Drained(finished=1, interrupted=0)
    message = await assistant_message(conversation)
    assert (message.status, message.content) == ("complete", "One two three four five.")


@pytest.mark.django_db(transaction=True)
async def test_drain_interrupts_an_answer_past_the_grace_keeping_what_the_page_was_sent(
    connect: Connect, user: User, model_server: FakeOpenAI
) -> None:
    model_server.queue(sse(text_stream(" ".join(["word"] * 1000)), delay=0.01))
    conversation = await new_conversation(user)
    page = await opened(connect, conversation, user)
    await page.send_json_to({"message": "talk"})
    frames = await receive_text(page, "word word word")
    before = "".join(appended_text(frames))

    started = time.monotonic()
    assert await drain.drain_runs(grace=0.3) == drain.Drained(finished=0, interrupted=1)
    assert time.monotonic() - started < 3
    frames += await receive_until(page, finished)
    message = await assistant_message(conversation)
    assert (message.status, message.error) == ("interrupted", drain.INTERRUPTED_ERROR)
    seen = "".join(appended_text(frames))
    assert message.content.startswith(seen), "every character the page was sent is saved"
    assert len(message.content) > len(before), "it went on writing during the grace"
    assert 'data-status="interrupted"' in frames[-1]
    assert drain.INTERRUPTED_ERROR in html.unescape(frames[-1])
    await runner.wait_for_local_runs()
