"""Recorded-style transcripts of each real server's stream, read by the real SDK over HTTP.

Each shape is a file in tests/data/server_shapes/ (see tests/helpers/server_shapes.py): the
response the loopback server replays and the answer the adapter reads from it;
tests/test_server_shapes_stored.py plays the same transcripts through the chat socket and checks
what is stored.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import openai
import pytest

from conversations.streaming.chat_completions import stream_chat_completion
from conversations.streaming.events import (
    Finished,
    ProviderEvent,
    ReasoningDelta,
    StreamError,
    TextDelta,
    ToolArgumentsDelta,
    ToolCallReady,
    ToolCallStarted,
    Usage,
)
from tests.helpers.fake_openai import FakeOpenAI
from tests.helpers.server_shapes import SHAPES


@dataclass
class Answer:
    """What a user ends up with: the text, the reasoning, the calls and why it stopped."""

    text: str
    reasoning: str
    calls: list[tuple[str, str]]
    call_ids: list[str]
    usage: list[Usage]
    finish: str


async def read_answer(client: openai.AsyncOpenAI) -> Answer:
    events = [
        event
        async for event in stream_chat_completion(
            client, model="any", messages=[{"role": "user", "content": "hi"}]
        )
    ]
    assert_well_formed(events)
    ready = [event for event in events if isinstance(event, ToolCallReady)]
    last = events[-1]
    assert isinstance(last, Finished), last
    return Answer(
        text="".join(e.text for e in events if isinstance(e, TextDelta)),
        reasoning="".join(e.text for e in events if isinstance(e, ReasoningDelta)),
        calls=[(call.name, call.arguments) for call in ready],
        call_ids=[call.call_id for call in ready],
        usage=[e for e in events if isinstance(e, Usage)],
        finish=last.reason,
    )


def assert_well_formed(events: list[ProviderEvent]) -> None:
    """Each call starts once, streams exactly its arguments, and is ready under the same id."""
    started = {e.index: e for e in events if isinstance(e, ToolCallStarted)}
    assert len(started) == len([e for e in events if isinstance(e, ToolCallStarted)])
    streamed: dict[int, str] = {}
    for event in events:
        if isinstance(event, ToolArgumentsDelta):
            assert event.index in started, "arguments before their call started"
            streamed[event.index] = streamed.get(event.index, "") + event.delta
    ready = [e for e in events if isinstance(e, ToolCallReady)]
    assert sorted(r.index for r in ready) == sorted(started)
    for call in ready:
        assert (call.call_id, call.name) == (started[call.index].call_id, started[call.index].name)
        assert call.call_id
        assert streamed.get(call.index, "") == call.arguments
    assert len({call.call_id for call in ready}) == len(ready)
    assert not [e for e in events if isinstance(e, StreamError)]


def is_json(text: str) -> bool:
    try:
        json.loads(text)
    except json.JSONDecodeError:
        return False
    return True


@pytest.mark.parametrize("shape", list(SHAPES))
async def test_each_shape_is_read_as_its_answer(
    shape: str, fake_openai: FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    expected = SHAPES[shape].answer
    fake_openai.queue(SHAPES[shape].script())

    answer = await read_answer(openai_client)

    assert fake_openai.requests[0]["stream"] is True
    assert answer.text == expected["text"]
    assert answer.reasoning == expected["reasoning"]
    calls = expected["calls"]
    assert answer.calls == [(call["name"], call["arguments"]) for call in calls]
    # The server's own ids, or (for a server that sends none) ids of ours.
    for call_id, call in zip(answer.call_ids, calls, strict=True):
        if "id" in call:
            assert call_id == call["id"]
        else:
            assert call_id.startswith(call["id_prefix"])
    # Arguments that are not JSON arrive intact: the registry rejects them and tells the model.
    assert [is_json(arguments) for _, arguments in answer.calls] == [
        call["arguments_are_json"] for call in calls
    ]
    assert answer.usage == [Usage(**usage) for usage in expected["usage"]]
    assert answer.finish == expected["finish"]
