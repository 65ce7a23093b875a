"""Bounded waits and retries of model calls, through the real openai SDK over loopback HTTP."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest

from conversations.streaming.chat_completions import stream_chat_completion
from conversations.streaming.events import (
    Finished,
    ProviderEvent,
    Retrying,
    StreamError,
    TextDelta,
)
from conversations.streaming.responses import stream_response
from conversations.streaming.retries import RetryPolicy, retrying
from conversations.streaming.timeouts import StreamTimeouts
from tests.helpers.fake_openai import FakeOpenAI, SilentServer, error, sse, text_stream

MESSAGES = [{"role": "user", "content": "hi"}]


def sdk_client(base_url: str) -> openai.AsyncOpenAI:
    # Without the stream limits, the HTTP client's own read timeout would be the only bound.
    return openai.AsyncOpenAI(base_url=base_url, api_key="test", max_retries=0, timeout=30)


def completion(client: openai.AsyncOpenAI) -> Any:
    def attempt(timeouts: StreamTimeouts) -> AsyncIterator[ProviderEvent]:
        return stream_chat_completion(
            client, model="fake-model", messages=MESSAGES, timeouts=timeouts
        )

    return attempt


async def collect(events: AsyncIterator[ProviderEvent]) -> tuple[list[ProviderEvent], float]:
    started = time.monotonic()
    collected = [event async for event in events]
    return collected, time.monotonic() - started


def policy(
    *, retries: int = 0, budget: float = 30, first_event: float = 30, idle: float = 30
) -> RetryPolicy:
    return RetryPolicy(retries, budget, StreamTimeouts(first_event, idle))


@pytest.mark.parametrize("server", ["silent_server", "headers_only_server"])
async def test_a_server_that_never_answers_fails_after_the_first_event_limit(
    server: str, request: pytest.FixtureRequest
) -> None:
    silent: SilentServer = request.getfixturevalue(server)
    async with sdk_client(silent.base_url) as client:
        events, took = await collect(completion(client)(StreamTimeouts(0.5, 30)))

    assert events == [
        StreamError(
            "The model server did not start answering within 0.5 s.",
            {"kind": "timeout", "midway": False},
        )
    ]
    assert 0.4 < took < 5


async def test_a_responses_stream_with_headers_and_nothing_else_fails_the_same_way(
    headers_only_server: SilentServer,
) -> None:
    async with sdk_client(headers_only_server.base_url) as client:
        stream = stream_response(
            client, model="fake-model", input=MESSAGES, timeouts=StreamTimeouts(0.5, 30)
        )
        events, took = await collect(stream)

    assert [type(event) for event in events] == [StreamError]
    assert events[0].message == "The model server did not start answering within 0.5 s."
    assert took < 5


async def test_a_stream_that_goes_quiet_midway_keeps_its_text_and_is_not_retried(
    fake_openai: FakeOpenAI,
) -> None:
    # The first chunk carries text; the next comes 3 s later.
    fake_openai.queue(sse(text_stream("one two three", pieces=3)[1:], delay=3))
    async with sdk_client(fake_openai.base_url) as client:
        events, took = await collect(
            retrying(completion(client), policy(retries=2, idle=0.3, first_event=5))
        )

    assert [type(event) for event in events] == [TextDelta, StreamError]
    assert events[-1] == StreamError(
        "The model server sent nothing for 0.3 s, so the answer was given up.",
        {"kind": "timeout", "midway": True},
    )
    assert len(fake_openai.requests) == 1
    assert took < 2.5


async def test_a_black_holed_server_is_retried_then_fails_within_the_limits(
    silent_server: SilentServer,
) -> None:
    async with sdk_client(silent_server.base_url) as client:
        events, took = await collect(
            retrying(completion(client), policy(retries=2, first_event=0.3))
        )

    retries = [event for event in events if isinstance(event, Retrying)]
    assert [(r.attempt, r.attempts) for r in retries] == [(2, 3), (3, 3)]
    assert retries[0].reason == "The model server did not start answering within 0.3 s."
    assert events[-1] == StreamError(
        "The model server did not start answering within 0.3 s. (tried 3 times)",
        {"kind": "timeout", "midway": False},
    )
    assert silent_server.accepted == 3
    # Three tries of 0.3 s and two backoffs of at most 0.5 and 1 s.
    assert 0.9 < took < 5


async def test_every_try_and_wait_together_stay_within_the_budget(
    silent_server: SilentServer,
) -> None:
    async with sdk_client(silent_server.base_url) as client:
        events, took = await collect(
            retrying(completion(client), policy(retries=10, budget=1.5, first_event=30))
        )

    assert isinstance(events[-1], StreamError)
    assert "did not start answering" in events[-1].message
    assert 1.0 < took < 4


async def test_retry_after_is_honoured_and_said_before_the_wait(fake_openai: FakeOpenAI) -> None:
    fake_openai.queue(error(429, "Rate limit reached.", headers={"Retry-After": "0.4"}))
    fake_openai.queue(sse(text_stream("Hello.")))
    async with sdk_client(fake_openai.base_url) as client:
        events, took = await collect(retrying(completion(client), policy(retries=2)))

    assert events[0] == Retrying(0.4, 2, 3, "The model server answered 429: Rate limit reached.")
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "Hello."
    assert events[-1] == Finished("stop")
    assert len(fake_openai.requests) == 2
    assert 0.35 < took < 3


async def test_retry_after_longer_than_the_budget_fails_at_once(fake_openai: FakeOpenAI) -> None:
    fake_openai.queue(error(429, "Rate limit reached.", headers={"Retry-After": "60"}))
    async with sdk_client(fake_openai.base_url) as client:
        events, took = await collect(retrying(completion(client), policy(retries=2, budget=10)))

    assert events == [
        StreamError(
            "The model server answered 429: Rate limit reached.",
            {"status_code": 429, "code": "rate_limit_exceeded", "retry_after": 60.0},
        )
    ]
    assert took < 2


@pytest.mark.parametrize("status", [400, 401, 404])
async def test_refusals_are_not_retried(fake_openai: FakeOpenAI, status: int) -> None:
    fake_openai.queue(error(status, "No."))
    async with sdk_client(fake_openai.base_url) as client:
        events, _ = await collect(retrying(completion(client), policy(retries=2)))

    assert [type(event) for event in events] == [StreamError]
    assert len(fake_openai.requests) == 1


async def test_server_errors_are_retried_with_backoff(fake_openai: FakeOpenAI) -> None:
    fake_openai.queue(error(503, "Overloaded."))
    fake_openai.queue(sse(text_stream("Back.")))
    async with sdk_client(fake_openai.base_url) as client:
        events, _ = await collect(retrying(completion(client), policy(retries=1)))

    assert isinstance(events[0], Retrying) and 0.375 <= events[0].delay <= 0.5
    assert events[-1] == Finished("stop")


async def test_a_stream_cut_midway_is_not_retried(fake_openai: FakeOpenAI) -> None:
    fake_openai.queue(sse(text_stream("one two three four", pieces=4), cut_after=3))
    async with sdk_client(fake_openai.base_url) as client:
        events, _ = await collect(retrying(completion(client), policy(retries=2)))

    assert isinstance(events[-1], StreamError) and "broke off" in events[-1].message
    assert not any(isinstance(event, Retrying) for event in events)
    assert len(fake_openai.requests) == 1


async def test_an_abandoned_retry_wait_ends_quietly(silent_server: SilentServer) -> None:
    async with sdk_client(silent_server.base_url) as client:
        events = retrying(completion(client), policy(retries=5, first_event=0.2))
        first = await anext(events)
        assert isinstance(first, Retrying)
        await asyncio.wait_for(events.aclose(), 2)  # type: ignore[attr-defined]


async def test_stop_while_waiting_for_the_server_is_a_cancellation_not_a_timeout(
    headers_only_server: SilentServer,
) -> None:
    async with sdk_client(headers_only_server.base_url) as client:
        reading = asyncio.create_task(collect(completion(client)(StreamTimeouts(5, 5))))
        await asyncio.sleep(0.5)
        reading.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(reading, 2)
