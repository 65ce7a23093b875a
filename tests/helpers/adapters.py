"""The two adapters (Chat Completions, Responses) as tests drive them, and reading the provider
events they yield.

`ADAPTERS` parametrises a test over both: each `Adapter` streams from the loopback server with
the SDK client it is given and knows the wire format of a plain text answer in its API.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import openai
import pytest

from conversations.streaming.chat_completions import stream_chat_completion
from conversations.streaming.events import ProviderEvent, TextDelta
from conversations.streaming.responses import stream_response
from tests.helpers.fake_openai import Chunk, response_text_stream, text_stream

# What each adapter's tests ask: Chat Completions messages, Responses input items.
MESSAGES = [{"role": "user", "content": "hi"}]
INPUT = [{"role": "user", "content": "What is 17*23?"}]


def text_of(events: list[ProviderEvent]) -> str:
    return "".join(event.text for event in events if isinstance(event, TextDelta))


def of_type[T](events: list[ProviderEvent], kind: type[T]) -> list[T]:
    return [event for event in events if isinstance(event, kind)]


def _stream_chat_completions(
    client: openai.AsyncOpenAI, **options: Any
) -> AsyncIterator[ProviderEvent]:
    return stream_chat_completion(client, model="fake-model", messages=MESSAGES, **options)


def _stream_responses(client: openai.AsyncOpenAI, **options: Any) -> AsyncIterator[ProviderEvent]:
    options.setdefault("input", INPUT)
    return stream_response(client, model="fake-model", **options)


@dataclass(frozen=True)
class Adapter:
    name: str
    streams: Callable[..., AsyncIterator[ProviderEvent]]
    # The chunks (Chat Completions) or events (Responses) of a text answer, as `text_stream`.
    text_stream: Callable[..., list[Chunk]]

    def stream(self, client: openai.AsyncOpenAI, **options: Any) -> AsyncIterator[ProviderEvent]:
        """The adapter's stream of the model's answer, as the loop reads it."""
        return self.streams(client, **options)

    async def collect(self, client: openai.AsyncOpenAI, **options: Any) -> list[ProviderEvent]:
        return [event async for event in self.stream(client, **options)]


CHAT_COMPLETIONS = Adapter("chat_completions", _stream_chat_completions, text_stream)
RESPONSES = Adapter("responses", _stream_responses, response_text_stream)
ADAPTERS = [pytest.param(adapter, id=adapter.name) for adapter in (CHAT_COMPLETIONS, RESPONSES)]


def each_adapter(chat_completions: Any, responses: Any) -> list[Any]:
    """Parameters `(adapter, case)` of a test of both adapters, each with its own case (what its
    wire format needs)."""
    return [
        pytest.param(CHAT_COMPLETIONS, chat_completions, id=CHAT_COMPLETIONS.name),
        pytest.param(RESPONSES, responses, id=RESPONSES.name),
    ]
