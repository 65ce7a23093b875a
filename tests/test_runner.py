"""A run that meets a failing database, channel layer, subscriber or bug still ends properly:
its final status and a clear error are saved and shown, and nothing stays `streaming`."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import OperationalError

from conversations import runner
from conversations.live import hub as live
from conversations.models import Message
from tests.helpers.chat import (
    Connect,
    appended_text,
    assistant_message,
    new_conversation,
    opened,
    send_and_wait,
)
from tests.helpers.fake_openai import FakeOpenAI, sse, text_stream

pytestmark = pytest.mark.django_db(transaction=True)

ANSWER = " ".join(f"word{number}" for number in range(30))


def failing_saves(monkeypatch: pytest.MonkeyPatch, *, progress: int = 0, final: int = 0) -> Any:
    """Make the first `progress` checkpoint saves and `final` end saves fail like a locked
    database; the counts of each attempted are returned."""
    real = runner.aanswer_save
    attempts = {"progress": 0, "final": 0}

    async def save(**fields: Any) -> Any:
        kind = "final" if fields.get("final") else "progress"
        attempts[kind] += 1
        if attempts[kind] <= {"progress": progress, "final": final}[kind]:
            raise OperationalError("database is locked")
        return await real(**fields)

    monkeypatch.setattr(runner, "aanswer_save", save)
    return attempts


async def test_checkpoints_that_fail_do_not_stop_the_answer(
    connect: Connect,
    user: User,
    model_server: FakeOpenAI,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    attempts = failing_saves(monkeypatch, progress=3)
    model_server.queue(sse(text_stream(ANSWER), delay=0.03))
    conversation = await new_conversation(user)
    page = await opened(connect, conversation, user)

    frames = await send_and_wait(page, "talk")

    message = await assistant_message(conversation)
    assert (message.status, message.content) == (Message.Status.COMPLETE, ANSWER)
    assert attempts["progress"] > 3, "it kept saving after the failures"
    assert ANSWER.startswith("".join(appended_text(frames, message.pk)))
    assert any(
        "saving message" in r.getMessage() for r in caplog.records if r.levelname == "WARNING"
    )


async def test_a_final_save_that_fails_is_retried(
    connect: Connect, user: User, model_server: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner, "FINAL_SAVE_RETRIES", (0.01, 0.01, 0.01))
    attempts = failing_saves(monkeypatch, final=2)
    model_server.queue(sse(text_stream("Short answer.")))
    conversation = await new_conversation(user)
    page = await opened(connect, conversation, user)

    frames = await send_and_wait(page, "hi")

    message = await assistant_message(conversation)
    assert (message.status, message.content) == (Message.Status.COMPLETE, "Short answer.")
    assert attempts["final"] == 3
    assert re.search(r'status-complete"\s+data-status="complete"', frames[-1])


async def test_a_channel_layer_that_fails_does_not_stop_the_answer(
    connect: Connect,
    user: User,
    model_server: FakeOpenAI,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model_server.queue(sse(text_stream(ANSWER), delay=0.01))
    conversation = await new_conversation(user)
    page = await opened(connect, conversation, user)
    layer = live.hub().layer

    async def down(*args: Any, **kwargs: Any) -> None:
        raise ConnectionError("Redis is down")

    for method in ("group_add", "group_send", "send"):
        monkeypatch.setattr(layer, method, down)

    frames = await send_and_wait(page, "talk")

    message = await assistant_message(conversation)
    assert (message.status, message.content) == (Message.Status.COMPLETE, ANSWER)
    assert ANSWER.startswith("".join(appended_text(frames, message.pk)))


async def test_a_bug_in_the_run_fails_the_answer_with_a_clear_error(
    connect: Connect,
    user: User,
    model_server: FakeOpenAI,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken_toolbox(**kwargs: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(runner, "atoolbox_for", broken_toolbox)
    conversation = await new_conversation(user)
    page = await opened(connect, conversation, user)

    frames = await send_and_wait(page, "hi")

    message = await assistant_message(conversation)
    assert message.status == Message.Status.FAILED
    assert message.error == "An internal error stopped this answer."
    assert message.error in frames[-1]
    assert any(r.exc_info for r in caplog.records if r.levelname == "ERROR")


async def test_a_subscriber_that_fails_is_dropped_and_the_others_go_on(
    connect: Connect, user: User, model_server: FakeOpenAI
) -> None:
    model_server.queue(sse(text_stream(ANSWER), delay=0.02))
    conversation = await new_conversation(user)
    page = await opened(connect, conversation, user)

    class Broken:
        channel_name = "unused"

        async def receive_events(self, message_id: int, events: list[Any]) -> None:
            raise RuntimeError("a broken page")

        def seen_seq(self, message_id: int) -> int:
            return 0

        async def refresh(self, message_id: int) -> None:
            pass

    await page.send_json_to({"message": "talk"})
    async with asyncio.timeout(5):
        while not live.hub().runs:
            await asyncio.sleep(0.01)
    [run] = live.hub().runs.values()
    await live.hub().follow(
        Broken(), conversation_id=conversation.pk, message_id=run.message_id, after=0
    )
    await runner.wait_for_local_runs()

    message = await assistant_message(conversation)
    assert (message.status, message.content) == (Message.Status.COMPLETE, ANSWER)
