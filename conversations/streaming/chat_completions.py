"""The Chat Completions adapter: an `openai` stream turned into normalised provider events."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import openai
from openai.types import CompletionUsage
from openai.types.chat import ChatCompletionMessageParam, ChatCompletionToolUnionParam
from openai.types.chat.chat_completion_chunk import ChoiceDeltaToolCall

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

ENDED_EARLY = "The model's stream ended before it finished."


@dataclass(slots=True)
class _ToolCall:
    call_id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)
    started: bool = False


async def stream_chat_completion(
    client: openai.AsyncOpenAI,
    *,
    model: str,
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None = None,
    max_tokens: int | None = None,
) -> AsyncIterator[ProviderEvent]:
    """Stream one completion as provider events, ending with Finished or StreamError.

    Closing the generator (or cancelling its consumer) closes the HTTP response.
    """
    try:
        stream = await client.chat.completions.create(
            model=model,
            messages=cast(list[ChatCompletionMessageParam], messages),
            tools=cast(list[ChatCompletionToolUnionParam], tools) if tools else openai.omit,
            max_tokens=openai.omit if max_tokens is None else max_tokens,
            stream=True,
            stream_options={"include_usage": True},
        )
    except openai.APIError as error:
        yield _stream_error(error, midway=False)
        return

    calls: dict[int, _ToolCall] = {}
    finish_reason: str | None = None
    try:
        async with stream:
            async for chunk in stream:
                if chunk.usage is not None:
                    yield _usage(chunk.usage)
                for choice in chunk.choices:
                    if choice.index != 0:
                        continue
                    if choice.delta.content:
                        yield TextDelta(choice.delta.content)
                    for delta in choice.delta.tool_calls or ():
                        for event in _absorb_tool_call(calls, delta):
                            yield event
                    if choice.finish_reason:
                        finish_reason = choice.finish_reason
    except openai.APIError as error:
        yield _stream_error(error, midway=True)
        return
    except json.JSONDecodeError:
        yield StreamError("The model server sent a stream chunk that is not valid JSON.")
        return

    if finish_reason is None:
        yield StreamError(ENDED_EARLY)
        return
    for event in _finish(calls, finish_reason):
        yield event


def _absorb_tool_call(
    calls: dict[int, _ToolCall], delta: ChoiceDeltaToolCall
) -> Iterator[ProviderEvent]:
    index = _index_of(calls, delta)
    call = calls.setdefault(index, _ToolCall())
    if delta.id and not call.started:
        call.call_id = delta.id
    function = delta.function
    if function is not None and function.name and not call.name:
        call.name = function.name
    fragment = function.arguments if function is not None else None
    if fragment:
        call.arguments.append(fragment)
    if call.started:
        if fragment:
            yield ToolArgumentsDelta(index, fragment)
    elif call.name:
        yield from _start(index, call)


def _finish(calls: dict[int, _ToolCall], finish_reason: str) -> Iterator[ProviderEvent]:
    for index in sorted(calls):
        call = calls[index]
        yield from _start(index, call)
        yield ToolCallReady(index, call.call_id, call.name, "".join(call.arguments))
    yield Finished("tool_calls" if calls and finish_reason == "stop" else finish_reason)


def _start(index: int, call: _ToolCall) -> Iterator[ProviderEvent]:
    """Announce a call once its name is known, with any arguments that arrived before it."""
    if call.started:
        return
    call.started = True
    call.call_id = call.call_id or f"call_{index}"
    yield ToolCallStarted(index, call.call_id, call.name)
    if call.arguments:
        yield ToolArgumentsDelta(index, "".join(call.arguments))


def _index_of(calls: dict[int, _ToolCall], delta: ChoiceDeltaToolCall) -> int:
    """The call a fragment belongs to, for servers that omit or reuse `index` too."""
    # The SDK builds chunks without validation, so a server that omits `index` leaves it unset.
    index: int | None = getattr(delta, "index", None)
    if delta.id:
        for known, call in calls.items():
            if call.call_id == delta.id:
                return known
        if index is None or (index in calls and calls[index].call_id not in ("", delta.id)):
            return max(calls, default=-1) + 1
    if index is None:
        return max(calls, default=0)
    return index


def _usage(usage: CompletionUsage) -> Usage:
    prompt = usage.prompt_tokens or 0
    completion = usage.completion_tokens or 0
    return Usage(prompt, completion, usage.total_tokens or prompt + completion)


def _stream_error(error: openai.APIError, *, midway: bool) -> StreamError:
    if isinstance(error, openai.APIStatusError):
        body = error.body
        detail = body.get("message") if isinstance(body, dict) else body
        text = f"The model server answered {error.status_code}"
        text += f": {str(detail).strip()[:500]}" if detail else "."
        return StreamError(text, {"status_code": error.status_code})
    if isinstance(error, openai.APIConnectionError):
        reason = str(error.__cause__ or "") or error.message
        if midway:
            return StreamError(f"The connection to the model server broke off: {reason}")
        return StreamError(f"Could not reach the model server: {reason}")
    return StreamError(f"The model server reported an error: {error.message}")
