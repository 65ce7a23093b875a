"""The tool loop: call the model, stream, run the step's tool calls concurrently, repeat."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from .events import (
    Finished,
    ProviderEvent,
    StreamError,
    TextDelta,
    ToolArgumentsDelta,
    ToolCallReady,
    ToolCallStarted,
    Usage,
)
from .tools import Toolbox, ToolResult

Provider = Callable[[list[dict[str, Any]], list[dict[str, Any]]], AsyncIterator[ProviderEvent]]


class LoopObserver(Protocol):
    """What the loop reports while it runs; the Django runner stores and broadcasts it."""

    async def step_started(self, step: int) -> None: ...
    async def text(self, delta: str) -> None: ...
    async def tool_started(self, step: int, index: int, call_id: str, name: str) -> None: ...
    async def tool_arguments(self, step: int, index: int, delta: str) -> None: ...
    async def tool_ready(
        self, step: int, index: int, call_id: str, name: str, arguments: str
    ) -> None: ...
    async def tool_running(self, step: int, index: int) -> None: ...
    async def tool_finished(self, step: int, index: int, result: ToolResult) -> None: ...
    async def usage(self, usage: Usage) -> None: ...


@dataclass(frozen=True, slots=True)
class LoopOutcome:
    status: Literal["complete", "failed", "step_limit"]
    error: str = ""
    steps: int = 0


async def run_tool_loop(
    *,
    provider: Provider,
    messages: list[dict[str, Any]],
    toolbox: Toolbox,
    observer: LoopObserver,
    max_steps: int,
) -> LoopOutcome:
    """Run one assistant turn. `messages` is extended in place with what the turn adds."""
    tools = toolbox.chat_completions_schema()
    for step in range(1, max_steps + 1):
        await observer.step_started(step)
        text: list[str] = []
        ready: list[ToolCallReady] = []
        async for event in provider(messages, tools):
            match event:
                case TextDelta(delta):
                    text.append(delta)
                    await observer.text(delta)
                case ToolCallStarted(index, call_id, name):
                    await observer.tool_started(step, index, call_id, name)
                case ToolArgumentsDelta(index, delta):
                    await observer.tool_arguments(step, index, delta)
                case ToolCallReady(index, call_id, name, arguments):
                    ready.append(event)
                    await observer.tool_ready(step, index, call_id, name, arguments)
                case Usage():
                    await observer.usage(event)
                case StreamError(message):
                    return LoopOutcome("failed", message, step)
                case Finished():
                    pass
        if not ready:
            if text:
                messages.append({"role": "assistant", "content": "".join(text)})
            return LoopOutcome("complete", steps=step)

        messages.append(assistant_tool_calls_message("".join(text), ready))
        results = await asyncio.gather(
            *(run_one_call(toolbox, observer, step, call) for call in ready)
        )
        messages.extend(
            tool_output_message(call.call_id, result.output)
            for call, result in zip(ready, results, strict=True)
        )
    return LoopOutcome(
        "step_limit",
        f"Stopped after {max_steps} model calls, the step limit; the answer may be incomplete.",
        max_steps,
    )


async def run_one_call(
    toolbox: Toolbox, observer: LoopObserver, step: int, call: ToolCallReady
) -> ToolResult:
    await observer.tool_running(step, call.index)
    result = await toolbox.run(call.name, call.arguments)
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
