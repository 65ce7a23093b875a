"""This process's Prometheus metrics (served at /metrics), and the small functions that record
them.

Each serving process keeps its own; Prometheus scrapes every worker. Labelled metrics are bound
to their labels here once, so recording one looks nothing up.
Plain Python: no Django, so the runner's draft can record without importing it.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from typing import Any, Protocol

from prometheus_client import (
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    Metric,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from .streaming.events import ProviderEvent, StreamError
from .streaming.timeouts import StreamTimeouts

# No `_created` series (when each counter was made) beside every counter: they doubled the page.
disable_created_metrics()  # type: ignore[no-untyped-call]

SOCKET_KINDS = ("page", "api")
SOCKETS = Gauge("chat_sockets_open", "WebSockets open in this process, by kind.", ["kind"])
# The consumers themselves, weakly: one whose connect raised is never told it disconnected.
_sockets: dict[str, weakref.WeakSet[object]] = {kind: weakref.WeakSet() for kind in SOCKET_KINDS}
for _kind, _open in _sockets.items():
    SOCKETS.labels(_kind).set_function(_open.__len__)


def socket_opened(kind: str, consumer: object) -> None:
    _sockets[kind].add(consumer)


def socket_closed(consumer: object) -> None:
    for open_sockets in _sockets.values():
        open_sockets.discard(consumer)


class Answer(Protocol):
    @property
    def status(self) -> str: ...


ANSWERS_RUNNING = Gauge(
    "chat_answers_running", "Answers this process is writing (not counting queued ones)."
)
ANSWERS_QUEUED = Gauge(
    "chat_answers_queued", "Answers in this process waiting for their turn at the local model."
)
# The running answers' drafts; their status is read when Prometheus scrapes.
_answers: set[Answer] = set()


def _answers_in(status: str) -> int:
    # list() copies the set in one step, so a scrape from another thread sees no change midway.
    return sum(1 for answer in list(_answers) if answer.status == status)


ANSWERS_RUNNING.set_function(lambda: _answers_in("streaming"))
ANSWERS_QUEUED.set_function(lambda: _answers_in("queued"))


def answer_started(answer: Answer) -> None:
    _answers.add(answer)


def answer_ended(answer: Answer) -> None:
    _answers.discard(answer)


class StreamDeltas(Collector):
    """Pieces of streamed output, counted in plain ints: a prometheus Counter's lock would cost
    more per token than the rest of recording it. Read when Prometheus scrapes."""

    def __init__(self) -> None:
        self.text = 0
        self.reasoning = 0
        self.tool_arguments = 0

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "chat_stream_deltas",
            "Pieces of streamed output the model sent and the answer published to its followers, "
            "by kind (text, reasoning, tool_arguments); a piece is usually one token.",
            labels=["kind"],
        )
        for kind in ("text", "reasoning", "tool_arguments"):
            family.add_metric([kind], getattr(self, kind))
        yield family


STREAM_DELTAS = StreamDeltas()
REGISTRY.register(STREAM_DELTAS)

FIRST_EVENT_SECONDS = Histogram(
    "chat_upstream_first_event_seconds",
    "Seconds from sending a model request (each try) to its first stream event.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0),
)
UPSTREAM_ERROR_KINDS = ("connection", "timeout", "http_429", "http_4xx", "http_5xx", "stream")
UPSTREAM_ERRORS = Counter(
    "chat_upstream_errors",
    "Model requests (each try) that failed, by kind: connection, timeout, http_429, http_4xx, "
    "http_5xx, stream (the server's stream reported an error, ended early or was not valid).",
    ["kind"],
)
_upstream_errors = {kind: UPSTREAM_ERRORS.labels(kind) for kind in UPSTREAM_ERROR_KINDS}


def upstream_error_kind(details: dict[str, Any]) -> str:
    """Which kind of failure a provider adapter's `StreamError.details` describe."""
    status = details.get("status_code")
    if isinstance(status, int):
        if status == 429:
            return "http_429"
        return "http_5xx" if status >= 500 else "http_4xx"
    kind = details.get("kind")
    return kind if kind in ("connection", "timeout") else "stream"


Attempt = Callable[[StreamTimeouts], AsyncIterator[ProviderEvent]]


def timed(attempt: Attempt) -> Attempt:
    """`attempt` (one try of a model request), recording its first event's latency and its error."""

    def timed_attempt(timeouts: StreamTimeouts) -> AsyncIterator[ProviderEvent]:
        return _timed(attempt(timeouts))

    return timed_attempt


async def _timed(events: AsyncIterator[ProviderEvent]) -> AsyncIterator[ProviderEvent]:
    started = time.monotonic()
    first = True
    try:
        async for event in events:
            if isinstance(event, StreamError):
                _upstream_errors[upstream_error_kind(event.details)].inc()
            elif first:
                FIRST_EVENT_SECONDS.observe(time.monotonic() - started)
            first = False
            yield event
    finally:
        # Closed at once, not when collected: closing it closes the HTTP response.
        if isinstance(events, AsyncGenerator):
            await events.aclose()


TOOL_CALL_STATUSES = ("succeeded", "failed", "denied", "cancelled")
TOOL_CALLS = Counter(
    "chat_tool_calls",
    "Tool calls ended, by status: succeeded, failed, denied (not approved), cancelled.",
    ["status"],
)
_tool_calls = {status: TOOL_CALLS.labels(status) for status in TOOL_CALL_STATUSES}


def tool_call_ended(status: str) -> None:
    _tool_calls[status].inc()


MCP_CALLS = Counter(
    "chat_mcp_calls",
    "Calls of MCP servers' tools ended, by server and status: succeeded, failed, denied, "
    "cancelled.",
    ["server", "status"],
)


def mcp_call_ended(server: str, status: str) -> None:
    MCP_CALLS.labels(server, status).inc()


CHECKPOINT_WRITES = Counter(
    "chat_checkpoint_writes",
    "Saves of running answers to their Message and ToolCall rows (periodic and final).",
)
