"""The Chat Completions adapter: an `openai` stream turned into normalised provider events."""

from __future__ import annotations

import contextlib
import email.utils
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import openai
from openai.types.chat import ChatCompletionMessageParam, ChatCompletionToolUnionParam

from .events import (
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
from .tagged_text import Segment, TaggedTextScanner, parse_tool_call
from .timeouts import TIMED_OUT, EventClock, StreamTimedOut, StreamTimeouts

UNREACHABLE = "Could not reach the model server"
# StreamError.details["kind"] when the connection failed or broke, rather than the server saying no.
CONNECTION_LOST = "connection"
ENDED_EARLY = "The model's stream ended before it finished."
# DeepSeek and older vLLM send `reasoning_content`; Ollama, OpenRouter and newer vLLM `reasoning`.
REASONING_FIELDS = ("reasoning_content", "reasoning")


async def stream_chat_completion(
    client: openai.AsyncOpenAI,
    *,
    model: str,
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None = None,
    max_tokens: int | None = None,
    timeouts: StreamTimeouts | None = None,
) -> AsyncIterator[ProviderEvent]:
    """Stream one completion as provider events, ending with Finished or StreamError.

    Closing the generator (or cancelling its consumer) closes the HTTP response.
    """
    clock = EventClock(timeouts)
    # The raw response, because some servers answer a stream request with one plain JSON
    # body, which the SDK's stream parser would read as an empty stream.
    request = client.chat.completions.with_streaming_response.create(
        model=model,
        messages=cast(list[ChatCompletionMessageParam], messages),
        tools=cast(list[ChatCompletionToolUnionParam], tools) if tools else openai.omit,
        max_tokens=openai.omit if max_tokens is None else max_tokens,
        stream=True,
        stream_options={"include_usage": True},
    )
    turn = _Turn()
    midway = False
    try:
        async with contextlib.AsyncExitStack() as exit_stack:
            response = await clock.wait(exit_stack.enter_async_context(request))
            midway = True
            content_type = response.headers.get("content-type", "").split(";")[0].strip()
            if content_type.endswith("json"):
                body = await clock.wait(response.json())
                for event in turn.absorb(_completion_as_chunk(body)):
                    yield event
            else:
                # The SDK's own stream (its SSE reading and error events), with each chunk left
                # as the JSON it arrived as: building a pydantic model for every chunk was a
                # third of the server's CPU per relayed token.
                chunks = await response.parse(to=openai.AsyncStream[object])
                async for chunk in clock.events(chunks):
                    for event in turn.absorb(chunk):
                        yield event
    except openai.APIError as error:
        error_event = stream_error(error, midway=midway)
    except StreamTimedOut as timed_out:
        error_event = timeout_error(timed_out)
    except json.JSONDecodeError:
        error_event = StreamError("The model server sent a stream chunk that is not valid JSON.")
    else:
        for event in turn.finish():
            yield event
        return
    for event in turn.flush_text():
        yield event
    yield error_event


@dataclass(slots=True)
class _ToolCall:
    index: int
    call_id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)
    started: bool = False
    server_id: str = ""


class _Turn:
    """The first choice's deltas, assembled across chunks (JSON objects) into provider events."""

    def __init__(self) -> None:
        self.calls: list[_ToolCall] = []
        self.by_server_index: dict[int | None, _ToolCall] = {}
        self.scanner = TaggedTextScanner()
        self.finish_reason: str | None = None

    def absorb(self, chunk: object) -> Iterator[ProviderEvent]:
        if not isinstance(chunk, dict):
            return
        if isinstance(usage := chunk.get("usage"), dict):
            yield _usage(usage)
        # Azure's first chunk and every usage chunk have no choices.
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index") not in (0, None):
                continue
            delta = choice.get("delta")
            if isinstance(delta, dict):
                if reasoning := _reasoning_of(delta):
                    yield ReasoningDelta(reasoning)
                if isinstance(content := delta.get("content"), str) and content:
                    yield from self._segments(self.scanner.feed(content))
                for call in delta.get("tool_calls") or ():
                    if isinstance(call, dict):
                        yield from self._absorb_tool_call(call)
            if finish_reason := choice.get("finish_reason"):
                self.finish_reason = str(finish_reason)

    def finish(self) -> Iterator[ProviderEvent]:
        if self.finish_reason is None:
            yield from self.flush_text()
            yield StreamError(ENDED_EARLY)
            return
        yield from self._segments(self.scanner.flush())
        for call in self.calls:
            yield from _start(call)
            yield ToolCallReady(call.index, call.call_id, call.name, "".join(call.arguments))
        stopped = self.calls and self.finish_reason == "stop"
        yield Finished("tool_calls" if stopped else self.finish_reason)

    def flush_text(self) -> Iterator[ProviderEvent]:
        """Text held back for a possible tag, once the stream broke off; a half call is lost."""
        segments = self.scanner.flush()
        yield from self._segments([s for s in segments if s.kind != "tool_call"])

    def _segments(self, segments: list[Segment]) -> Iterator[ProviderEvent]:
        for segment in segments:
            parsed = parse_tool_call(segment.text) if segment.kind == "tool_call" else None
            if segment.kind == "reasoning":
                yield ReasoningDelta(segment.text)
            elif parsed is None:
                yield TextDelta(segment.text)
            else:
                call = self._new_call(name=parsed[0], arguments=[parsed[1]])
                yield from _start(call)

    def _absorb_tool_call(self, delta: dict[str, Any]) -> Iterator[ProviderEvent]:
        # Servers that omit `index` leave None.
        server_index = delta.get("index")
        function = delta.get("function")
        function = function if isinstance(function, dict) else {}
        name, fragment = function.get("name"), function.get("arguments")
        call_id = delta.get("id")
        call = self._call_for(server_index, call_id, name) or self._new_call()
        self.by_server_index[server_index] = call
        if call_id and not call.server_id and not call.started:
            call.server_id = str(call_id)
        if name and not call.name:
            call.name = str(name)
        if fragment:
            call.arguments.append(str(fragment))
            if call.started:
                yield ToolArgumentsDelta(call.index, str(fragment))
        if call.name:
            yield from _start(call)

    def _call_for(self, server_index: Any, call_id: Any, name: Any) -> _ToolCall | None:
        """The call a fragment continues, or None when it opens a new one.

        Servers that omit `index`, or send 0 for every call, are told apart by a new id, or by
        a name arriving once the previous call's arguments are complete.
        """
        if call_id:
            for known in self.calls:
                if known.server_id == call_id:
                    return known
        call = self.by_server_index.get(server_index)
        if call is None or (call_id and call.server_id):
            return None
        if name and call.name and (name != call.name or _is_json(call.arguments)):
            return None
        return call

    def _new_call(self, *, name: str = "", arguments: list[str] | None = None) -> _ToolCall:
        call = _ToolCall(len(self.calls), name=name, arguments=arguments or [])
        self.calls.append(call)
        return call


