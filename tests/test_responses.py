"""The Responses API adapter, driven by the real openai SDK against the loopback server.

What it does as the other adapter does is tested once for both, in tests/test_adapters.py.
"""

from __future__ import annotations

import json
import urllib.request
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
    Usage,
)
from conversations.streaming.responses import (
    chat_messages_to_input,
    function_call_outputs,
    responses_tools,
)
from tests.helpers.adapters import INPUT, RESPONSES, of_type, text_of
from tests.helpers.fake_openai import (
    ErrorResponse,
    FakeOpenAI,
    ResponseEvents,
    error,
    response_failed,
    response_incomplete,
    response_text_stream,
    response_tool_calls_stream,
    sse,
)

PARAMETERS = {
    "type": "object",
    "properties": {"expression": {"type": "string"}},
    "required": ["expression"],
}
DESCRIPTION = "Evaluate an arithmetic expression."
CALCULATOR = {
    "type": "function",
    "function": {"name": "calculator", "description": DESCRIPTION, "parameters": PARAMETERS},
}
FLAT_CALCULATOR = {
    "type": "function",
    "name": "calculator",
    "description": DESCRIPTION,
    "parameters": PARAMETERS,
    "strict": False,
}


collect = RESPONSES.collect


def response_id_of(script: list[dict[str, Any]]) -> str:
    return str(script[0]["response"]["id"])


def call_ids_of(script: list[dict[str, Any]]) -> list[str]:
    return [
        event["item"]["call_id"]
        for event in script
        if event["type"] == "response.output_item.added"
        and event["item"]["type"] == "function_call"
    ]


