"""A loopback HTTP server that replays Chat Completions and Responses streams as OpenAI does."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import select
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Chunk = dict[str, Any]


@dataclass(frozen=True, slots=True)
class SSEResponse:
    chunks: list[Chunk | str]
    delay: float = 0.0
    cut_after: int | None = None


@dataclass(frozen=True, slots=True)
class ErrorResponse:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class JSONResponse:
    body: dict[str, Any]
    content_type: str = "application/json"


Script = SSEResponse | ErrorResponse | JSONResponse


def sse(
    chunks: Sequence[Chunk | str], *, delay: float = 0.0, cut_after: int | None = None
) -> SSEResponse:
    """Stream `chunks` (dicts, or raw `data:` payloads) with `delay` seconds between events.

    `cut_after=N` sends N chunks and then drops the connection without `[DONE]` (Chat
    Completions) or the body's end. On /v1/responses each dict is sent as a named event
    (`event: <its type>`) and the stream ends without `[DONE]`, as the Responses API does.
    """
    return SSEResponse(list(chunks), delay, cut_after)


_ERROR_KINDS = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
}


def error(status: int, message: str, headers: dict[str, str] | None = None) -> ErrorResponse:
    """An error response with OpenAI's JSON error body."""
    kind, code = _ERROR_KINDS.get(status, ("server_error", None))
    return ErrorResponse(
        status,
        {"error": {"message": message, "type": kind, "param": None, "code": code}},
        headers or {},
    )


def json_body(
    completion: dict[str, Any], *, content_type: str = "application/json"
) -> JSONResponse:
    """Answer with one plain JSON body (e.g. `Completion.whole(...)`), even to a stream request."""
    return JSONResponse(completion, content_type)


_completion_ids = itertools.count(1)


class Completion:
    """Builds the chunks of one completion, which share an id, a creation time and a model."""

    def __init__(self, model: str = "fake-model") -> None:
        self.id = f"chatcmpl-fake{next(_completion_ids):06d}"
        self.created = int(time.time())
        self.model = model

    def chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> Chunk:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": "fp_fake",
            "choices": [
                {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            ],
            "usage": None,
        }

    def whole(
        self,
        message: dict[str, Any],
        finish_reason: str = "stop",
        usage: tuple[int, int] | None = (10, 20),
    ) -> dict[str, Any]:
        """The `chat.completion` object a non-streaming answer carries."""
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": "fp_fake",
            "choices": [
                {"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}
            ],
            "usage": None if usage is None else self.usage(*usage)["usage"],
        }

    def usage(self, prompt: int, completion: int) -> Chunk:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": "fp_fake",
            "choices": [],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
                "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
            },
        }


