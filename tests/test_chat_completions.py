"""The Chat Completions adapter, driven by the real openai SDK against the loopback server.

What it does as the other adapter does is tested once for both, in tests/test_adapters.py.
"""

from __future__ import annotations

import json

import openai

from conversations.streaming.events import (
    Finished,
    StreamError,
    TextDelta,
    ToolArgumentsDelta,
    ToolCallReady,
    ToolCallStarted,
    Usage,
)
from tests.helpers.adapters import CHAT_COMPLETIONS, MESSAGES, of_type, text_of
from tests.helpers.fake_openai import (
    Completion,
    FakeOpenAI,
    sse,
    text_stream,
    tool_calls_stream,
)

CALCULATOR = {
    "type": "function",
    "function": {
        "name": "calculator",
        "description": "Evaluate an arithmetic expression.",
        "parameters": {
            "type": "object",
            "properties": {"expression": {"type": "string"}},
            "required": ["expression"],
        },
    },
}


collect = CHAT_COMPLETIONS.collect


async def test_text_streams_in_deltas_then_usage_and_finish(
    fake_openai: FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    answer = "The quick brown fox jumps over the lazy dog."
    fake_openai.queue(sse(text_stream(answer, usage=(7, 9))))

    events = await collect(openai_client)

    assert len(of_type(events, TextDelta)) >= 5
    assert text_of(events) == answer
    assert events[-2:] == [Usage(7, 9, 16), Finished("stop")]


async def test_the_request_asks_for_a_stream_with_usage_and_sends_the_tools(
    fake_openai: FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    fake_openai.queue(sse(text_stream("Hello.")))
    fake_openai.queue(sse(text_stream("Hello again.")))

    await collect(openai_client, tools=[CALCULATOR], max_tokens=50)
    await collect(openai_client, tools=[])

    with_tools, without_tools = fake_openai.requests
    assert with_tools["model"] == "fake-model"
    assert with_tools["messages"] == MESSAGES
    assert with_tools["stream"] is True
    assert with_tools["stream_options"] == {"include_usage": True}
    assert with_tools["tools"] == [CALCULATOR]
    assert with_tools["max_tokens"] == 50
    assert "tools" not in without_tools
    assert "max_tokens" not in without_tools


async def test_one_tool_call_streams_its_arguments_and_is_ready_at_the_end(
    fake_openai: FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    arguments = json.dumps({"expression": "1234 * 5678"})
    chunks = tool_calls_stream([("calculator", arguments)])
    call_id = chunks[1]["choices"][0]["delta"]["tool_calls"][0]["id"]
    fake_openai.queue(sse(chunks))

    events = await collect(openai_client, tools=[CALCULATOR])

    assert events[0] == ToolCallStarted(0, call_id, "calculator")
    deltas = of_type(events, ToolArgumentsDelta)
    assert len(deltas) > 1
    assert "".join(delta.delta for delta in deltas) == arguments
    assert events[-3:] == [
        Usage(10, 20, 30),
        ToolCallReady(0, call_id, "calculator", arguments),
        Finished("tool_calls"),
    ]


async def test_parallel_calls_interleaved_by_index_assemble_separately(
    fake_openai: FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    calls = [
        ("calculator", json.dumps({"expression": "17*23"})),
        ("current_time", json.dumps({"timezone": "Asia/Tokyo"})),
    ]
    fake_openai.queue(sse(tool_calls_stream(calls, interleave=True)))

    events = await collect(openai_client, tools=[CALCULATOR])

    started = of_type(events, ToolCallStarted)
    assert [(s.index, s.name) for s in started] == [(0, "calculator"), (1, "current_time")]
    assert started[0].call_id != started[1].call_id
    # The fragments really did arrive interleaved.
    order = [delta.index for delta in of_type(events, ToolArgumentsDelta)]
    assert order.index(1) < len(order) - 1 - order[::-1].index(0)
    ready = of_type(events, ToolCallReady)
    assert [(r.index, r.call_id, r.name) for r in ready] == [
        (s.index, s.call_id, s.name) for s in started
    ]
    assert json.loads(ready[0].arguments) == {"expression": "17*23"}
    assert json.loads(ready[1].arguments) == {"timezone": "Asia/Tokyo"}
    assert events[-1] == Finished("tool_calls")


async def test_text_before_a_tool_call_is_streamed_too(
    fake_openai: FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    fake_openai.queue(
        sse(tool_calls_stream([("calculator", '{"expression": "2+2"}')], text_before="Let me see."))
    )

    events = await collect(openai_client, tools=[CALCULATOR])

    assert text_of(events) == "Let me see."
    assert of_type(events, ToolCallReady)[0].arguments == '{"expression": "2+2"}'


async def test_stop_with_tool_calls_is_reported_as_tool_calls(
    fake_openai: FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    fake_openai.queue(
        sse(tool_calls_stream([("calculator", '{"expression": "1+1"}')], finish_reason="stop"))
    )

    events = await collect(openai_client, tools=[CALCULATOR])

    assert len(of_type(events, ToolCallReady)) == 1
    assert events[-1] == Finished("tool_calls")


async def test_arguments_in_the_opening_chunk_and_a_missing_id(
    fake_openai: FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    completion = Completion()
    opening = {"index": 0, "type": "function", "function": {"name": "calculator", "arguments": "{"}}
    rest = {"index": 0, "function": {"arguments": '"expression": "3*3"}'}}
    fake_openai.queue(
        sse(
            [
                completion.chunk({"role": "assistant", "tool_calls": [opening]}),
                completion.chunk({"tool_calls": [rest]}),
                completion.chunk({}, "tool_calls"),
            ]
        )
    )

    events = await collect(openai_client, tools=[CALCULATOR])

    call_id = of_type(events, ToolCallStarted)[0].call_id
    assert call_id.startswith("call_") and len(call_id) > len("call_")
    assert events == [
        ToolCallStarted(0, call_id, "calculator"),
        ToolArgumentsDelta(0, "{"),
        ToolArgumentsDelta(0, '"expression": "3*3"}'),
        ToolCallReady(0, call_id, "calculator", '{"expression": "3*3"}'),
        Finished("tool_calls"),
    ]


async def test_whole_calls_without_their_own_index_stay_apart(
    fake_openai: FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    # Some local servers send each call whole, with no index or the same index for all.
    completion = Completion()
    first = {"id": "call_a", "function": {"name": "calculator", "arguments": '{"expression": "1"}'}}
    second = {"index": 0, "id": "call_b", "function": {"name": "clock", "arguments": "{}"}}
    fake_openai.queue(
        sse(
            [
                completion.chunk({"role": "assistant", "tool_calls": [first]}),
                completion.chunk({"tool_calls": [second]}),
                completion.chunk({}, "stop"),
            ]
        )
    )

    events = await collect(openai_client, tools=[CALCULATOR])

    assert of_type(events, ToolCallReady) == [
        ToolCallReady(0, "call_a", "calculator", '{"expression": "1"}'),
        ToolCallReady(1, "call_b", "clock", "{}"),
    ]
    assert events[-1] == Finished("tool_calls")


async def test_a_chunk_without_choices_first_is_tolerated(
    fake_openai: FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    # Azure OpenAI opens with the prompt's content-filter results and no choices.
    filter_results = {
        "id": "",
        "object": "",
        "created": 0,
        "model": "",
        "choices": [],
        "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {}}],
    }
    fake_openai.queue(sse([filter_results, *text_stream("Still fine.")]))

    events = await collect(openai_client)

    assert text_of(events) == "Still fine."
    assert events[-1] == Finished("stop")


async def test_an_unreachable_server_becomes_a_readable_error() -> None:
    fake = FakeOpenAI().start()
    base_url = fake.base_url
    fake.stop()
    async with openai.AsyncOpenAI(base_url=base_url, api_key="test", max_retries=0) as client:
        events = await collect(client)

    assert len(events) == 1
    assert isinstance(events[0], StreamError)
    assert events[0].message.startswith("Could not reach the model server")


async def test_an_empty_queue_answers_500(openai_client: openai.AsyncOpenAI) -> None:
    events = await collect(openai_client)

    assert isinstance(events[0], StreamError)
    assert "no scripted response" in events[0].message


async def test_the_fake_lists_its_model(openai_client: openai.AsyncOpenAI) -> None:
    models = await openai_client.models.list()

    assert [model.id async for model in models] == ["fake-model"]


def test_the_fake_serves_the_sync_client_too(fake_openai: FakeOpenAI) -> None:
    fake_openai.queue(sse(text_stream("Sync works.")))
    client = openai.OpenAI(base_url=fake_openai.base_url, api_key="test", max_retries=0)

    with client.chat.completions.create(
        model="fake-model", messages=[{"role": "user", "content": "hi"}], stream=True
    ) as chunks:
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

    assert text == "Sync works."
    client.close()
