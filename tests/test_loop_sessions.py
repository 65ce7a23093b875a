"""The Responses API session in the tool loop: what each model call is sent, stored or not."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from conversations.streaming.events import (
    Finished,
    ProviderEvent,
    ResponseDone,
    StreamError,
    TextDelta,
    ToolCallReady,
)
from conversations.streaming.loop import LoopOutcome, ResponsesSession, run_tool_loop
from conversations.streaming.tools import Tool, Toolbox
from tests.helpers.scripted import Log, call

INPUT = [{"role": "user", "content": "2+3?"}]
CALL_ITEM = {
    "type": "function_call",
    "call_id": "call_0",
    "name": "add",
    "arguments": '{"a": 2, "b": 3}',
}
REASONING_ITEM = {"type": "reasoning", "summary": [], "encrypted_content": "gAAAA-secret"}


def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


TOOLS = Toolbox([Tool.from_function(add)])
FLAT_ADD = {
    "type": "function",
    "name": "add",
    "description": "Add two numbers.",
    "parameters": TOOLS.chat_completions_schema()[0]["function"]["parameters"],
    "strict": False,
}


class ScriptedResponses:
    """Stands in for `stream_response`: answers each call with the next list of events."""

    def __init__(self, *steps: list[ProviderEvent]) -> None:
        self.remaining = list(steps)
        self.requests: list[dict[str, Any]] = []

    async def __call__(self, **request: Any) -> AsyncIterator[ProviderEvent]:
        self.requests.append({**request, "input": list(request["input"])})
        for event in self.remaining.pop(0):
            yield event


def tool_step(response_id: str) -> list[ProviderEvent]:
    return [
        *call(0, "add", {"a": 2, "b": 3}),
        ResponseDone(response_id, [REASONING_ITEM, CALL_ITEM]),
        Finished("tool_calls"),
    ]


def answer(response_id: str) -> list[ProviderEvent]:
    return [TextDelta("5."), ResponseDone(response_id, []), Finished("stop")]


async def run(session: ResponsesSession, log: Log | None = None) -> LoopOutcome:
    return await run_tool_loop(session=session, toolbox=TOOLS, observer=log or Log(), max_steps=8)


async def test_stored_responses_continue_by_id_with_only_the_tool_outputs() -> None:
    model = ScriptedResponses(tool_step("resp_1"), answer("resp_2"))
    session = ResponsesSession(
        model, instructions="Be brief.", input=INPUT, previous_response_id="resp_0", store=True
    )
    log = Log()

    outcome = await run(session, log)

    assert outcome == LoopOutcome("complete", steps=2)
    first, second = model.requests
    assert first == {
        "input": INPUT,
        "instructions": "Be brief.",
        "tools": [FLAT_ADD],
        "previous_response_id": "resp_0",
        "store": True,
    }
    assert second == {
        **first,
        "input": [{"type": "function_call_output", "call_id": "call_0", "output": "5"}],
        "previous_response_id": "resp_1",
    }
    assert session.last_response_id == "resp_2"
    assert log.of("text") == [("text", "5.")]


async def test_unstored_responses_replay_everything_including_the_models_own_output() -> None:
    model = ScriptedResponses(tool_step("resp_1"), tool_step("resp_2"), answer("resp_3"))
    session = ResponsesSession(
        model, instructions=None, input=INPUT, previous_response_id="resp_0", store=False
    )

    outcome = await run(session)

    assert outcome == LoopOutcome("complete", steps=3)
    output = {"type": "function_call_output", "call_id": "call_0", "output": "5"}
    assert [request["previous_response_id"] for request in model.requests] == [None] * 3
    assert [request["store"] for request in model.requests] == [False] * 3
    assert model.requests[1]["input"] == [*INPUT, REASONING_ITEM, CALL_ITEM, output]
    assert model.requests[2]["input"] == [
        *INPUT,
        REASONING_ITEM,
        CALL_ITEM,
        output,
        REASONING_ITEM,
        CALL_ITEM,
        output,
    ]


async def test_the_finished_response_is_kept_by_the_session_not_passed_on() -> None:
    model = ScriptedResponses(answer("resp_9"))
    session = ResponsesSession(
        model, instructions=None, input=INPUT, previous_response_id=None, store=True
    )

    events = [event async for event in session.stream([])]

    assert events == [TextDelta("5."), Finished("stop")]
    assert model.requests[0]["tools"] == []
    assert (session.last_response_id, session.last_output) == ("resp_9", [])


async def test_a_call_that_ended_without_a_response_replays_no_stale_output() -> None:
    model = ScriptedResponses(tool_step("resp_1"), [StreamError("cut")])
    session = ResponsesSession(
        model, instructions=None, input=INPUT, previous_response_id=None, store=False
    )
    async for _ in session.stream([]):
        pass
    async for _ in session.stream([]):
        pass
    ready = ToolCallReady(0, "call_0", "add", "{}")

    session.add_step("", [ready], ["late"])

    assert session.input == [
        *INPUT,
        {"type": "function_call_output", "call_id": "call_0", "output": "late"},
    ]