def _split(text: str, pieces: int | None) -> list[str]:
    """`pieces` roughly equal parts, or word-like tokens (" word") when `pieces` is None."""
    if pieces is None:
        return re.findall(r"\s*\S+|\s+", text)
    size = max(1, -(-len(text) // pieces))
    return [text[i : i + size] for i in range(0, len(text), size)]


def text_stream(
    text: str,
    *,
    pieces: int | None = None,
    finish_reason: str = "stop",
    usage: tuple[int, int] | None = (10, 20),
    model: str = "fake-model",
) -> list[Chunk]:
    """Role chunk, content chunks, the finish chunk, then (unless usage=None) the usage chunk."""
    completion = Completion(model)
    chunks = [completion.chunk({"role": "assistant", "content": "", "refusal": None})]
    chunks += [completion.chunk({"content": piece}) for piece in _split(text, pieces)]
    chunks.append(completion.chunk({}, finish_reason))
    if usage is not None:
        chunks.append(completion.usage(*usage))
    return chunks


def tool_calls_stream(
    calls: list[tuple[str, str]],
    *,
    interleave: bool = True,
    text_before: str | None = None,
    pieces: int = 4,
    finish_reason: str = "tool_calls",
    usage: tuple[int, int] | None = (10, 20),
    model: str = "fake-model",
) -> list[Chunk]:
    """Chunks calling each (name, arguments JSON) with the arguments split into fragments.

    Each call opens with a chunk carrying its id, type, name and empty arguments; with
    `interleave` the fragments of different calls alternate, as parallel calls may.
    """
    completion = Completion(model)
    chunks = [
        completion.chunk(
            {"role": "assistant", "content": "" if text_before else None, "refusal": None}
        )
    ]
    if text_before:
        chunks += [completion.chunk({"content": piece}) for piece in _split(text_before, None)]
    per_call: list[list[dict[str, Any]]] = []
    for index, (name, arguments) in enumerate(calls):
        opening = {
            "index": index,
            "id": f"call_{uuid.uuid4().hex[:24]}",
            "type": "function",
            "function": {"name": name, "arguments": ""},
        }
        fragments = [
            {"index": index, "function": {"arguments": part}} for part in _split(arguments, pieces)
        ]
        per_call.append([opening, *fragments])
    if interleave:
        ordered = [d for row in itertools.zip_longest(*per_call) for d in row if d is not None]
    else:
        ordered = [d for deltas in per_call for d in deltas]
    chunks += [completion.chunk({"tool_calls": [delta]}) for delta in ordered]
    chunks.append(completion.chunk({}, finish_reason))
    if usage is not None:
        chunks.append(completion.usage(*usage))
    return chunks


def _hex_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}{uuid.uuid4().hex[:16]}"


class ResponseEvents:
    """Builds the events of one Responses stream, which share a response and sequence numbers.

    Add output items in order (`reasoning_summary`, `message`, `function_calls`...), then end
    with `completed`, `incomplete`, `failed` or `error`; `events` is the script.
    """

    def __init__(self, model: str = "fake-model") -> None:
        self.id = _hex_id("resp")
        self.created_at = int(time.time())
        self.model = model
        self.events: list[Chunk] = []
        self.output: list[dict[str, Any]] = []
        self.emit("response.created", response=self.response("in_progress"))
        self.emit("response.in_progress", response=self.response("in_progress"))

    def emit(self, type: str, **fields: Any) -> None:
        self.events.append({"type": type, "sequence_number": len(self.events), **fields})

    def response(
        self,
        status: str,
        *,
        usage: tuple[int, int] | None = None,
        error: dict[str, Any] | None = None,
        incomplete_reason: str | None = None,
    ) -> dict[str, Any]:
        """The `response` object as each lifecycle event carries it."""
        finished = status != "in_progress"
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "background": False,
            "error": error,
            "incomplete_details": {"reason": incomplete_reason} if incomplete_reason else None,
            "instructions": None,
            "max_output_tokens": None,
            "model": self.model,
            "output": list(self.output) if finished else [],
            "parallel_tool_calls": True,
            "previous_response_id": None,
            "reasoning": {"effort": None, "summary": None},
            "service_tier": "default",
            "store": True,
            "temperature": 1.0,
            "text": {"format": {"type": "text"}, "verbosity": "medium"},
            "tool_choice": "auto",
            "tools": [],
            "top_p": 1.0,
            "truncation": "disabled",
            "usage": None if usage is None else _response_usage(*usage),
            "user": None,
            "metadata": {},
        }

    def message(self, text: str, *, pieces: int | None = None, status: str = "completed") -> None:
        item_id, index = _hex_id("msg"), len(self.output)
        where = {"item_id": item_id, "output_index": index, "content_index": 0}
        item = {"id": item_id, "type": "message", "status": "in_progress", "role": "assistant"}
        self.emit("response.output_item.added", output_index=index, item={**item, "content": []})
        part = {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}
        self.emit("response.content_part.added", **where, part=part)
        for piece in _split(text, pieces):
            self.emit("response.output_text.delta", **where, delta=piece, logprobs=[])
        self.emit("response.output_text.done", **where, text=text, logprobs=[])
        part = {**part, "text": text}
        self.emit("response.content_part.done", **where, part=part)
        self._done({**item, "status": status, "content": [part]})

    def reasoning_summary(
        self, parts: list[str], *, pieces: int | None = None, encrypted: bool = False
    ) -> None:
        """A reasoning item whose summary parts stream, as o-series and GPT-5 models send."""
        item_id, index = _hex_id("rs"), len(self.output)
        item: dict[str, Any] = {"id": item_id, "type": "reasoning", "summary": []}
        self.emit("response.output_item.added", output_index=index, item=item)
        for summary_index, text in enumerate(parts):
            where = {"item_id": item_id, "output_index": index, "summary_index": summary_index}
            part = {"type": "summary_text", "text": ""}
            self.emit("response.reasoning_summary_part.added", **where, part=part)
            for piece in _split(text, pieces):
                self.emit("response.reasoning_summary_text.delta", **where, delta=piece)
            self.emit("response.reasoning_summary_text.done", **where, text=text)
            self.emit("response.reasoning_summary_part.done", **where, part={**part, "text": text})
        item = {**item, "summary": [{"type": "summary_text", "text": text} for text in parts]}
        if encrypted:
            item["encrypted_content"] = f"gAAAAA{uuid.uuid4().hex}"
        self._done(item)

    def reasoning_text(self, text: str, *, pieces: int | None = None) -> None:
        """A reasoning item with raw reasoning text, as open models (gpt-oss on vLLM) send."""
        item_id, index = _hex_id("rs"), len(self.output)
        where = {"item_id": item_id, "output_index": index, "content_index": 0}
        item = {"id": item_id, "type": "reasoning", "summary": [], "content": []}
        self.emit("response.output_item.added", output_index=index, item=item)
        part = {"type": "reasoning_text", "text": ""}
        self.emit("response.content_part.added", **where, part=part)
        for piece in _split(text, pieces):
            self.emit("response.reasoning_text.delta", **where, delta=piece)
        self.emit("response.reasoning_text.done", **where, text=text)
        self.emit("response.content_part.done", **where, part={**part, "text": text})
        self._done({**item, "content": [{"type": "reasoning_text", "text": text}]})

    def function_calls(
        self, calls: list[tuple[str, str]], *, pieces: int = 4, interleave: bool = False
    ) -> None:
        """Function call items (name, arguments JSON), the arguments in `pieces` deltas each.

        OpenAI streams parallel calls one item after another; `interleave` alternates them.
        """
        per_call: list[list[tuple[str, dict[str, Any]]]] = []
        finished: list[dict[str, Any]] = []
        for offset, (name, arguments) in enumerate(calls):
            index = len(self.output) + offset
            item = {
                "id": _hex_id("fc"),
                "type": "function_call",
                "status": "in_progress",
                "arguments": "",
                "call_id": f"call_{uuid.uuid4().hex[:24]}",
                "name": name,
            }
            where = {"item_id": item["id"], "output_index": index}
            done = {**item, "status": "completed", "arguments": arguments}
            finished.append(done)
            per_call.append(
                [
                    ("response.output_item.added", {"output_index": index, "item": item}),
                    *[
                        ("response.function_call_arguments.delta", {**where, "delta": piece})
                        for piece in _split(arguments, pieces)
                    ],
                    ("response.function_call_arguments.done", {**where, "arguments": arguments}),
                    ("response.output_item.done", {"output_index": index, "item": done}),
                ]
            )
        if interleave:
            ordered = [e for row in itertools.zip_longest(*per_call) for e in row if e is not None]
        else:
            ordered = [event for events in per_call for event in events]
        for type, fields in ordered:
            self.emit(type, **fields)
        self.output += finished

    def completed(self, usage: tuple[int, int] | None = (10, 20)) -> list[Chunk]:
        self.emit("response.completed", response=self.response("completed", usage=usage))
        return self.events

    def incomplete(
        self,
        reason: str = "max_output_tokens",
        usage: tuple[int, int] | None = (10, 20),
        *,
        event: str = "response.incomplete",
    ) -> list[Chunk]:
        """End with an incomplete response; `event="response.completed"` as LiteLLM ends one."""
        response = self.response("incomplete", usage=usage, incomplete_reason=reason)
        self.emit(event, response=response)
        return self.events

    def failed(self, message: str, code: str = "server_error") -> list[Chunk]:
        response = self.response("failed", error={"code": code, "message": message})
        self.emit("response.failed", response=response)
        return self.events

    def error(self, message: str, code: str | None = None, *, nested: bool = False) -> list[Chunk]:
        """An `error` event, its fields flat as the API reference documents them.

        `nested` puts them under `error`, as the live API sends them; the SDK then raises.
        """
        fields = {"code": code, "message": message, "param": None}
        if nested:
            self.emit("error", error={"type": "server_error", **fields})
        else:
            self.emit("error", **fields)
        return self.events

    def _done(self, item: dict[str, Any]) -> None:
        self.emit("response.output_item.done", output_index=len(self.output), item=item)
        self.output.append(item)


