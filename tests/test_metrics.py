"""The chat_ metrics move as answers stream, tools run, the model fails and sockets come and go."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from django.contrib.auth.models import User
from prometheus_client import REGISTRY

from conversations import llm, metrics, runner
from conversations.live.draft import AnswerDraft, now
from conversations.models import Message
from tests.helpers.chat import (
    ApiConnect,
    Connect,
    assistant_message,
    calls_of,
    finished,
    new_conversation,
    opened,
    receive_text,
    receive_until,
    send_and_wait,
)
from tests.helpers.fake_openai import (
    FakeOpenAI,
    error,
    response_failed,
    response_text_stream,
    sse,
    text_stream,
    tool_calls_stream,
)
from tests.helpers.servers import free_port

pytestmark = pytest.mark.django_db(transaction=True)


Sample = str | tuple[str, dict[str, str]]


def sample(which: Sample) -> float:
    name, labels = (which, {}) if isinstance(which, str) else which
    return REGISTRY.get_sample_value(name, labels) or 0.0


class Moved:
    """How far samples have moved since this was made."""

    def __init__(self, *samples: Sample) -> None:
        self.before = {repr(which): sample(which) for which in samples}

    def __call__(self, which: Sample) -> float:
        return sample(which) - self.before[repr(which)]


def tool_calls(status: str) -> Sample:
    return ("chat_tool_calls_total", {"status": status})


def upstream_errors(kind: str) -> Sample:
    return ("chat_upstream_errors_total", {"kind": kind})


def sockets(kind: str) -> Sample:
    return ("chat_sockets_open", {"kind": kind})


@pytest.fixture(autouse=True)
def no_titles(settings: Any) -> None:
    # A title is one more model call, which would take the next answer's script.
    settings.CHAT_GENERATE_TITLES = False


def text_deltas(chunks: list[Any]) -> int:
    return sum(
        1 for chunk in chunks for choice in chunk["choices"] if choice["delta"].get("content")
    )


def argument_deltas(chunks: list[Any]) -> int:
    return sum(
        1
        for chunk in chunks
        for choice in chunk["choices"]
        for call in choice["delta"].get("tool_calls") or []
        if call["function"]["arguments"]
    )


def events(chunks: list[Any], kind: str) -> int:
    return sum(1 for chunk in chunks if chunk["type"] == kind)


TEXT = ("chat_stream_deltas_total", {"kind": "text"})
REASONING = ("chat_stream_deltas_total", {"kind": "reasoning"})
ARGUMENTS = ("chat_stream_deltas_total", {"kind": "tool_arguments"})
FIRST_EVENTS = "chat_upstream_first_event_seconds_count"
FIRST_EVENTS_SUM = "chat_upstream_first_event_seconds_sum"
CHECKPOINTS = "chat_checkpoint_writes_total"


async def test_a_streamed_answer_counts_its_deltas_first_event_and_saves(
    connect: Connect, user: User, model_server: FakeOpenAI
) -> None:
    chunks = text_stream("Seventeen times twenty-three is three hundred and ninety-one.")
    model_server.queue(sse(chunks, delay=0.05))
    conversation = await new_conversation(user)
    socket = await opened(connect, conversation, user)
    count = Moved(TEXT, FIRST_EVENTS, FIRST_EVENTS_SUM, CHECKPOINTS)
    running = sample("chat_answers_running")

    await socket.send_json_to({"message": "What is 17*23?"})
    await receive_text(socket, "Seventeen")
    running_while_streaming = sample("chat_answers_running")
    await receive_until(socket, finished)
    await runner.wait_for_local_runs()

    message = await assistant_message(conversation)
    assert message.status == Message.Status.COMPLETE
    assert count(TEXT) == text_deltas(chunks) == 8
    assert count(FIRST_EVENTS) == 1
    # The first event came after the role chunk and one 0.05 s pause.
    assert 0 < count(FIRST_EVENTS_SUM) < 5
    # Streaming for about half a second, saved every 0.05 s (the tests' interval) and at the end.
    assert count(CHECKPOINTS) >= 2
    assert running_while_streaming == running + 1
    assert sample("chat_answers_running") == running


async def test_tool_calls_count_by_how_they_ended(
    connect: Connect, user: User, model_server: FakeOpenAI, settings: Any
) -> None:
    settings.CHAT_APPROVAL_TIMEOUT = 0.2
    chunks = tool_calls_stream(
        [
            ("calculator", json.dumps({"expression": "17*23"})),
            ("calculator", json.dumps({"expression": "1/0"})),
            ("rename_conversation", json.dumps({"title": "Sums"})),
        ]
    )
    model_server.queue(sse(chunks))
    model_server.queue(sse(text_stream("391; 1/0 has no value.")))
    conversation = await new_conversation(user)
    socket = await opened(connect, conversation, user)
    statuses = ("succeeded", "failed", "denied", "cancelled")
    count = Moved(ARGUMENTS, *map(tool_calls, statuses))

    await send_and_wait(socket, "17*23, 1/0, and call this Sums")

    calls = await calls_of(await assistant_message(conversation))
    assert [call.status for call in calls] == ["succeeded", "failed", "denied"]
    assert [count(tool_calls(s)) for s in statuses] == [1, 1, 1, 0]
    assert count(ARGUMENTS) == argument_deltas(chunks) > 3


async def test_a_call_still_streaming_when_stopped_counts_as_cancelled(
    connect: Connect, user: User, model_server: FakeOpenAI
) -> None:
    chunks = tool_calls_stream([("calculator", json.dumps({"expression": "1234 * 5678"}))])
    model_server.queue(sse(chunks, delay=0.3))
    conversation = await new_conversation(user)
    socket = await opened(connect, conversation, user)
    count = Moved(tool_calls("cancelled"))

    await socket.send_json_to({"message": "compute it"})
    await receive_until(socket, lambda frame: 'class="tool-card status-streaming"' in frame)
    await socket.send_json_to({"action": "stop"})
    await receive_until(socket, finished)
    await runner.wait_for_local_runs()

    calls = await calls_of(await assistant_message(conversation))
    assert [call.status for call in calls] == ["cancelled"]
    assert count(tool_calls("cancelled")) == 1


async def test_upstream_errors_count_each_failed_try_by_kind(
    connect: Connect, user: User, model_server: FakeOpenAI, settings: Any
) -> None:
    kinds = ("connection", "timeout", "http_429", "http_4xx", "http_5xx", "stream")
    count = Moved(FIRST_EVENTS, *map(upstream_errors, kinds))
    conversation = await new_conversation(user)
    socket = await opened(connect, conversation, user)

    # A 500 ends the answer (no retries in the tests' settings).
    model_server.queue(error(500, "The engine is overloaded"))
    await send_and_wait(socket, "hello?")
    assert (await assistant_message(conversation)).status == Message.Status.FAILED

    # A 429 retried once, then an answer: the answer completes, the failed try still counts.
    settings.LLM_MAX_RETRIES = 1
    model_server.queue(error(429, "Slow down", headers={"retry-after": "0"}))
    model_server.queue(sse(text_stream("Back again.")))
    await send_and_wait(socket, "and now?")
    assert (await assistant_message(conversation)).status == Message.Status.COMPLETE

    # Nothing listens at the model's address.
    settings.LLM_MAX_RETRIES = 0
    settings.OPENAI_BASE_URL = f"http://127.0.0.1:{free_port()}/v1"
    await send_and_wait(socket, "still there?")

    assert [count(upstream_errors(k)) for k in kinds] == [1, 0, 1, 0, 1, 0]
    # Only the answer that came had a first event.
    assert count(FIRST_EVENTS) == 1


async def test_a_responses_answer_counts_its_reasoning_and_a_failed_stream(
    connect: Connect, user: User, model_server: FakeOpenAI
) -> None:
    answered = response_text_stream("Four.", pieces=2, reasoning=["Two and two ", "make four."])
    failed = response_failed("The model tripped.", text_before="Let me")
    model_server.queue(sse(answered))
    model_server.queue(sse(failed))
    conversation = await new_conversation(user, api_style="responses")
    socket = await opened(connect, conversation, user)
    count = Moved(TEXT, REASONING, FIRST_EVENTS, upstream_errors("stream"))

    await send_and_wait(socket, "2+2?")
    await send_and_wait(socket, "and 3+3?")

    assert (await assistant_message(conversation)).status == Message.Status.FAILED
    # Each summary delta, and the paragraph break the adapter puts between the two parts.
    summary_deltas = events(answered, "response.reasoning_summary_text.delta")
    assert count(REASONING) == summary_deltas + 1
    assert count(TEXT) == events([*answered, *failed], "response.output_text.delta") > 2
    assert count(FIRST_EVENTS) == 2
    assert count(upstream_errors("stream")) == 1


async def test_open_sockets_are_counted_by_kind_until_they_close(
    connect: Connect, api_connect: ApiConnect, user: User
) -> None:
    conversation = await new_conversation(user)
    pages, clients = sample(sockets("page")), sample(sockets("api"))

    page = await opened(connect, conversation, user)
    client = await api_connect(conversation, user)
    await client.connect()
    assert sample(sockets("page")) == pages + 1
    assert sample(sockets("api")) == clients + 1

    await page.disconnect()
    await client.disconnect()
    assert sample(sockets("page")) == pages
    assert sample(sockets("api")) == clients


async def test_an_answer_waiting_for_the_local_model_counts_as_queued() -> None:
    local = llm.Endpoint(
        model="local", base_url=llm.local_base_url(), api_key="local", local=True, max_tokens=None
    )
    first = AnswerDraft(message_id=1, created_at=now())
    second = AnswerDraft(message_id=2, created_at=now())
    running, queued = sample("chat_answers_running"), sample("chat_answers_queued")
    second_has_its_turn = asyncio.Event()

    async def second_answer() -> None:
        async with runner.model_slot(local, second):
            second_has_its_turn.set()

    metrics.answer_started(first)
    metrics.answer_started(second)
    try:
        async with runner.model_slot(local, first):
            waiting = asyncio.create_task(second_answer())
            await asyncio.sleep(0.05)
            assert second.status == Message.Status.QUEUED
            assert sample("chat_answers_running") == running + 1
            assert sample("chat_answers_queued") == queued + 1
        await asyncio.wait_for(second_has_its_turn.wait(), 5)
        await waiting
        assert sample("chat_answers_running") == running + 2
        assert sample("chat_answers_queued") == queued
    finally:
        metrics.answer_ended(first)
        metrics.answer_ended(second)
    assert sample("chat_answers_running") == running
