"""The Responses API adapter: an `openai` Responses stream turned into normalised events."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import openai
from openai.types.responses import (
    Response,
    ResponseCompletedEvent,
    ResponseErrorEvent,
    ResponseFailedEvent,
    ResponseFunctionCallArgumentsDeltaEvent,
    ResponseFunctionCallArgumentsDoneEvent,
    ResponseFunctionToolCall,
    ResponseIncompleteEvent,
    ResponseInputParam,
    ResponseOutputItem,
    ResponseOutputItemAddedEvent,
    ResponseOutputItemDoneEvent,
    ResponseReasoningSummaryTextDeltaEvent,
    ResponseReasoningTextDeltaEvent,
    ResponseStreamEvent,
    ResponseTextDeltaEvent,
    ToolParam,
)

from .chat_completions import ENDED_EARLY, stream_error, timeout_error
from .events import (
    Finished,
    ProviderEvent,
    ReasoningDelta,
    ResponseDone,
    StreamError,
    TextDelta,
    ToolArgumentsDelta,
    ToolCallReady,
    ToolCallStarted,
    Usage,
)
from .timeouts import EventClock, StreamTimedOut, StreamTimeouts

NOT_JSON = "The model server sent a stream event that is not valid JSON."
NO_RESPONSES_API = (
    "This server may not offer the Responses API: switch the conversation to Chat Completions."
)


async def stream_response(
    client: openai.AsyncOpenAI,
    *,
    model: str,
    input: list[dict[str, Any]],
    instructions: str | None = None,
    tools: list[dict[str, Any]] | None = None,
    previous_response_id: str | None = None,
    store: bool = True,
    max_output_tokens: int | None = None,
    timeouts: StreamTimeouts | None = None,
) -> AsyncIterator[ProviderEvent]:
    """Stream one response as provider events, ending with Finished or StreamError.

    A finished response ends with its ToolCallReady events, ResponseDone, Usage and Finished.
    Closing the generator (or cancelling its consumer) closes the HTTP response.
    """
    turn = _Turn()
    midway = False
    clock = EventClock(timeouts)
    try:
        request = client.responses.create(
            model=model,
            input=cast(ResponseInputParam, input),
            instructions=openai.omit if instructions is None else instructions,
            tools=cast(list[ToolParam], tools) if tools else openai.omit,
            previous_response_id=previous_response_id or openai.omit,
            store=store,
            # Unstored reasoning can only be sent back to the model in its encrypted form.
            include=openai.omit if store else ["reasoning.encrypted_content"],
            max_output_tokens=openai.omit if max_output_tokens is None else max_output_tokens,
            stream=True,
        )
        stream = await clock.wait(request)
        async with stream:
            midway = True
            async for event in clock.events(stream):
                for provider_event in turn.absorb(event):
                    yield provider_event
                if turn.failed:
                    return
    except openai.APIError as error:
        yield responses_error(error, midway=midway)
    except StreamTimedOut as timed_out:
        yield timeout_error(timed_out)
    except json.JSONDecodeError:
        yield StreamError(NOT_JSON)
    else:
        for provider_event in turn.finish():
            yield provider_event


def responses_error(error: openai.APIError, *, midway: bool) -> StreamError:
    """`stream_error`, saying so when a 404 means the server has no /v1/responses at all."""
    failure = stream_error(error, midway=midway)
    details = failure.details
    if details.get("status_code") == 404 and details.get("code") != "model_not_found":
        return StreamError(f"{failure.message} {NO_RESPONSES_API}", details)
    return failure


def responses_tools(chat_tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Chat Completions function tools in the Responses API's flat shape; others unchanged."""
    tools = []
    for tool in chat_tools:
        function = tool.get("function")
        if tool.get("type") != "function" or not isinstance(function, dict):
            tools.append(tool)
            continue
        flat: dict[str, Any] = {"type": "function", "name": function["name"]}
        if function.get("description"):
            flat["description"] = function["description"]
        flat["parameters"] = function.get("parameters") or {"type": "object", "properties": {}}
        flat["strict"] = False
        tools.append(flat)
    return tools


def chat_messages_to_input(
    messages: list[dict[str, Any]],
) -> tuple[str | None, list[dict[str, Any]]]:
    """A Chat Completions history as Responses instructions (its system messages) and input."""
    instructions: list[str] = []
    items: list[dict[str, Any]] = []
    for message in messages:
        role = message.get("role") or "user"
        text = _text_of(message.get("content"))
        if role in ("system", "developer"):
            if text:
                instructions.append(text)
        elif role == "tool":
            items += function_call_outputs([(message["tool_call_id"], text)])
        elif role == "assistant":
            if text:
                items.append({"role": "assistant", "content": text})
            for call in message.get("tool_calls") or ():
                items.append(
                    {
                        "type": "function_call",
                        "call_id": call["id"],
                        "name": call["function"]["name"],
                        "arguments": call["function"].get("arguments") or "",
                    }
                )
        else:
            items.append({"role": role, "content": text})
    return "\n\n".join(instructions) or None, items


