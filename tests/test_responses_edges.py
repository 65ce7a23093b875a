"""The Responses API adapter at its edges: servers that leave things out, and odd histories."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from conversations.streaming.events import (
    Finished,
    ReasoningDelta,
    ResponseDone,
    StreamError,
    TextDelta,
    ToolArgumentsDelta,
    ToolCallReady,
    ToolCallStarted,
)
from conversations.streaming.responses import (
    chat_messages_to_input,
    responses_tools,
)
from tests.helpers.adapters import RESPONSES, of_type
from tests.helpers.fake_openai import FakeOpenAI, ResponseEvents, response_tool_calls_stream, sse

SEVENTEEN = '{"expression": "17*23"}'


collect = RESPONSES.collect


def without_output(script: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The script with its closing event's `output` emptied, as some servers send it."""
    closing = script[-1]
    return [*script[:-1], {**closing, "response": {**closing["response"], "output": []}}]


async def test_a_closing_event_without_output_falls_back_to_the_streamed_items(
    fake_openai: FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    script = response_tool_calls_stream(
        [("calculator", SEVENTEEN), ("calculator", '{"expression": "1+1"}')], text_before="Hm."
    )
    fake_openai.queue(sse(without_output(script)))

    events = await collect(openai_client)

    ready = of_type(events, ToolCallReady)
    assert [(r.index, r.name, r.arguments) for r in ready] == [
        (0, "calculator", SEVENTEEN),
        (1, "calculator", '{"expression": "1+1"}'),
    ]
    [done] = of_type(events, ResponseDone)
    assert [item["type"] for item in done.output] == ["message", "function_call", "function_call"]
    # Each item exactly as the server sent it, to replay unstored: no empty fields added.
    sent = [e["item"] for e in script if e["type"] == "response.output_item.done"]
    assert done.output == sent
    assert events[-1] == Finished("tool_calls")


async def test_a_call_known_only_from_its_finished_item_still_runs(
    fake_openai: FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    # Only the closing event carries the call: nothing about it streamed.
    script = response_tool_calls_stream([("calculator", SEVENTEEN)])
    kept = [e for e in script if "function_call" not in json.dumps(e.get("item", {}))]
    kept = [e for e in kept if not e["type"].startswith("response.function_call_arguments")]
    fake_openai.queue(sse(kept))

    events = await collect(openai_client)

    [started] = of_type(events, ToolCallStarted)
    assert (started.index, started.name) == (0, "calculator")
    assert of_type(events, ToolArgumentsDelta) == [ToolArgumentsDelta(0, SEVENTEEN)]
    assert of_type(events, ToolCallReady) == [
        ToolCallReady(0, started.call_id, "calculator", SEVENTEEN)
    ]


async def test_a_call_without_a_call_id_gets_one(
    fake_openai: FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    script = response_tool_calls_stream([("calculator", SEVENTEEN)])
    for event in script:
        if isinstance(event.get("item"), dict):
            event["item"].pop("call_id", None)
        for item in event.get("response", {}).get("output", []):
            item.pop("call_id", None)
    fake_openai.queue(sse(script))

    events = await collect(openai_client)

    [started] = of_type(events, ToolCallStarted)
    assert started.call_id.startswith("call_") and len(started.call_id) == len("call_") + 24
    assert of_type(events, ToolCallReady) == [
        ToolCallReady(0, started.call_id, "calculator", SEVENTEEN)
    ]


async def test_arguments_deltas_without_an_item_id_follow_the_output_index(
    fake_openai: FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    response = ResponseEvents()
    response.message("Sure.")
    response.function_calls([("calculator", SEVENTEEN)], pieces=3)
    script = response.completed()
    for event in script:
        if event["type"].startswith("response.function_call_arguments"):
            event["item_id"] = ""
    fake_openai.queue(sse(script))

    events = await collect(openai_client)

    deltas = of_type(events, ToolArgumentsDelta)
    assert len(deltas) == 3
    assert {d.index for d in deltas} == {0}
    assert "".join(d.delta for d in deltas) == SEVENTEEN
    assert of_type(events, ToolCallReady)[0].arguments == SEVENTEEN


async def test_final_arguments_that_differ_from_the_deltas_replace_them(
    fake_openai: FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    script = response_tool_calls_stream([("calculator", SEVENTEEN)], pieces=2)
    for event in script:
        if event["type"] == "response.function_call_arguments.delta":
            event["delta"] = event["delta"].replace("17", "71")
    fake_openai.queue(sse(script))

    events = await collect(openai_client)

    assert "".join(d.delta for d in of_type(events, ToolArgumentsDelta)) == SEVENTEEN.replace(
        "17", "71"
    )
    assert of_type(events, ToolCallReady)[0].arguments == SEVENTEEN


async def test_reasoning_parts_are_separated_by_a_blank_line_once_each(
    fake_openai: FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    response = ResponseEvents()
    response.reasoning_summary(["First thought.", "Second thought."], pieces=2)
    response.message("Done.")
    fake_openai.queue(sse(response.completed()))

    events = await collect(openai_client)

    reasoning = [e.text for e in of_type(events, ReasoningDelta)]
    assert reasoning.count("\n\n") == 1
    assert "".join(reasoning) == "First thought.\n\nSecond thought."
    assert "".join(e.text for e in of_type(events, TextDelta)) == "Done."


async def test_a_failure_without_details_still_says_the_model_failed(
    fake_openai: FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    response = ResponseEvents()
    response.emit("response.failed", response=response.response("failed"))
    fake_openai.queue(sse(response.events))

    events = await collect(openai_client)

    assert events == [StreamError("The model failed.")]


async def test_an_error_event_without_a_code_has_no_details(
    fake_openai: FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    fake_openai.queue(sse(ResponseEvents().error("Something odd.")))

    events = await collect(openai_client)

    assert events == [StreamError("The model server reported an error: Something odd.")]


async def test_the_request_carries_instructions_and_a_token_limit_only_when_given(
    fake_openai: FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    for _ in range(2):
        response = ResponseEvents()
        response.message("Hi.")
        fake_openai.queue(sse(response.completed()))

    await collect(openai_client, instructions="Be brief.", max_output_tokens=64, store=True)
    await collect(openai_client)

    given, bare = fake_openai.requests
    assert (given["instructions"], given["max_output_tokens"]) == ("Be brief.", 64)
    assert "include" not in given and "previous_response_id" not in given
    assert "instructions" not in bare and "max_output_tokens" not in bare and "tools" not in bare


def test_developer_messages_join_the_instructions_and_odd_content_is_read_as_text() -> None:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": [{"type": "text", "text": "Use tools."}]},
        {"role": "system", "content": ""},
        {"content": "No role given."},
        {"role": "user", "content": [{"type": "image_url"}, "stray", {"text": "Parts."}]},
        {"role": "user", "content": None},
        {"role": "assistant", "content": ""},
        {
            "role": "assistant",
            "tool_calls": [{"id": "call_1", "function": {"name": "now"}}],
        },
    ]

    instructions, items = chat_messages_to_input(messages)

    assert instructions == "Be brief.\n\nUse tools."
    assert items == [
        {"role": "user", "content": "No role given."},
        {"role": "user", "content": "Parts."},
        {"role": "user", "content": ""},
        {"type": "function_call", "call_id": "call_1", "name": "now", "arguments": ""},
    ]


async def test_an_incomplete_response_without_a_reason_still_ends_as_incomplete(
    fake_openai: FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    response = ResponseEvents()
    response.message("Once upon", status="incomplete")
    script = response.incomplete()
    script[-1]["response"]["incomplete_details"] = None
    fake_openai.queue(sse(script))

    events = await collect(openai_client)

    assert "".join(e.text for e in of_type(events, TextDelta)) == "Once upon"
    assert events[-1] == Finished("incomplete")


def test_tools_already_in_the_flat_shape_or_built_in_pass_through_in_order() -> None:
    built_in = {"type": "web_search"}
    flat = {"type": "function", "name": "now", "parameters": {"type": "object"}}
    nested = {"type": "function", "function": {"name": "add"}}

    assert responses_tools([built_in, flat, nested]) == [
        built_in,
        flat,
        {
            "type": "function",
            "name": "add",
            "parameters": {"type": "object", "properties": {}},
            "strict": False,
        },
    ]


async def test_function_calls_without_item_ids_are_followed_by_output_index(
    fake_openai: FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    script = response_tool_calls_stream(
        [("calculator", SEVENTEEN), ("calculator", '{"expression": "1+1"}')], pieces=2
    )
    for event in script:
        event.pop("item_id", None)
        if isinstance(event.get("item"), dict):
            event["item"].pop("id", None)
        for item in event.get("response", {}).get("output", []):
            item.pop("id", None)
    fake_openai.queue(sse(script))

    events = await collect(openai_client)

    assert [(s.index, s.name) for s in of_type(events, ToolCallStarted)] == [
        (0, "calculator"),
        (1, "calculator"),
    ]
    assert [
        len([d for d in of_type(events, ToolArgumentsDelta) if d.index == i]) for i in (0, 1)
    ] == [2, 2]
    assert [r.arguments for r in of_type(events, ToolCallReady)] == [
        SEVENTEEN,
        '{"expression": "1+1"}',
    ]


async def test_arguments_the_deltas_left_out_arrive_with_the_finished_call(
    fake_openai: FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    script = response_tool_calls_stream([("calculator", SEVENTEEN)], pieces=3)
    last_delta = max(
        i for i, e in enumerate(script) if e["type"] == "response.function_call_arguments.delta"
    )
    fake_openai.queue(sse([*script[:last_delta], *script[last_delta + 1 :]]))

    events = await collect(openai_client)

    deltas = [d.delta for d in of_type(events, ToolArgumentsDelta)]
    assert len(deltas) == 3
    assert "".join(deltas) == SEVENTEEN
    assert of_type(events, ToolCallReady)[0].arguments == SEVENTEEN


@pytest.mark.parametrize("sent", ["the arguments' done event", "deltas only"])
async def test_a_call_streamed_without_its_finished_item_still_has_all_its_arguments(
    fake_openai: FakeOpenAI, openai_client: openai.AsyncOpenAI, sent: str
) -> None:
    script = without_output(response_tool_calls_stream([("calculator", SEVENTEEN)], pieces=3))
    kept = [e for e in script if e["type"] != "response.output_item.done"]
    if sent == "deltas only":
        kept = [e for e in kept if e["type"] != "response.function_call_arguments.done"]
    else:
        last_delta = max(
            i for i, e in enumerate(kept) if e["type"] == "response.function_call_arguments.delta"
        )
        del kept[last_delta]
    fake_openai.queue(sse(kept))

    events = await collect(openai_client)

    assert "".join(d.delta for d in of_type(events, ToolArgumentsDelta)) == SEVENTEEN
    assert of_type(events, ToolCallReady)[0].arguments == SEVENTEEN


async def test_raw_reasoning_from_two_items_is_two_paragraphs(
    fake_openai: FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    response = ResponseEvents()
    response.reasoning_text("First.", pieces=2)
    response.reasoning_text("Second.", pieces=2)
    response.message("Done.")
    fake_openai.queue(sse(response.completed()))

    events = await collect(openai_client)

    assert "".join(e.text for e in of_type(events, ReasoningDelta)) == "First.\n\nSecond."
