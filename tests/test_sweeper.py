"""Answers no live process is writing: the sweeper marks them interrupted and tells their pages,
Stop ends them at once, and they never block the next message."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from conversations import runner, services, sweeper
from conversations.models import Conversation, Message, ToolCall
from tests.helpers.chat import (
    Connect,
    assistant_message,
    finished,
    new_conversation,
    opened,
    receive_text,
    receive_until,
    send_and_wait,
)
from tests.helpers.fake_openai import FakeOpenAI, sse, text_stream

pytestmark = pytest.mark.django_db(transaction=True)


async def orphan(conversation: Conversation, *, beat_ago: float = 0.0) -> Message:
    """An answer being written by a process that has just died (its last save `beat_ago` s ago),
    with a tool call it was running."""
    await Message.objects.acreate(conversation=conversation, role="user", content="go on")
    message = await Message.objects.acreate(
        conversation=conversation,
        role="assistant",
        content="half an ans",
        status=Message.Status.STREAMING,
        model="fake-model",
        heartbeat_at=timezone.now() - timedelta(seconds=beat_ago),
    )
    await ToolCall.objects.acreate(
        message=message, call_id="c1", name="calculator", status=ToolCall.Status.RUNNING
    )
    return message


def shows(status: str) -> Any:
    return lambda frame: f'data-status="{status}"' in frame


@pytest.fixture
async def sweeping(settings: Any) -> AsyncIterator[None]:
    """The sweeper on, as in production, with a dead process found after one second."""
    settings.CHAT_SWEEP_INTERVAL = 0.1
    settings.CHAT_HEARTBEAT_INTERVAL = 0.2
    settings.CHAT_RUN_STALE_AFTER = 1.0
    yield
    await sweeper.stop_sweeping()


async def test_a_page_sees_an_answer_whose_process_died_interrupted_without_reloading(
    connect: Connect, user: User, model_server: FakeOpenAI, sweeping: None
) -> None:
    # A live answer whose model says nothing for longer than that: its heartbeat keeps it alive.
    model_server.queue(sse(text_stream("slow but alive", pieces=1), delay=1.2))
    started = time.monotonic()
    dead = await new_conversation(user)
    message = await orphan(dead)
    live = await new_conversation(user)
    watcher = await opened(connect, dead, user)
    writer = await opened(connect, live, user)

    frames = await receive_until(watcher, shows("interrupted"), timeout=5)
    waited = time.monotonic() - started
    await send_and_wait(writer, "take your time")

    assert waited < 4, "shown interrupted soon after its heartbeat was a second old"
    assert "half an ans" in frames[-1]
    assert 'id="run-controls"' in frames[-1] and 'class="stop"' not in frames[-1], "no Stop"
    await message.arefresh_from_db()
    assert message.status == Message.Status.INTERRUPTED
    assert message.finished_at and message.heartbeat_at
    assert message.finished_at - message.heartbeat_at >= timedelta(seconds=1)
    assert message.content == "half an ans"
    assert (await message.tool_calls.aget()).status == ToolCall.Status.CANCELLED
    answer = await assistant_message(live)
    assert answer.status == Message.Status.COMPLETE
    assert answer.content == "slow but alive"


async def test_stop_ends_an_answer_no_process_runs_at_once(
    connect: Connect, user: User, model_server: FakeOpenAI
) -> None:
    conversation = await new_conversation(user)
    message = await orphan(conversation)
    page = await opened(connect, conversation, user)
    other_tab = await opened(connect, conversation, user)

    await page.send_json_to({"action": "stop"})
    await receive_until(page, shows("cancelled"), timeout=5)
    frames = await receive_until(other_tab, shows("cancelled"), timeout=1)

    assert "half an ans" in frames[-1]
    await message.arefresh_from_db()
    assert message.status == Message.Status.CANCELLED
    assert message.content == "half an ans"
    assert (await message.tool_calls.aget()).status == ToolCall.Status.CANCELLED
    model_server.queue(sse(text_stream("Back again.")))
    await send_and_wait(page, "hello?")
    assert (await assistant_message(conversation)).content == "Back again."


async def test_a_message_after_an_answer_whose_process_died_is_accepted(
    connect: Connect, user: User, model_server: FakeOpenAI, settings: Any
) -> None:
    settings.CHAT_RUN_STALE_AFTER = 0.5
    conversation = await new_conversation(user)
    message = await orphan(conversation)
    page = await opened(connect, conversation, user)
    await asyncio.sleep(0.6)

    model_server.queue(sse(text_stream("Here I am.")))
    frames = await send_and_wait(page, "anyone there?")

    assert not any('id="chat-error"' in frame and "still" in frame for frame in frames)
    assert any(shows("interrupted")(frame) and "half an ans" in frame for frame in frames)
    await message.arefresh_from_db()
    assert message.status == Message.Status.INTERRUPTED
    assert (await assistant_message(conversation)).content == "Here I am."


async def test_a_run_that_was_taken_for_dead_stops_and_leaves_the_row_alone(
    connect: Connect, user: User, model_server: FakeOpenAI
) -> None:
    model_server.queue(sse(text_stream(" ".join(["word"] * 200)), delay=0.05))
    conversation = await new_conversation(user)
    page = await opened(connect, conversation, user)
    await page.send_json_to({"message": "talk a lot"})
    await receive_text(page, "word word")

    # Its process could not save for too long, and another process ended it.
    message = await assistant_message(conversation)
    [ended] = await services.aruns_end(
        status=Message.Status.INTERRUPTED, message_ids=[message.pk], error="gone quiet"
    )
    await receive_until(page, finished)
    await runner.wait_for_local_runs()

    await message.arefresh_from_db()
    assert message.status == Message.Status.INTERRUPTED
    assert message.content == ended.content
    await model_server.wait_for_closed_early()