def _start(call: _ToolCall) -> Iterator[ProviderEvent]:
    """Announce a call once, with any arguments that arrived before its name."""
    if call.started:
        return
    call.started = True
    # vLLM and text-embedded calls come without ids; the history needs one unique per call.
    call.call_id = call.server_id or f"call_{uuid.uuid4().hex[:24]}"
    yield ToolCallStarted(call.index, call.call_id, call.name)
    if call.arguments:
        yield ToolArgumentsDelta(call.index, "".join(call.arguments))


def _is_json(fragments: list[str]) -> bool:
    try:
        json.loads("".join(fragments))
    except ValueError:
        return False
    return True


def _reasoning_of(delta: dict[str, Any]) -> str:
    for name in REASONING_FIELDS:
        value = delta.get(name)
        if isinstance(value, str) and value:
            return value
    return ""


def _completion_as_chunk(body: object) -> dict[str, Any]:
    """A whole `chat.completion` body recast as the one chunk that carries all of it."""
    data: dict[str, Any] = body if isinstance(body, dict) else {}
    choices = []
    for choice in data.get("choices") or ():
        if not isinstance(choice, dict):
            continue
        message = dict(choice.get("message") or {})
        calls = message.get("tool_calls") or ()
        message["tool_calls"] = [{"index": i, **call} for i, call in enumerate(calls)]
        choices.append({**choice, "delta": message})
    return {**data, "choices": choices}


def _usage(usage: dict[str, Any]) -> Usage:
    prompt = usage.get("prompt_tokens") or 0
    completion = usage.get("completion_tokens") or 0
    return Usage(prompt, completion, usage.get("total_tokens") or prompt + completion)


def stream_error(error: openai.APIError, *, midway: bool) -> StreamError:
    if isinstance(error, openai.APIStatusError):
        body = error.body
        detail = body.get("message") if isinstance(body, dict) else body
        text = f"The model server answered {error.status_code}"
        text += f": {str(detail).strip()[:500]}" if detail else "."
        details: dict[str, Any] = {"status_code": error.status_code}
        if isinstance(body, dict) and body.get("code"):
            details["code"] = body["code"]
        headers = error.response.headers
        if (should_retry := headers.get("x-should-retry")) in ("true", "false"):
            details["should_retry"] = should_retry == "true"
        if (wait := retry_after(headers)) is not None:
            details["retry_after"] = wait
        return StreamError(text, details)
    if isinstance(error, openai.APIConnectionError):
        reason = str(error.__cause__ or "") or error.message
        details = {"kind": CONNECTION_LOST, "midway": midway}
        if midway:
            return StreamError(f"The connection to the model server broke off: {reason}", details)
        return StreamError(f"{UNREACHABLE}: {reason}", details)
    return StreamError(f"The model server reported an error: {error.message}")


def timeout_error(timed_out: StreamTimedOut) -> StreamError:
    return StreamError(str(timed_out), {"kind": TIMED_OUT, "midway": not timed_out.first})


def retry_after(headers: Mapping[str, str]) -> float | None:
    """The seconds a `retry-after-ms` or `Retry-After` header asks to wait, if one says."""
    if milliseconds := headers.get("retry-after-ms"):
        with contextlib.suppress(ValueError):
            return float(milliseconds) / 1000
    value = headers.get("retry-after")
    if not value:
        return None
    with contextlib.suppress(ValueError):
        return float(value)
    with contextlib.suppress(TypeError, ValueError):
        return email.utils.parsedate_to_datetime(value).timestamp() - time.time()
    return None