def _response_usage(input_tokens: int, output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_tokens + output_tokens,
    }


def response_text_stream(
    text: str,
    *,
    pieces: int | None = None,
    reasoning: list[str] | None = None,
    encrypted_reasoning: bool = False,
    usage: tuple[int, int] | None = (10, 20),
    model: str = "fake-model",
) -> list[Chunk]:
    """A Responses stream answering `text`, after a streamed reasoning summary if given."""
    response = ResponseEvents(model)
    if reasoning is not None:
        response.reasoning_summary(reasoning, encrypted=encrypted_reasoning)
    response.message(text, pieces=pieces)
    return response.completed(usage)


def response_tool_calls_stream(
    calls: list[tuple[str, str]],
    *,
    text_before: str | None = None,
    reasoning: list[str] | None = None,
    encrypted_reasoning: bool = False,
    pieces: int = 4,
    interleave: bool = False,
    usage: tuple[int, int] | None = (10, 20),
    model: str = "fake-model",
) -> list[Chunk]:
    """A Responses stream calling each (name, arguments JSON), as parallel function calls."""
    response = ResponseEvents(model)
    if reasoning is not None:
        response.reasoning_summary(reasoning, encrypted=encrypted_reasoning)
    if text_before:
        response.message(text_before)
    response.function_calls(calls, pieces=pieces, interleave=interleave)
    return response.completed(usage)


