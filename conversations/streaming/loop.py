"""The tool loop: call the model, stream, run the step's tool calls concurrently, repeat."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from .events import (
    Finished,
    ProviderEvent,
    ReasoningDelta,
    ResponseDone,
    Retrying,
    StreamError,
    TextDelta,
    ToolArgumentsDelta,
    ToolCallReady,
    ToolCallStarted,
    Usage,
)
from .responses import function_call_outputs, responses_tools
from .tools import Toolbox, ToolResult

Provider = Callable[[list[dict[str, Any]], list[dict[str, Any]]], AsyncIterator[ProviderEvent]]


class ProviderSession(Protocol):
    """One turn's conversation with the model, in the shape its API wants it.

    `stream` makes one model call with everything said so far; `add_step` records a step's tool
    calls and their outputs, paired as that API expects, before the next call.
    """

    def stream(self, tools: list[dict[str, Any]]) -> AsyncIterator[ProviderEvent]: ...
    def add_step(self, text: str, calls: list[ToolCallReady], outputs: list[str]) -> None: ...


class ChatCompletionsSession:
    """Chat Completions: the whole message list is sent on every call."""

    def __init__(self, provider: Provider, messages: list[dict[str, Any]]) -> None:
        self.provider = provider
        self.messages = messages

    def stream(self, tools: list[dict[str, Any]]) -> AsyncIterator[ProviderEvent]:
        return self.provider(self.messages, tools)

    def add_step(self, text: str, calls: list[ToolCallReady], outputs: list[str]) -> None:
        self.messages.append(assistant_tool_calls_message(text, calls))
        self.messages.extend(
            tool_output_message(call.call_id, output)
            for call, output in zip(calls, outputs, strict=True)
        )


class LoopObserver(Protocol):
    """What the loop reports while it runs; the Django runner stores and broadcasts it."""

    async def step_started(self, step: int) -> None: ...
    async def text(self, delta: str) -> None: ...
    async def reasoning_delta(self, delta: str) -> None: ...
    async def tool_started(self, step: int, index: int, call_id: str, name: str) -> None: ...
    async def tool_arguments(self, step: int, index: int, delta: str) -> None: ...
    async def tool_ready(
        self, step: int, index: int, call_id: str, name: str, arguments: str
    ) -> None: ...
    async def tool_awaiting_approval(self, step: int, index: int) -> None: ...
    async def tool_running(self, step: int, index: int, decision: Decision | None = None) -> None:
        """The call runs; `decision` is the approval of a tool that asks first."""

    async def tool_denied(self, step: int, index: int, decision: Decision, output: str) -> None:
        """The call will not run; `output` tells the model so."""

    async def tool_progress(
        self, step: int, index: int, progress: float, total: float | None, message: str
    ) -> None:
        """A running call reported how far it has got (an MCP server's notifications/progress)."""

    async def tool_finished(self, step: int, index: int, result: ToolResult) -> None: ...
    async def usage(self, usage: Usage) -> None: ...
    async def retrying(self, retry: Retrying) -> None: ...


@dataclass(frozen=True, slots=True)
class Decision:
    """The user's answer to a call of a tool that asks first."""

    approved: bool
    # Who decided (a username), and why; empty when no one did in time.
    by: str = ""
    reason: str = ""
    timed_out: bool = False

    @property
    def name(self) -> str:
        """approved, denied or timed_out."""
        if self.approved:
            return "approved"
        return "timed_out" if self.timed_out else "denied"


class Approver(Protocol):
    """Asks the user about a call of a tool that asks first, and waits for the answer."""

    async def decide(self, step: int, index: int, call: ToolCallReady) -> Decision: ...


# What the model is told when no approver is given (nobody could decide).
NO_APPROVER = Decision(approved=False, reason="no one can approve tool calls here")


@dataclass(frozen=True, slots=True)
class LoopOutcome:
    status: Literal["complete", "failed", "step_limit"]
    error: str = ""
    steps: int = 0
    # The failing StreamError's details, e.g. {"kind": "connection"}.
    details: dict[str, Any] = field(default_factory=dict)


async def run_tool_loop(
    *,
    session: ProviderSession,
    toolbox: Toolbox,
    observer: LoopObserver,
    max_steps: int,
    approver: Approver | None = None,
    approval_timeout: float = 300.0,
) -> LoopOutcome:
    """Run one assistant turn: model calls and tool runs until the model answers.

    Calls of tools that ask first wait for `approver` (at most `approval_timeout` seconds, then
    they are denied); the step's other calls run meanwhile, and the next model call waits for
    all of them.
    """
    approval = Approval(approver, approval_timeout)
    tools = toolbox.chat_completions_schema()
    for step in range(1, max_steps + 1):
        await observer.step_started(step)
        text: list[str] = []
        ready: list[ToolCallReady] = []
        finish_reason = ""
        async for event in session.stream(tools):
            match event:
                case TextDelta(delta):
                    text.append(delta)
                    await observer.text(delta)
                case ReasoningDelta(delta):
                    await observer.reasoning_delta(delta)
                case ToolCallStarted(index, call_id, name):
                    await observer.tool_started(step, index, call_id, name)
                case ToolArgumentsDelta(index, delta):
                    await observer.tool_arguments(step, index, delta)
                case ToolCallReady(index, call_id, name, arguments):
                    ready.append(event)
                    await observer.tool_ready(step, index, call_id, name, arguments)
                case Usage():
                    await observer.usage(event)
                case Retrying():
                    await observer.retrying(event)
                case StreamError(message, details):
                    return LoopOutcome("failed", message, step, details)
                case Finished(reason):
                    finish_reason = reason
        if not ready:
            if finish_reason in TRUNCATED:
                return LoopOutcome("complete", TRUNCATED[finish_reason], step)
            return LoopOutcome("complete", steps=step)

        results = await asyncio.gather(
            *(run_one_call(toolbox, observer, step, call, approval) for call in ready)
        )
        session.add_step("".join(text), ready, [result.output for result in results])
    return LoopOutcome(
        "step_limit",
        f"Stopped after {max_steps} model calls, the step limit; the answer may be incomplete.",
        max_steps,
    )


# Finish reasons that mean the answer was cut short, and what the message then says.
TRUNCATED = {
    "length": "The answer was cut off at the token limit.",
    "max_output_tokens": "The answer was cut off at the token limit.",
    "max_tokens": "The answer was cut off at the token limit.",
    "content_filter": "The answer was cut off by the provider's content filter.",
    # A Responses answer marked incomplete without a reason.
    "incomplete": "The answer was cut off before it finished.",
}


@dataclass(frozen=True, slots=True)
class Approval:
    """Who decides on calls of tools that ask first, and how long they have."""

    approver: Approver | None
    timeout: float

    async def ask(self, step: int, call: ToolCallReady) -> Decision:
        if self.approver is None:
            return NO_APPROVER
        try:
            async with asyncio.timeout(self.timeout):
                return await self.approver.decide(step, call.index, call)
        except TimeoutError:
            return Decision(approved=False, timed_out=True)

    def denial(self, decision: Decision) -> str:
        """What the model is told of a call that was not approved."""
        if decision.timed_out:
            return (
                "The user did not approve this tool call: no one approved it within "
                f"{self.timeout:g} s. It was not run."
            )
        if decision.reason:
            return f"The user denied this tool call: {decision.reason}"
        return "The user denied this tool call."


async def run_one_call(
    toolbox: Toolbox,
    observer: LoopObserver,
    step: int,
    call: ToolCallReady,
    approval: Approval,
) -> ToolResult:
    decision = None
    if toolbox.needs_approval(call.name, call.arguments):
        await observer.tool_awaiting_approval(step, call.index)
        decision = await approval.ask(step, call)
        if not decision.approved:
            output = approval.denial(decision)
            await observer.tool_denied(step, call.index, decision, output)
            return ToolResult(ok=False, output=output)
    await observer.tool_running(step, call.index, decision)

    async def progress(done: float, total: float | None, message: str) -> None:
        await observer.tool_progress(step, call.index, done, total, message)

    result = await toolbox.run(call.name, call.arguments, progress)
    await observer.tool_finished(step, call.index, result)
    return result


def assistant_tool_calls_message(text: str, calls: list[ToolCallReady]) -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": text or None,
        "tool_calls": [
            {
                "id": call.call_id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for call in calls
        ],
    }


def tool_output_message(call_id: str, output: str) -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": call_id, "content": output}


class ResponsesSession:
    """The Responses API: continue from the last response by id, or replay everything.

    With `store` the server keeps each response, so a later call sends only the new
    function_call_output items with `previous_response_id`; without it every call carries the
    whole input, including the output items (function calls, reasoning) of earlier calls.
    """

    def __init__(
        self,
        stream_response: Callable[..., AsyncIterator[ProviderEvent]],
        *,
        instructions: str | None,
        input: list[dict[str, Any]],
        previous_response_id: str | None,
        store: bool,
    ) -> None:
        self.stream_response = stream_response
        self.instructions = instructions
        self.input = input
        self.previous_response_id = previous_response_id
        self.store = store
        self.last_response_id = ""
        self.last_output: list[dict[str, Any]] = []

    async def stream(self, tools: list[dict[str, Any]]) -> AsyncIterator[ProviderEvent]:
        self.last_output = []
        async for event in self.stream_response(
            input=self.input,
            instructions=self.instructions,
            tools=responses_tools(tools),
            previous_response_id=self.previous_response_id if self.store else None,
            store=self.store,
        ):
            if isinstance(event, ResponseDone):
                self.last_response_id = event.response_id
                self.last_output = event.output
            else:
                yield event

    def add_step(self, text: str, calls: list[ToolCallReady], outputs: list[str]) -> None:
        results = function_call_outputs(
            [(call.call_id, output) for call, output in zip(calls, outputs, strict=True)]
        )
        if self.store:
            self.previous_response_id = self.last_response_id
            self.input = results
        else:
            self.input = [*self.input, *self.last_output, *results]