def function_call_outputs(outputs: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """Each (call id, output) as the input item that answers that function call."""
    return [
        {"type": "function_call_output", "call_id": call_id, "output": output}
        for call_id, output in outputs
    ]


@dataclass(slots=True)
class _FunctionCall:
    index: int
    call_id: str
    name: str
    arguments: list[str] = field(default_factory=list)


class _Turn:
    """One response's stream events, assembled into provider events."""

    def __init__(self) -> None:
        self.calls: list[_FunctionCall] = []
        self.by_item_id: dict[str, _FunctionCall] = {}
        self.by_output_index: dict[int, _FunctionCall] = {}
        self.done_items: list[ResponseOutputItem] = []
        self.reasoning_part: tuple[str, int] | None = None
        self.response: Response | None = None
        self.incomplete_reason = ""
        self.failed = False

    def absorb(self, event: ResponseStreamEvent) -> Iterator[ProviderEvent]:
        match event:
            case ResponseTextDeltaEvent(delta=delta) if delta:
                yield TextDelta(delta)
            case ResponseReasoningSummaryTextDeltaEvent(delta=delta, summary_index=part):
                yield from self._reasoning(delta, (event.item_id, part))
            case ResponseReasoningTextDeltaEvent(delta=delta, content_index=part):
                yield from self._reasoning(delta, (event.item_id, part))
            case ResponseOutputItemAddedEvent(item=ResponseFunctionToolCall() as item):
                yield from self._absorb_call(item, event.output_index)
            case ResponseFunctionCallArgumentsDeltaEvent(delta=delta) if delta:
                call = self._known_call(event.item_id, event.output_index)
                if call is not None:
                    call.arguments.append(delta)
                    yield ToolArgumentsDelta(call.index, delta)
            case ResponseFunctionCallArgumentsDoneEvent(arguments=arguments):
                call = self._known_call(event.item_id, event.output_index)
                if call is not None:
                    yield from _settle(call, arguments)
            case ResponseOutputItemDoneEvent(item=item, output_index=output_index):
                self.done_items.append(item)
                if isinstance(item, ResponseFunctionToolCall):
                    yield from self._absorb_call(item, output_index)
            case (
                ResponseCompletedEvent(response=response)
                | ResponseIncompleteEvent(response=response)
            ):
                self.response = response
                # Some servers close an incomplete response with `response.completed`.
                if isinstance(event, ResponseIncompleteEvent) or response.status == "incomplete":
                    incomplete = response.incomplete_details
                    reason = incomplete.reason if incomplete else None
                    self.incomplete_reason = reason or "incomplete"
            case ResponseFailedEvent(response=response):
                self.failed = True
                failure = response.error
                if failure is None:
                    yield StreamError("The model failed.")
                else:
                    yield StreamError(
                        f"The model failed: {failure.message}", {"code": failure.code}
                    )
            case ResponseErrorEvent(message=message, code=code):
                self.failed = True
                details = {"code": code} if code else {}
                yield StreamError(f"The model server reported an error: {message}", details)

    def finish(self) -> Iterator[ProviderEvent]:
        response = self.response
        if response is None:
            yield StreamError(ENDED_EARLY)
            return
        # Some servers leave `output` out of the closing event; the items streamed one by one.
        output = response.output or self.done_items
        for output_index, item in enumerate(output):
            if isinstance(item, ResponseFunctionToolCall):
                yield from self._absorb_call(item, output_index)
        for call in self.calls:
            yield ToolCallReady(call.index, call.call_id, call.name, "".join(call.arguments))
        yield ResponseDone(
            response.id,
            [item.model_dump(mode="json", by_alias=True, exclude_none=True) for item in output],
        )
        if response.usage is not None:
            usage = response.usage
            input_tokens, output_tokens = usage.input_tokens or 0, usage.output_tokens or 0
            total = usage.total_tokens or input_tokens + output_tokens
            yield Usage(input_tokens, output_tokens, total)
        if self.incomplete_reason:
            yield Finished(self.incomplete_reason)
        else:
            yield Finished("tool_calls" if self.calls else "stop")

    def _reasoning(self, delta: str, part: tuple[str, int]) -> Iterator[ProviderEvent]:
        if not delta:
            return
        # Summary parts are paragraphs of their own; joined bare they run into each other.
        if self.reasoning_part is not None and part != self.reasoning_part:
            yield ReasoningDelta("\n\n")
        self.reasoning_part = part
        yield ReasoningDelta(delta)

    def _known_call(self, item_id: str | None, output_index: int | None) -> _FunctionCall | None:
        if item_id and item_id in self.by_item_id:
            return self.by_item_id[item_id]
        return self.by_output_index.get(output_index) if output_index is not None else None

    def _absorb_call(
        self, item: ResponseFunctionToolCall, output_index: int
    ) -> Iterator[ProviderEvent]:
        """Start a call the first time its item appears; take any arguments the item carries."""
        call = self._known_call(item.id, output_index)
        if call is None:
            # The history needs an id on every call, and a few servers leave call_id out.
            call_id = item.call_id or f"call_{uuid.uuid4().hex[:24]}"
            call = _FunctionCall(len(self.calls), call_id, item.name)
            self.calls.append(call)
            self.by_output_index[output_index] = call
            if item.id:
                self.by_item_id[item.id] = call
            yield ToolCallStarted(call.index, call.call_id, call.name)
        yield from _settle(call, item.arguments)


def _settle(call: _FunctionCall, arguments: str | None) -> Iterator[ProviderEvent]:
    """Take the server's full arguments, streaming whatever the deltas had not yet carried."""
    if not arguments:
        return
    streamed = "".join(call.arguments)
    if arguments.startswith(streamed) and len(arguments) > len(streamed):
        yield ToolArgumentsDelta(call.index, arguments[len(streamed) :])
    call.arguments = [arguments]


def _text_of(content: object) -> str:
    """A message's text, whether a string or a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text") or "" for part in content if isinstance(part, dict))
    return ""