def response_incomplete(
    text: str,
    *,
    reason: str = "max_output_tokens",
    pieces: int | None = None,
    usage: tuple[int, int] | None = (10, 20),
    event: str = "response.incomplete",
) -> list[Chunk]:
    """A Responses stream whose answer stops short, ending in `event` (see `incomplete`)."""
    response = ResponseEvents()
    response.message(text, pieces=pieces, status="incomplete")
    return response.incomplete(reason, usage, event=event)


def response_failed(
    message: str, *, code: str = "server_error", text_before: str | None = None
) -> list[Chunk]:
    """A Responses stream ending in `response.failed`, after some text if given."""
    response = ResponseEvents()
    if text_before:
        response.message(text_before)
    return response.failed(message, code)


def response_error_event(
    message: str, *, code: str | None = None, nested: bool = False
) -> list[Chunk]:
    """A Responses stream that opens, then sends an `error` event (see `ResponseEvents.error`)."""
    return ResponseEvents().error(message, code, nested=nested)


class FakeOpenAI:
    """Answers POST /v1/chat/completions and /v1/responses with queued scripts.

    Both routes take from one queue, first in first out, and record each request body in
    `requests`, in order.
    """

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.closed_early = 0
        # What GET /v1/models lists, and how long it hangs first (until stop(), at most).
        self.models = ["fake-model"]
        self.models_hang = 0.0
        self.model_list_requests = 0
        self._stopping = threading.Event()
        self._scripts: deque[Script] = deque()
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._server: ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        assert self._server is not None, "start() the server first"
        return f"http://127.0.0.1:{self._server.server_port}/v1"

    def queue(self, script: Script) -> None:
        self._scripts.append(script)

    def start(self) -> FakeOpenAI:
        fake = self

        class Handler(_Handler):
            server_fake = fake

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        # Kept-alive connections would otherwise hold their handler threads open.
        with self._lock:
            for connection in self._connections:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)
        self._server = None

    def _next_script(self) -> Script | None:
        with self._lock:
            return self._scripts.popleft() if self._scripts else None

    def _track(self, connection: socket.socket, *, open: bool) -> None:
        with self._lock:
            if open:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    async def wait_for_closed_early(self, count: int = 1, timeout: float = 3) -> None:
        """Wait until `count` streams were closed by their client (TimeoutError if not)."""
        async with asyncio.timeout(timeout):
            while self.closed_early < count:
                await asyncio.sleep(0.02)

    def _count_closed_early(self) -> None:
        with self._lock:
            self.closed_early += 1


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_fake: FakeOpenAI

    def setup(self) -> None:
        super().setup()
        self.server_fake._track(self.connection, open=True)

    def finish(self) -> None:
        self.server_fake._track(self.connection, open=False)
        super().finish()

    def handle(self) -> None:
        # A client that stops reading after an error event resets the kept-alive connection.
        with contextlib.suppress(ConnectionResetError):
            super().handle()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        if self.path.rstrip("/") == "/v1/models":
            fake = self.server_fake
            fake.model_list_requests += 1
            if fake.models_hang:
                fake._stopping.wait(fake.models_hang)
            models = [
                {"id": name, "object": "model", "created": 0, "owned_by": "fake"}
                for name in fake.models
            ]
            self._send_json(200, {"object": "list", "data": models})
        else:
            self._send_json(404, error(404, f"No route for GET {self.path}").body)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path not in ("/v1/chat/completions", "/v1/responses"):
            self._send_json(404, error(404, f"No route for POST {self.path}").body)
            return
        self.server_fake.requests.append(json.loads(body or b"null"))
        script = self.server_fake._next_script()
        if script is None:
            self._send_json(500, error(500, "The fake model server has no scripted response.").body)
        elif isinstance(script, ErrorResponse):
            self._send_json(script.status, script.body, script.headers)
        elif isinstance(script, JSONResponse):
            self._send_json(200, script.body, content_type=script.content_type)
        else:
            self._stream(script)

    def _send_json(
        self,
        status: int,
        body: Any,
        headers: dict[str, str] | None = None,
        *,
        content_type: str = "application/json",
    ) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, script: SSEResponse) -> None:
        named = self.path == "/v1/responses"
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("x-request-id", f"req_{uuid.uuid4().hex}")
        self.end_headers()
        events = [_sse_event(chunk, named=named) for chunk in script.chunks]
        if script.cut_after is not None:
            events = events[: script.cut_after]
            self.close_connection = True
        elif not named:
            events.append(_sse_event("[DONE]", named=False))
        if not self._send_events(events, script.delay, end=script.cut_after is None):
            self.close_connection = True
            self.server_fake._count_closed_early()

    def _send_events(self, events: list[str], delay: float, *, end: bool) -> bool:
        """Write the events (and the body's end); False if the client hung up first."""
        try:
            for number, event in enumerate(events):
                if number and delay and self._client_left_within(delay):
                    return False
                self._write_chunk(event.encode())
            if end:
                self._write_chunk(b"")
        except (BrokenPipeError, ConnectionResetError):
            return False
        return True

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(b"%X\r\n%s\r\n" % (len(data), data))

    def _client_left_within(self, seconds: float) -> bool:
        """Wait `seconds`, returning early with True if the client hangs up meanwhile."""
        readable, _, _ = select.select([self.connection], [], [], seconds)
        if not readable:
            return False
        try:
            return not self.connection.recv(1, socket.MSG_PEEK)
        except OSError:
            return True


def _sse_event(chunk: Chunk | str, *, named: bool) -> str:
    """One server-sent event; a dict with a `type` is named after it when `named`."""
    if isinstance(chunk, str):
        return f"data: {chunk}\n\n"
    data = f"data: {json.dumps(chunk)}\n\n"
    return f"event: {chunk['type']}\n{data}" if named and "type" in chunk else data


class SilentServer:
    """A TCP server that accepts connections and never answers them.

    With `headers` it reads each request and sends a streaming response's headers, then nothing.
    """

    def __init__(self, *, headers: bool = False) -> None:
        self.headers = headers
        self.accepted = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._connections: list[socket.socket] = []
        self._closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}/v1"

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            self.accepted += 1
            self._connections.append(connection)
            if self.headers:
                threading.Thread(target=self._send_headers, args=(connection,), daemon=True).start()

    def _send_headers(self, connection: socket.socket) -> None:
        received = b""
        with contextlib.suppress(OSError):
            while b"\r\n\r\n" not in received:
                data = connection.recv(65536)
                if not data:
                    return
                received += data
            connection.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n"
            )

    def close(self) -> None:
        self._closed.set()
        self._listener.close()
        for connection in self._connections:
            with contextlib.suppress(OSError):
                connection.close()
