"""What both adapters (Chat Completions and Responses) do alike, driven by the real openai SDK
against the loopback server: each test runs once per adapter, in its wire format.

What only one API has is in tests/test_chat_completions*.py and tests/test_responses*.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable
from typing import cast

import openai
import pytest

from conversations.streaming.chat_completions import ENDED_EARLY
from conversations.streaming.events import Finished, ProviderEvent, StreamError, Usage
from tests.helpers.adapters import (
    ADAPTERS,
    CHAT_COMPLETIONS,
    RESPONSES,
    Adapter,
    each_adapter,
    of_type,
    text_of,
)
from tests.helpers.fake_openai import (
    Chunk,
    Completion,
    FakeOpenAI,
    ResponseEvents,
    error,
    response_error_event,
    response_text_stream,
    sse,
    text_stream,
)

Script = Callable[[], list[Chunk | str]]


@pytest.mark.parametrize("adapter", ADAPTERS)
async def test_upstream_500_becomes_a_readable_error(
    adapter: Adapter, fake_openai: FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    fake_openai.queue(error(500, "The engine is overloaded"))

    events = await adapter.collect(openai_client)

    assert len(events) == 1
    assert isinstance(events[0], StreamError)
    assert "500" in events[0].message and "The engine is overloaded" in events[0].message
    assert events[0].details == {"status_code": 500}


@pytest.mark.parametrize(
    ("adapter", "cut_after"),
    # Chat Completions: the role chunk, then three words. Responses: created, in_progress, item
    # added, part added, then three deltas.
    each_adapter(chat_completions=4, responses=7),
)
async def test_a_stream_cut_midway_keeps_the_text_then_errors(
    adapter: Adapter,
    cut_after: int,
    fake_openai: FakeOpenAI,
    openai_client: openai.AsyncOpenAI,
) -> None:
    script = adapter.text_stream("one two three four five six seven")
    fake_openai.queue(sse(script, cut_after=cut_after))

    events = await adapter.collect(openai_client)

    assert text_of(events) == "one two three"
    assert isinstance(events[-1], StreamError)
    assert events[-1].message.startswith("The connection to the model server broke off")
    assert not of_type(events, Finished)


@pytest.mark.parametrize(
    ("adapter", "script"),
    each_adapter(
        # No finish reason: the role chunk and two words.
        chat_completions=lambda: text_stream("one two three four")[:3],
        # No closing event.
        responses=lambda: response_text_stream("one two")[:-1],
    ),
)
async def test_a_stream_that_ends_without_its_end_is_an_error(
    adapter: Adapter, script: Script, fake_openai: FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    fake_openai.queue(sse(script()))

    events = await adapter.collect(openai_client)

    assert text_of(events) == "one two"
    assert events[-1] == StreamError(ENDED_EARLY)


@pytest.mark.parametrize(
    ("adapter", "case"),
    each_adapter(
        chat_completions=(
            lambda: [*text_stream("Half an answer")[:3], "{not json"],
            "Half an",
            "The model server sent a stream chunk that is not valid JSON.",
        ),
        responses=(
            lambda: [*response_text_stream("one")[:3], "{not json"],
            "",
            "The model server sent a stream event that is not valid JSON.",
        ),
    ),
)
async def test_a_chunk_that_is_not_json_ends_the_answer_with_an_error_after_its_text(
    adapter: Adapter,
    case: tuple[Script, str, str],
    fake_openai: FakeOpenAI,
    openai_client: openai.AsyncOpenAI,
) -> None:
    script, text, message = case
    fake_openai.queue(sse(script()))

    events = await adapter.collect(openai_client)

    assert text_of(events) == text
    assert isinstance(events[-1], StreamError)
    assert "not valid JSON" in events[-1].message
    assert events[-1] == StreamError(message)
    assert not of_type(events, Finished)


@pytest.mark.parametrize(
    ("adapter", "case"),
    each_adapter(
        chat_completions=(
            lambda: [{"error": {"message": "Rate limit reached", "type": "requests"}}],
            "Rate limit reached",
        ),
        # Nested, as the live Responses API sends it.
        responses=(
            lambda: response_error_event("Too Many Requests", nested=True),
            "Too Many Requests",
        ),
    ),
)
async def test_an_error_event_in_the_stream_is_reported_with_its_message(
    adapter: Adapter,
    case: tuple[Script, str],
    fake_openai: FakeOpenAI,
    openai_client: openai.AsyncOpenAI,
) -> None:
    script, message = case
    fake_openai.queue(sse(script()))

    events = await adapter.collect(openai_client)

    assert events == [StreamError(f"The model server reported an error: {message}")]


def chat_completions_usage(prompt: int, completion: int) -> list[Chunk]:
    """A text answer whose usage chunk has no total."""
    usage = {
        **Completion().usage(0, 0),
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion},
    }
    return [*text_stream("Hi.", usage=None), usage]


def responses_usage(prompt: int, completion: int) -> list[Chunk]:
    """A text answer whose usage has a total of 0."""
    response = ResponseEvents()
    response.message("Hi.")
    script = response.completed(usage=(prompt, completion))
    script[-1]["response"]["usage"]["total_tokens"] = 0
    return script


@pytest.mark.parametrize(
    ("adapter", "script", "usage"),
    [
        pytest.param(
            CHAT_COMPLETIONS,
            lambda: chat_completions_usage(3, 4),
            Usage(3, 4, 7),
            id="chat_completions",
        ),
        pytest.param(RESPONSES, lambda: responses_usage(4, 5), Usage(4, 5, 9), id="responses-4-5"),
        pytest.param(RESPONSES, lambda: responses_usage(0, 0), Usage(0, 0, 0), id="responses-0-0"),
    ],
)
async def test_usage_without_a_total_adds_up_its_parts(
    adapter: Adapter,
    script: Script,
    usage: Usage,
    fake_openai: FakeOpenAI,
    openai_client: openai.AsyncOpenAI,
) -> None:
    fake_openai.queue(sse(script()))

    events = await adapter.collect(openai_client)

    assert events[-2:] == [usage, Finished("stop")]


@pytest.mark.parametrize("adapter", ADAPTERS)
async def test_an_unreachable_server_is_a_connection_error_before_any_answer(
    adapter: Adapter,
) -> None:
    fake = FakeOpenAI().start()
    base_url = fake.base_url
    fake.stop()
    async with openai.AsyncOpenAI(base_url=base_url, api_key="test", max_retries=0) as client:
        [event] = await adapter.collect(client)

    assert isinstance(event, StreamError)
    assert event.message == "Could not reach the model server: All connection attempts failed"
    assert event.details == {"kind": "connection", "midway": False}


@pytest.mark.parametrize("adapter", ADAPTERS)
async def test_closing_the_generator_closes_the_upstream_request(
    adapter: Adapter, fake_openai: FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    fake_openai.queue(sse(adapter.text_stream(" ".join(["word"] * 200)), delay=0.05))
    events = cast(AsyncGenerator[ProviderEvent], adapter.stream(openai_client))

    received = [await anext(events) for _ in range(3)]
    await events.aclose()

    assert text_of(received) == "word word word"
    await fake_openai.wait_for_closed_early()
    assert fake_openai.closed_early == 1


@pytest.mark.parametrize("adapter", ADAPTERS)
async def test_cancelling_the_consumer_closes_the_upstream_request(
    adapter: Adapter, fake_openai: FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    fake_openai.queue(sse(adapter.text_stream(" ".join(["word"] * 200)), delay=0.05))
    received: list[ProviderEvent] = []
    three_words = asyncio.Event()

    async def consume() -> None:
        async for event in adapter.stream(openai_client):
            received.append(event)
            if len(received) == 3:
                three_words.set()

    task = asyncio.create_task(consume())
    await three_words.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert text_of(received).startswith("word word word")
    assert not of_type(received, Finished)
    await fake_openai.wait_for_closed_early()
    assert fake_openai.closed_early == 1
