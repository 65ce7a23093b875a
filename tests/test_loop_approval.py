"""Tools that ask first, in the tool loop with a scripted provider: no Django, no server."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from conversations.streaming.events import Finished, TextDelta, ToolCallReady
from conversations.streaming.loop import ChatCompletionsSession, Decision, run_tool_loop
from conversations.streaming.tools import Tool, Toolbox
from tests.helpers.scripted import Log, call, scripted

ran: list[str] = []


def rename(title: str) -> str:
    """Rename the conversation."""
    ran.append(title)
    return f"renamed to {title}"


def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


TOOLS = Toolbox([Tool.from_function(rename, needs_approval=True), Tool.from_function(add)])


class Approver:
    """Answers every call with `decision` once `release` is set; records what it was asked."""

    def __init__(self, decision: Decision | None) -> None:
        self.decision = decision
        self.release = asyncio.Event()
        self.release.set()
        self.asked: list[tuple[int, int, str]] = []

    async def decide(self, step: int, index: int, call: ToolCallReady) -> Decision:
        self.asked.append((step, index, call.name))
        await self.release.wait()
        if self.decision is None:
            await asyncio.Event().wait()  # nobody ever decides
        assert self.decision is not None
        return self.decision


def rename_then_answer() -> Any:
    return scripted(
        [*call(0, "rename", {"title": "Trip"}), Finished("tool_calls")],
        [TextDelta("Done."), Finished("stop")],
    )


async def run(provider: Any, approver: Any, log: Log, timeout: float = 300.0) -> Any:
    async with asyncio.timeout(5):
        return await run_tool_loop(
            session=ChatCompletionsSession(provider, []),
            toolbox=TOOLS,
            observer=log,
            max_steps=8,
            approver=approver,
            approval_timeout=timeout,
        )


@pytest.fixture(autouse=True)
def nothing_ran() -> None:
    ran.clear()


async def test_an_approved_call_waits_then_runs() -> None:
    provider = rename_then_answer()
    approver = Approver(Decision(approved=True, by="alice"))
    log = Log()

    outcome = await run(provider, approver, log)

    assert outcome.status == "complete"
    assert approver.asked == [(1, 0, "rename")]
    tool_entries = [e for e in log.entries if e[0] in ("awaiting", "running", "finished")]
    assert tool_entries == [
        ("awaiting", 1, 0),
        ("running", 1, 0, "approved", "alice"),
        ("finished", 1, 0, True, "renamed to Trip"),
    ]
    assert ran == ["Trip"]
    assert provider.seen[1][-1]["content"] == "renamed to Trip"


async def test_a_denied_call_does_not_run_and_the_model_hears_why() -> None:
    provider = rename_then_answer()
    log = Log()

    await run(provider, Approver(Decision(approved=False, by="bob", reason="Keep it.")), log)

    assert ran == []
    assert log.of("running") == [] and log.of("finished") == []
    output = "The user denied this tool call: Keep it."
    assert log.of("denied") == [("denied", 1, 0, "denied", "bob", output)]
    assistant, answer = provider.seen[1][-2:]
    assert assistant["tool_calls"][0]["function"]["name"] == "rename"
    assert answer == {"role": "tool", "tool_call_id": "call_0", "content": output}


async def test_a_denial_without_a_reason() -> None:
    provider = rename_then_answer()
    await run(provider, Approver(Decision(approved=False, by="bob")), Log())
    assert provider.seen[1][-1]["content"] == "The user denied this tool call."


async def test_no_decision_in_time_denies_the_call_as_timed_out() -> None:
    provider = rename_then_answer()
    log = Log()

    outcome = await run(provider, Approver(None), log, timeout=0.05)

    assert outcome.status == "complete"
    [(_, _, _, decision, by, output)] = log.of("denied")
    assert (decision, by) == ("timed_out", "")
    assert "no one approved it within 0.05 s" in output
    assert provider.seen[1][-1]["content"] == output
    assert ran == []


async def test_without_an_approver_a_call_that_asks_first_is_denied() -> None:
    provider = rename_then_answer()
    log = Log()
    async with asyncio.timeout(5):
        await run_tool_loop(
            session=ChatCompletionsSession(provider, []), toolbox=TOOLS, observer=log, max_steps=8
        )
    [(_, _, _, decision, _, output)] = log.of("denied")
    assert decision == "denied" and "no one can approve" in output
    assert ran == []


async def test_other_calls_of_the_step_run_while_one_waits() -> None:
    provider = scripted(
        [*call(0, "rename", {"title": "Trip"}), *call(1, "add", {"a": 1, "b": 2}), Finished("x")],
        [TextDelta("Done."), Finished("stop")],
    )
    approver = Approver(Decision(approved=True, by="alice"))
    approver.release.clear()

    class ReleasingLog(Log):
        async def tool_finished(self, step: int, index: int, result: Any) -> None:
            await super().tool_finished(step, index, result)
            if index == 1:
                approver.release.set()

    log = ReleasingLog()
    await run(provider, approver, log)

    finished = [entry[:3] for entry in log.of("finished")]
    assert finished == [("finished", 1, 1), ("finished", 1, 0)]
    # The next model call got both outputs, each paired with its call.
    outputs = {m["tool_call_id"]: m["content"] for m in provider.seen[1][-2:]}
    assert outputs == {"call_0": "renamed to Trip", "call_1": "3"}


async def test_a_call_with_bad_arguments_fails_without_asking() -> None:
    provider = scripted(
        [*call(0, "rename", {"name": "Trip"}), Finished("tool_calls")],
        [TextDelta("Sorry."), Finished("stop")],
    )
    approver = Approver(Decision(approved=True, by="alice"))
    log = Log()

    await run(provider, approver, log)

    assert approver.asked == []
    assert log.of("awaiting") == []
    [(_, _, _, ok, output)] = log.of("finished")
    assert not ok and "invalid arguments" in output


async def test_stop_while_waiting_cancels_the_turn() -> None:
    provider = rename_then_answer()
    approver = Approver(None)
    log = Log()
    task = asyncio.create_task(run(provider, approver, log))
    async with asyncio.timeout(5):
        while not approver.asked:
            await asyncio.sleep(0.01)

    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await task
    assert log.of("awaiting") == [("awaiting", 1, 0)]
    assert log.of("denied") == [] and log.of("running") == []
    assert len(provider.seen) == 1
