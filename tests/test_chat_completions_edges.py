"""The Chat Completions adapter at its edges: odd bodies, broken streams, calls told apart."""

from __future__ import annotations

from typing import Any, cast

import openai
import pytest

from conversations.streaming.chat_completions import ENDED_EARLY
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
from tests.helpers.adapters import CHAT_COMPLETIONS, of_type, text_of
from tests.helpers.fake_openai import (
    Completion,
    ErrorResponse,
    FakeOpenAI,
    error,
    json_body,
    sse,
    text_stream,
)

collect = CHAT_COMPLETIONS.collect


def ready_calls(events: list[ProviderEvent]) -> list[tuple[int, str, str]]:
    return [(r.index, r.name, r.arguments) for r in of_type(events, ToolCallReady)]


def calls_stream(*deltas: dict[str, Any], finish_reason: str = "tool_calls") -> list[Any]:
    """One chunk per tool-call delta, as the server sent them, then the finish."""
    completion = Completion()
    chunks = [completion.chunk({"role": "assistant", "tool_calls": [deltas[0]]})]
    chunks += [completion.chunk({"tool_calls": [delta]}) for delta in deltas[1:]]
    return [*chunks, completion.chunk({}, finish_reason)]


async def test_a_json_body_with_a_charset_is_read_as_the_answer(
    fake_openai: FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    body = Completion().whole({"role": "assistant", "content": "Hello from a plain body."})
    fake_openai.queue(json_body(body, content_type="application/json; charset=utf-8"))

    events = await collect(openai_client)

    assert text_of(events) == "Hello from a plain body."
    assert of_type(events, Usage) == [Usage(10, 20, 30)]
    assert events[-1] == Finished("stop")


async def test_a_stream_cut_midway_says_the_connection_broke_not_that_it_was_unreachable(
    fake_openai: FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    fake_openai.queue(sse(text_stream("one two three four"), cut_after=3))

    events = await collect(openai_client)

    assert text_of(events) == "one two"
    error_event = events[-1]
    assert isinstance(error_event, StreamError)
    # The reason is httpx's, the cause of the SDK's own "Connection error.".
    assert error_event.message == (
        "The connection to the model server broke off: peer closed connection without sending"
        " complete message body (incomplete chunked read)"
    )
    assert error_event.details == {"kind": "connection", "midway": True}


async def test_an_error_status_without_a_message_still_names_the_status(
    fake_openai: FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    fake_openai.queue(error(503, ""))

    events = await collect(openai_client)

    assert events == [StreamError("The model server answered 503.", {"status_code": 503})]


async def test_a_long_error_message_is_cut_to_500_characters(
    fake_openai: FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    fake_openai.queue(error(400, "  " + "x" * 600 + "  "))

    [event] = await collect(openai_client)

    assert isinstance(event, StreamError)
    assert event.message == "The model server answered 400: " + "x" * 500


@pytest.mark.parametrize("ending", ["cut", "no finish reason"])
async def test_text_held_back_for_a_possible_tag_is_kept_when_the_stream_breaks(
    fake_openai: FakeOpenAI, openai_client: openai.AsyncOpenAI, ending: str
) -> None:
    completion = Completion()
    chunks = [
        completion.chunk({"role": "assistant", "content": ""}),
        completion.chunk({"content": "Is 2 "}),
        completion.chunk({"content": "<"}),
    ]
    fake_openai.queue(sse(chunks, cut_after=3) if ending == "cut" else sse(chunks))

    events = await collect(openai_client)

    assert text_of(events) == "Is 2 <"
    assert isinstance(events[-1], StreamError)
    if ending == "no finish reason":
        assert events[-1] == StreamError(ENDED_EARLY)


@pytest.mark.parametrize("ending", ["cut", "no finish reason"])
async def test_half_a_tagged_tool_call_at_a_break_is_not_announced(
    fake_openai: FakeOpenAI, openai_client: openai.AsyncOpenAI, ending: str
) -> None:
    completion = Completion()
    chunks = [
        completion.chunk({"role": "assistant", "content": "Let me check. "}),
        completion.chunk({"content": '<tool_call>{"name": "calculator", "argum'}),
    ]
    fake_openai.queue(sse(chunks, cut_after=2) if ending == "cut" else sse(chunks))

    events = await collect(openai_client)

    assert text_of(events) == "Let me check. "
    assert not of_type(events, ToolCallStarted)
    assert isinstance(events[-1], StreamError)


async def test_the_same_tool_called_twice_without_ids_or_indexes_is_two_calls(
    fake_openai: FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    first = {"function": {"name": "calculator", "arguments": '{"expression": '}}
    rest = {"function": {"arguments": '"1+1"}'}}
    second = {"function": {"name": "calculator", "arguments": '{"expression": "2+2"}'}}
    fake_openai.queue(sse(calls_stream(first, rest, second, finish_reason="stop")))

    events = await collect(openai_client)

    assert ready_calls(events) == [
        (0, "calculator", '{"expression": "1+1"}'),
        (1, "calculator", '{"expression": "2+2"}'),
    ]
    started = of_type(events, ToolCallStarted)
    assert len({s.call_id for s in started}) == 2
    assert events[-1] == Finished("tool_calls")


async def test_a_name_repeated_on_every_fragment_continues_the_same_call(
    fake_openai: FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    fragments = ['{"expres', 'sion": ', '"3*3"}']
    deltas = [{"function": {"name": "calculator", "arguments": part}} for part in fragments]
    fake_openai.queue(sse(calls_stream(*deltas)))

    events = await collect(openai_client)

    assert ready_calls(events) == [(0, "calculator", '{"expression": "3*3"}')]
    deltas_seen = [d.delta for d in of_type(events, ToolArgumentsDelta)]
    assert deltas_seen == fragments


async def test_arguments_before_the_name_are_announced_with_the_call(
    fake_openai: FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    fake_openai.queue(
        sse(
            calls_stream(
                {"index": 0, "id": "call_x", "function": {"arguments": '{"expression": '}},
                {"index": 0, "function": {"name": "calculator", "arguments": '"4"'}},
                {"index": 0, "function": {"arguments": "}"}},
            )
        )
    )

    events = await collect(openai_client)

    assert events == [
        ToolCallStarted(0, "call_x", "calculator"),
        ToolArgumentsDelta(0, '{"expression": "4"'),
        ToolArgumentsDelta(0, "}"),
        ToolCallReady(0, "call_x", "calculator", '{"expression": "4"}'),
        Finished("tool_calls"),
    ]


async def test_an_id_arriving_after_the_call_started_does_not_change_it(
    fake_openai: FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    fake_openai.queue(
        sse(
            calls_stream(
                {"index": 0, "function": {"name": "calculator", "arguments": '{"expression"'}},
                {"index": 0, "id": "call_late", "function": {"arguments": ': "5"}'}},
            )
        )
    )

    events = await collect(openai_client)

    [started] = of_type(events, ToolCallStarted)
    assert started.call_id.startswith("call_") and started.call_id != "call_late"
    assert len(started.call_id) == len("call_") + 24
    assert of_type(events, ToolCallReady) == [
        ToolCallReady(0, started.call_id, "calculator", '{"expression": "5"}')
    ]


async def test_only_the_first_choice_is_the_answer(
    fake_openai: FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    completion = Completion()
    chunk = completion.chunk({"content": "first"})
    chunk["choices"] = [
        {"index": 1, "delta": {"content": "second choice"}, "finish_reason": None},
        *chunk["choices"],
        "not a choice",
    ]
    fake_openai.queue(sse([chunk, completion.chunk({}, "stop")]))

    events = await collect(openai_client)

    assert events == [TextDelta("first"), Finished("stop")]


@pytest.mark.parametrize(
    ("counts", "usage"),
    [
        ({"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 9}, Usage(3, 4, 9)),
        ({"completion_tokens": 4}, Usage(0, 4, 4)),
        ({"prompt_tokens": 3, "completion_tokens": None}, Usage(3, 0, 3)),
    ],
)
async def test_usage_takes_the_servers_counts_and_zero_for_the_missing(
    fake_openai: FakeOpenAI, openai_client: openai.AsyncOpenAI, counts: dict[str, Any], usage: Usage
) -> None:
    chunk = {**Completion().usage(0, 0), "usage": counts}
    fake_openai.queue(sse([*text_stream("Hi.", usage=None), chunk]))

    events = await collect(openai_client)

    assert events[-2:] == [usage, Finished("stop")]


async def test_an_error_body_that_is_plain_text_is_shown(
    fake_openai: FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    fake_openai.queue(ErrorResponse(502, cast(dict[str, Any], "Bad Gateway")))

    events = await collect(openai_client)

    assert events == [
        StreamError("The model server answered 502: Bad Gateway", {"status_code": 502})
    ]


async def test_a_finish_reason_other_than_stop_is_passed_on(
    fake_openai: FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    fake_openai.queue(sse(text_stream("Once upon a", finish_reason="length", usage=None)))

    events = await collect(openai_client)

    assert text_of(events) == "Once upon a"
    assert events[-1] == Finished("length")


async def test_interleaved_calls_told_apart_by_id_alone(
    fake_openai: FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    # A gateway that repeats each call's id on its fragments but sends no index.
    fake_openai.queue(
        sse(
            calls_stream(
                {"id": "call_a", "function": {"name": "calculator", "arguments": ""}},
                {"id": "call_b", "function": {"name": "current_time", "arguments": ""}},
                {"id": "call_a", "function": {"arguments": '{"expression": "1"}'}},
                {"id": "call_b", "function": {"arguments": '{"timezone": "UTC"}'}},
            )
        )
    )

    events = await collect(openai_client)

    assert of_type(events, ToolCallReady) == [
        ToolCallReady(0, "call_a", "calculator", '{"expression": "1"}'),
        ToolCallReady(1, "call_b", "current_time", '{"timezone": "UTC"}'),
    ]


async def test_a_fragment_whose_function_is_null_is_skipped_over(
    fake_openai: FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    fake_openai.queue(
        sse(
            calls_stream(
                {"index": 0, "id": "call_a", "function": {"name": "calculator", "arguments": ""}},
                {"index": 0, "function": None},
                {"index": 0, "function": {"arguments": '{"expression": "1"}'}},
            )
        )
    )

    events = await collect(openai_client)

    assert of_type(events, ToolCallReady) == [
        ToolCallReady(0, "call_a", "calculator", '{"expression": "1"}')
    ]


async def test_a_json_body_with_two_broken_calls_of_one_tool_keeps_them_apart(
    fake_openai: FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    broken = {"type": "function", "function": {"name": "calculator", "arguments": '{"e'}}
    message = {"role": "assistant", "content": None, "tool_calls": [broken, broken]}
    body = Completion().whole(message, "tool_calls")
    body["choices"].insert(0, "not a choice")
    fake_openai.queue(json_body(body))

    events = await collect(openai_client)

    assert ready_calls(events) == [(0, "calculator", '{"e'), (1, "calculator", '{"e')]


async def test_a_json_body_that_is_not_an_object_is_an_answer_that_ended_early(
    fake_openai: FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    fake_openai.queue(json_body(cast(dict[str, Any], ["not", "an", "object"])))

    events = await collect(openai_client)

    assert events == [StreamError(ENDED_EARLY)]


async def test_a_reasoning_field_that_is_not_text_is_passed_over(
    fake_openai: FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    completion = Completion()
    delta = {"reasoning_content": {"type": "summary"}, "reasoning": "Thinking."}
    fake_openai.queue(sse([completion.chunk(delta), *text_stream("Done.")]))

    events = await collect(openai_client)

    assert [e for e in events if isinstance(e, ReasoningDelta)] == [ReasoningDelta("Thinking.")]
    assert text_of(events) == "Done."


async def test_an_answer_that_is_json_naming_something_stays_text(
    fake_openai: FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    answer = '{"name": "Ada Lovelace", "arguments": {"born": 1815}}'
    fake_openai.queue(sse(text_stream(answer, pieces=1)))

    events = await collect(openai_client)

    assert text_of(events) == answer
    assert not of_type(events, ToolCallStarted)
    assert events[-1] == Finished("stop")