async def test_text_streams_in_deltas_then_the_response_usage_and_finish(
    fake_openai: FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    answer = "The quick brown fox jumps over the lazy dog."
    script = response_text_stream(answer, usage=(7, 9))
    fake_openai.queue(sse(script))

    events = await collect(openai_client, instructions="Be brief.", max_output_tokens=50)

    assert len(of_type(events, TextDelta)) >= 5
    assert text_of(events) == answer
    done, usage, finished = events[-3:]
    assert isinstance(done, ResponseDone)
    assert done.response_id == response_id_of(script)
    [message] = done.output
    assert message["type"] == "message" and message["role"] == "assistant"
    assert message["content"][0]["text"] == answer
    assert (usage, finished) == (Usage(7, 9, 16), Finished("stop"))
    [request] = fake_openai.requests
    assert request == {
        "model": "fake-model",
        "input": INPUT,
        "instructions": "Be brief.",
        "max_output_tokens": 50,
        "store": True,
        "stream": True,
    }


async def test_one_function_call_streams_its_arguments_and_is_ready_at_the_end(
    fake_openai: FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    arguments = json.dumps({"expression": "17 * 23"})
    script = response_tool_calls_stream([("calculator", arguments)])
    fake_openai.queue(sse(script))

    events = await collect(openai_client, tools=[FLAT_CALCULATOR])

    [call_id] = call_ids_of(script)
    assert events[0] == ToolCallStarted(0, call_id, "calculator")
    deltas = of_type(events, ToolArgumentsDelta)
    assert len(deltas) > 1
    assert "".join(delta.delta for delta in deltas) == arguments
    ready, done, usage, finished = events[-4:]
    assert ready == ToolCallReady(0, call_id, "calculator", arguments)
    assert isinstance(done, ResponseDone)
    assert done.output[0]["type"] == "function_call"
    assert done.output[0]["call_id"] == call_id
    assert (usage, finished) == (Usage(10, 20, 30), Finished("tool_calls"))
    assert fake_openai.requests[0]["tools"] == [FLAT_CALCULATOR]


@pytest.mark.parametrize("interleave", [False, True])
async def test_parallel_calls_assemble_separately(
    fake_openai: FakeOpenAI, openai_client: openai.AsyncOpenAI, interleave: bool
) -> None:
    calls = [
        ("calculator", json.dumps({"expression": "17*23"})),
        ("current_time", json.dumps({"timezone": "Asia/Tokyo"})),
    ]
    script = response_tool_calls_stream(calls, text_before="Two things.", interleave=interleave)
    fake_openai.queue(sse(script))

    events = await collect(openai_client)

    assert text_of(events) == "Two things."
    started = of_type(events, ToolCallStarted)
    assert [(s.index, s.call_id, s.name) for s in started] == [
        (0, call_ids_of(script)[0], "calculator"),
        (1, call_ids_of(script)[1], "current_time"),
    ]
    ready = of_type(events, ToolCallReady)
    assert [(r.index, r.call_id, r.name, r.arguments) for r in ready] == [
        (s.index, s.call_id, s.name, arguments)
        for s, (_, arguments) in zip(started, calls, strict=True)
    ]
    for index, (_, arguments) in enumerate(calls):
        deltas = [d.delta for d in of_type(events, ToolArgumentsDelta) if d.index == index]
        assert "".join(deltas) == arguments
    done = of_type(events, ResponseDone)[0]
    assert [item["type"] for item in done.output] == ["message", "function_call", "function_call"]
    assert events[-1] == Finished("tool_calls")


async def test_arguments_sent_only_whole_still_reach_the_card(
    fake_openai: FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    arguments = json.dumps({"expression": "2+2"})
    script = response_tool_calls_stream([("calculator", arguments)])
    fake_openai.queue(
        sse([e for e in script if e["type"] != "response.function_call_arguments.delta"])
    )

    events = await collect(openai_client)

    [call_id] = call_ids_of(script)
    assert of_type(events, ToolArgumentsDelta) == [ToolArgumentsDelta(0, arguments)]
    assert of_type(events, ToolCallReady) == [ToolCallReady(0, call_id, "calculator", arguments)]


async def test_a_continuation_sends_the_previous_response_id_and_the_outputs(
    fake_openai: FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    first = response_tool_calls_stream([("calculator", '{"expression": "17*23"}')])
    fake_openai.queue(sse(first))
    fake_openai.queue(sse(response_text_stream("17*23 is 391.")))
    tools = responses_tools([CALCULATOR])

    events = await collect(openai_client, tools=tools)
    [done] = of_type(events, ResponseDone)
    [call] = of_type(events, ToolCallReady)
    outputs = function_call_outputs([(call.call_id, "391")])
    answer = await collect(
        openai_client, input=outputs, tools=tools, previous_response_id=done.response_id
    )

    assert text_of(answer) == "17*23 is 391."
    assert answer[-1] == Finished("stop")
    second = fake_openai.requests[1]
    assert second["previous_response_id"] == response_id_of(first)
    assert second["input"] == [
        {"type": "function_call_output", "call_id": call_ids_of(first)[0], "output": "391"}
    ]
    assert second["tools"] == [FLAT_CALCULATOR]
    assert second["store"] is True
    assert "include" not in second


async def test_without_store_the_whole_input_is_replayed_with_encrypted_reasoning(
    fake_openai: FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    first = response_tool_calls_stream(
        [("calculator", '{"expression": "17*23"}')],
        reasoning=["Multiplying."],
        encrypted_reasoning=True,
    )
    fake_openai.queue(sse(first))
    fake_openai.queue(sse(response_text_stream("391.")))

    events = await collect(openai_client, store=False)
    [done] = of_type(events, ResponseDone)
    [call] = of_type(events, ToolCallReady)
    replay = [*INPUT, *done.output, *function_call_outputs([(call.call_id, "391")])]
    answer = await collect(openai_client, input=replay, store=False)

    assert text_of(answer) == "391."
    reasoning, function_call = done.output
    assert reasoning["type"] == "reasoning"
    assert reasoning["encrypted_content"].startswith("gAAAA")
    assert reasoning["summary"] == [{"type": "summary_text", "text": "Multiplying."}]
    assert function_call["call_id"] == call.call_id
    for request in fake_openai.requests:
        assert request["store"] is False
        assert request["include"] == ["reasoning.encrypted_content"]
        assert "previous_response_id" not in request
    assert fake_openai.requests[1]["input"] == replay
    assert replay[1]["encrypted_content"] == reasoning["encrypted_content"]
    assert replay[-1] == {"type": "function_call_output", "call_id": call.call_id, "output": "391"}


async def test_a_reasoning_summary_streams_as_reasoning_apart_from_the_text(
    fake_openai: FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    parts = ["**Reading the question**\nA product.", "**Computing**\n17*23 = 391."]
    fake_openai.queue(sse(response_text_stream("391.", reasoning=parts)))

    events = await collect(openai_client)

    reasoning = "".join(event.text for event in of_type(events, ReasoningDelta))
    assert reasoning == "\n\n".join(parts)
    assert text_of(events) == "391."
    assert events.index(of_type(events, ReasoningDelta)[-1]) < events.index(
        of_type(events, TextDelta)[0]
    )


async def test_raw_reasoning_text_streams_as_reasoning(
    fake_openai: FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    response = ResponseEvents()
    response.reasoning_text("The user wants a product. 17*23 = 391.")
    response.message("391.")
    fake_openai.queue(sse(response.completed()))

    events = await collect(openai_client)

    reasoning = "".join(event.text for event in of_type(events, ReasoningDelta))
    assert reasoning == "The user wants a product. 17*23 = 391."
    assert text_of(events) == "391."


async def test_an_incomplete_response_keeps_its_text_and_says_why(
    fake_openai: FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    script = response_incomplete("The answer begins and then", usage=(5, 50))
    fake_openai.queue(sse(script))

    events = await collect(openai_client, max_output_tokens=50)

    assert text_of(events) == "The answer begins and then"
    assert not of_type(events, StreamError)
    done, usage, finished = events[-3:]
    assert isinstance(done, ResponseDone) and done.response_id == response_id_of(script)
    assert (usage, finished) == (Usage(5, 50, 55), Finished("max_output_tokens"))


async def test_a_completed_event_with_an_incomplete_response_says_why_too(
    fake_openai: FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    script = response_incomplete("Cut", usage=(5, 50), event="response.completed")
    fake_openai.queue(sse(script))

    events = await collect(openai_client, max_output_tokens=50)

    assert text_of(events) == "Cut"
    assert events[-2:] == [Usage(5, 50, 55), Finished("max_output_tokens")]


async def test_a_server_without_the_responses_api_suggests_chat_completions(
    fake_openai: FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    # FastAPI's answer to a route it does not have (vLLM, LiteLLM, llama.cpp's Python server).
    fake_openai.queue(ErrorResponse(404, {"detail": "Not Found"}))
    fake_openai.queue(error(404, "The model `gpt-9` does not exist."))

    [no_route] = await collect(openai_client)
    [no_model] = await collect(openai_client)

    assert isinstance(no_route, StreamError)
    assert no_route.message == (
        "The model server answered 404. This server may not offer the Responses API: switch "
        "the conversation to Chat Completions."
    )
    # OpenAI's 404 for an unknown model is about the model, not the API.
    assert isinstance(no_model, StreamError)
    assert no_model.message == "The model server answered 404: The model `gpt-9` does not exist."


async def test_a_failed_response_keeps_the_text_and_errors(
    fake_openai: FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    fake_openai.queue(sse(response_failed("The engine broke down.", text_before="Let me")))

    events = await collect(openai_client)

    assert text_of(events) == "Let me"
    assert events[-1] == StreamError(
        "The model failed: The engine broke down.", {"code": "server_error"}
    )
    assert not of_type(events, Finished) and not of_type(events, ResponseDone)


async def test_an_error_event_ends_the_stream_with_its_message(
    fake_openai: FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    response = ResponseEvents()
    response.message("Half an")
    script = response.error("Rate limit reached.", "rate_limit_exceeded")
    # A closing event after the error must not turn it into a success.
    script.append({**response.response("completed"), "type": "response.completed"})
    fake_openai.queue(sse(script))

    events = await collect(openai_client)

    assert text_of(events) == "Half an"
    assert events[-1] == StreamError(
        "The model server reported an error: Rate limit reached.", {"code": "rate_limit_exceeded"}
    )
    assert not of_type(events, Finished)


def test_the_fake_sends_named_events_without_done(fake_openai: FakeOpenAI) -> None:
    fake_openai.queue(sse(response_text_stream("Hi.")))
    request = urllib.request.Request(
        f"{fake_openai.base_url}/responses",
        data=json.dumps({"model": "fake-model", "input": "hi", "stream": True}).encode(),
        headers={"Content-Type": "application/json"},
    )

    with urllib.request.urlopen(request, timeout=5) as answer:
        body = answer.read().decode()

    blocks = body.strip().split("\n\n")
    assert blocks[0].startswith('event: response.created\ndata: {"type": "response.created"')
    assert blocks[-1].startswith("event: response.completed\ndata: ")
    assert [json.loads(b.split("data: ", 1)[1])["sequence_number"] for b in blocks] == list(
        range(len(blocks))
    )
    assert "[DONE]" not in body


def test_chat_tools_become_flat_function_tools() -> None:
    built_in = {"type": "web_search"}

    assert responses_tools([CALCULATOR, built_in]) == [FLAT_CALCULATOR, built_in]
    assert responses_tools([{"type": "function", "function": {"name": "now"}}]) == [
        {
            "type": "function",
            "name": "now",
            "parameters": {"type": "object", "properties": {}},
            "strict": False,
        }
    ]


def test_a_chat_history_becomes_instructions_and_input_items() -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is 17*23, and the time in Tokyo?"},
        {
            "role": "assistant",
            "content": "Let me check.",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "calculator", "arguments": '{"expression": "17*23"}'},
                },
                {
                    "id": "call_2",
                    "type": "function",
                    "function": {"name": "current_time", "arguments": '{"timezone": "Asia/Tokyo"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "391"},
        {"role": "tool", "tool_call_id": "call_2", "content": "09:00"},
        {"role": "assistant", "content": "391, and it is 09:00 in Tokyo."},
        {"role": "user", "content": [{"type": "text", "text": "Thanks!"}]},
    ]

    instructions, items = chat_messages_to_input(messages)

    assert instructions == "Be brief."
    assert items == [
        {"role": "user", "content": "What is 17*23, and the time in Tokyo?"},
        {"role": "assistant", "content": "Let me check."},
        {
            "type": "function_call",
            "call_id": "call_1",
            "name": "calculator",
            "arguments": '{"expression": "17*23"}',
        },
        {
            "type": "function_call",
            "call_id": "call_2",
            "name": "current_time",
            "arguments": '{"timezone": "Asia/Tokyo"}',
        },
        {"type": "function_call_output", "call_id": "call_1", "output": "391"},
        {"type": "function_call_output", "call_id": "call_2", "output": "09:00"},
        {"role": "assistant", "content": "391, and it is 09:00 in Tokyo."},
        {"role": "user", "content": "Thanks!"},
    ]


def test_a_history_without_a_system_message_has_no_instructions() -> None:
    tool_only = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "now", "arguments": "{}"}}
        ],
    }

    instructions, items = chat_messages_to_input([{"role": "user", "content": "hi"}, tool_only])

    assert instructions is None
    assert items == [
        {"role": "user", "content": "hi"},
        {"type": "function_call", "call_id": "call_1", "name": "now", "arguments": "{}"},
    ]


def test_function_call_outputs_answer_each_call() -> None:
    assert function_call_outputs([("call_1", "391"), ("call_2", '{"error": "bad zone"}')]) == [
        {"type": "function_call_output", "call_id": "call_1", "output": "391"},
        {"type": "function_call_output", "call_id": "call_2", "output": '{"error": "bad zone"}'},
    ]
