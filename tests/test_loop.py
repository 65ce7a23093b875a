"""The tool loop with a scripted provider: no Django, no server."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from conversations.streaming.events import (
    Finished,
    ReasoningDelta,
    StreamError,
    TextDelta,
    ToolCallReady,
    ToolCallStarted,
    Usage,
)
from conversations.streaming.loop import ChatCompletionsSession, LoopOutcome, run_tool_loop
from conversations.streaming.tools import Tool, Toolbox, ToolResult
from tests.helpers.scripted import Log, call, scripted


def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


TOOLS = Toolbox([Tool.from_function(add)])


async def test_a_tool_step_then_an_answer() -> None:
    provider = scripted(
        [*call(0, "add", {"a": 2, "b": 3}), Finished("tool_calls")],
        [TextDelta("It is "), TextDelta("5."), Usage(3, 2, 5), Finished("stop")],
    )
    log = Log()
    messages: list[dict[str, Any]] = [{"role": "user", "content": "2+3?"}]

    outcome = await run_tool_loop(
        session=ChatCompletionsSession(provider, messages), toolbox=TOOLS, observer=log, max_steps=8
    )

    assert (outcome.status, outcome.steps) == ("complete", 2)
    assert log.of("finished") == [("finished", 1, 0, True, "5")]
    assert "".join(e[1] for e in log.of("text")) == "It is 5."
    second_call = provider.seen[1]
    assert second_call[1]["tool_calls"][0]["function"] == {
        "name": "add",
        "arguments": '{"a": 2, "b": 3}',
    }
    assert second_call[2] == {"role": "tool", "tool_call_id": "call_0", "content": "5"}


async def test_the_step_cap_stops_a_model_that_never_answers() -> None:
    provider = scripted(*[[*call(0, "add", {"a": 1, "b": 1}), Finished("tool_calls")]] * 3)
    outcome = await run_tool_loop(
        session=ChatCompletionsSession(provider, []), toolbox=TOOLS, observer=Log(), max_steps=3
    )
    assert outcome.status == "step_limit"
    assert "3 model calls" in outcome.error
    assert len(provider.seen) == 3


async def test_a_stream_error_fails_the_turn_after_keeping_text() -> None:
    log = Log()
    provider = scripted([TextDelta("partial"), StreamError("The model server answered 500")])
    outcome = await run_tool_loop(
        session=ChatCompletionsSession(provider, []), toolbox=TOOLS, observer=log, max_steps=8
    )
    assert (outcome.status, outcome.error) == ("failed", "The model server answered 500")
    assert log.of("text") == [("text", "partial")]


async def test_bad_arguments_become_an_error_output_for_the_model() -> None:
    provider = scripted(
        [
            ToolCallStarted(0, "call_0", "add"),
            ToolCallReady(0, "call_0", "add", '{"a": 1, "b": '),
            Finished("tool_calls"),
        ],
        [TextDelta("Sorry."), Finished("stop")],
    )
    log = Log()
    outcome = await run_tool_loop(
        session=ChatCompletionsSession(provider, []), toolbox=TOOLS, observer=log, max_steps=8
    )
    assert outcome.status == "complete"
    [(_, _, _, ok, output)] = log.of("finished")
    assert not ok and "not valid JSON" in output
    assert provider.seen[1][-1]["content"] == output


async def test_calls_in_one_step_run_concurrently_and_report_as_each_ends() -> None:
    release_slow = asyncio.Event()

    async def slow() -> str:
        await release_slow.wait()
        return "slow done"

    async def fast() -> str:
        return "fast done"

    class ReleasingLog(Log):
        async def tool_finished(self, step: int, index: int, result: ToolResult) -> None:
            await super().tool_finished(step, index, result)
            if result.output == "fast done":
                release_slow.set()

    toolbox = Toolbox([Tool.from_function(slow), Tool.from_function(fast)])
    provider = scripted(
        [*call(0, "slow", {}), *call(1, "fast", {}), Finished("tool_calls")],
        [TextDelta("ok"), Finished("stop")],
    )
    log = ReleasingLog()
    async with asyncio.timeout(5):
        outcome = await run_tool_loop(
            session=ChatCompletionsSession(provider, []), toolbox=toolbox, observer=log, max_steps=8
        )
    assert outcome.status == "complete"
    assert [entry[4] for entry in log.of("finished")] == ["fast done", "slow done"]
    # The outputs go back in the order the model made the calls.
    assert [m["tool_call_id"] for m in provider.seen[1][-2:]] == ["call_0", "call_1"]


async def test_cancelling_the_turn_cancels_running_tools() -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def forever() -> str:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "never"

    toolbox = Toolbox([Tool.from_function(forever, timeout=120)])
    provider = scripted([*call(0, "forever", {}), Finished("tool_calls")])
    task = asyncio.create_task(
        run_tool_loop(
            session=ChatCompletionsSession(provider, []),
            toolbox=toolbox,
            observer=Log(),
            max_steps=8,
        )
    )
    await asyncio.wait_for(started.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cancelled.is_set()


async def test_reasoning_is_reported_apart_from_the_answer() -> None:
    log = Log()
    provider = scripted([ReasoningDelta("think "), ReasoningDelta("hard"), TextDelta("42")])
    outcome = await run_tool_loop(
        session=ChatCompletionsSession(provider, []),
        toolbox=TOOLS,
        observer=log,
        max_steps=8,
    )
    assert outcome.status == "complete"
    assert log.of("reasoning") == [("reasoning", "think "), ("reasoning", "hard")]
    assert log.of("text") == [("text", "42")]


async def test_an_answer_cut_at_the_token_limit_says_so() -> None:
    provider = scripted([TextDelta("Once upon a"), Finished("length")])
    outcome = await run_tool_loop(
        session=ChatCompletionsSession(provider, []), toolbox=TOOLS, observer=Log(), max_steps=8
    )
    assert (outcome.status, outcome.error) == (
        "complete",
        "The answer was cut off at the token limit.",
    )


async def test_the_observer_hears_each_step_in_order_and_the_model_is_offered_the_tools() -> None:
    provider = scripted(
        [
            TextDelta("Let me "),
            TextDelta("add."),
            *call(0, "add", {"a": 2, "b": 3}),
            Usage(5, 6, 11),
            Finished("tool_calls"),
        ],
        [ReasoningDelta("Easy."), TextDelta("5."), Usage(7, 1, 8), Finished("stop")],
    )
    log = Log()

    outcome = await run_tool_loop(
        session=ChatCompletionsSession(provider, []), toolbox=TOOLS, observer=log, max_steps=8
    )

    assert outcome == LoopOutcome("complete", steps=2)
    assert log.entries == [
        ("step", 1),
        ("text", "Let me "),
        ("text", "add."),
        ("started", 1, 0, "call_0", "add"),
        ("arguments", 1, 0, '{"a":'),
        ("arguments", 1, 0, ' 2, "b": 3}'),
        ("ready", 1, 0, "call_0", "add", '{"a": 2, "b": 3}'),
        ("usage", 11),
        ("running", 1, 0),
        ("finished", 1, 0, True, "5"),
        ("step", 2),
        ("reasoning", "Easy."),
        ("text", "5."),
        ("usage", 8),
    ]
    assert provider.offered == [TOOLS.chat_completions_schema()] * 2
    assert provider.offered[0][0]["function"]["name"] == "add"
    # The text said before the call goes back with it.
    assert provider.seen[1][0]["content"] == "Let me add."


async def test_a_step_with_calls_and_no_text_sends_no_content() -> None:
    provider = scripted(
        [*call(0, "add", {"a": 1, "b": 1}), Finished("tool_calls")],
        [TextDelta("2"), Finished("stop")],
    )

    await run_tool_loop(
        session=ChatCompletionsSession(provider, []), toolbox=TOOLS, observer=Log(), max_steps=8
    )

    assistant = provider.seen[1][0]
    assert assistant == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_0",
                "type": "function",
                "function": {"name": "add", "arguments": '{"a": 1, "b": 1}'},
            }
        ],
    }


async def test_a_failed_stream_reports_its_step_and_details() -> None:
    provider = scripted(
        [*call(0, "add", {"a": 1, "b": 1}), Finished("tool_calls")],
        [StreamError("The connection broke off", {"kind": "connection"})],
    )
    log = Log()

    outcome = await run_tool_loop(
        session=ChatCompletionsSession(provider, []), toolbox=TOOLS, observer=log, max_steps=8
    )

    assert outcome == LoopOutcome("failed", "The connection broke off", 2, {"kind": "connection"})
    assert log.of("step") == [("step", 1), ("step", 2)]


async def test_the_step_limit_says_how_many_calls_were_made() -> None:
    provider = scripted(*[[*call(0, "add", {"a": 1, "b": 1}), Finished("tool_calls")]] * 2)
    log = Log()

    outcome = await run_tool_loop(
        session=ChatCompletionsSession(provider, []), toolbox=TOOLS, observer=log, max_steps=2
    )

    assert outcome == LoopOutcome(
        "step_limit",
        "Stopped after 2 model calls, the step limit; the answer may be incomplete.",
        2,
    )
    assert log.of("finished") == [("finished", 1, 0, True, "2"), ("finished", 2, 0, True, "2")]


@pytest.mark.parametrize(
    ("reason", "message"),
    [
        ("max_output_tokens", "The answer was cut off at the token limit."),
        ("max_tokens", "The answer was cut off at the token limit."),
        ("content_filter", "The answer was cut off by the provider's content filter."),
        ("stop", ""),
        ("end_turn", ""),
    ],
)
async def test_how_an_answer_ended_is_told(reason: str, message: str) -> None:
    provider = scripted([TextDelta("Some"), Finished(reason)])

    outcome = await run_tool_loop(
        session=ChatCompletionsSession(provider, []), toolbox=TOOLS, observer=Log(), max_steps=8
    )

    assert outcome == LoopOutcome("complete", message, 1)


async def test_calls_cut_at_the_token_limit_still_run() -> None:
    provider = scripted(
        [*call(0, "add", {"a": 4, "b": 4}), Finished("length")],
        [TextDelta("8"), Finished("stop")],
    )
    log = Log()

    outcome = await run_tool_loop(
        session=ChatCompletionsSession(provider, []), toolbox=TOOLS, observer=log, max_steps=8
    )

    assert outcome == LoopOutcome("complete", steps=2)
    assert log.of("finished") == [("finished", 1, 0, True, "8")]
