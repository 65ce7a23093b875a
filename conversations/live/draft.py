"""One answer as it is being written, in memory: the tool loop's observer, told as events.

The runner's draft receives the loop's reports, turns each into the next numbered event and
applies it to itself; a page or API client keeps a mirror draft and applies the same events, so
both hold the same answer at the same `seq`. Plain Python: no Django, no database.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypedDict

from .. import metrics
from ..streaming import events as provider
from ..streaming.loop import Decision
from ..streaming.partial_json import parse_partial_arguments
from ..streaming.tools import ToolResult
from .events import (
    Event,
    MessageStatus,
    ReasoningDelta,
    Retrying,
    Snapshot,
    Step,
    TextDelta,
    ToolArguments,
    ToolCreated,
    ToolProgress,
    ToolStatus,
    Usage,
)
from .parts import group_by_step, split_parts
from .statuses import ANSWER_IN_PROGRESS, CALL_ANSWERED


class SequenceGap(Exception):
    """An event arrived whose predecessor never did: the subscriber must catch up first."""

    def __init__(self, have: int, got: int) -> None:
        super().__init__(f"have events up to {have}, got {got}")
        self.have = have
        self.got = got


def now() -> datetime:
    return datetime.now(UTC)


def parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def parse_arguments(text: str) -> Any:
    """Finished arguments: their JSON, or as much of it as parses."""
    try:
        return json.loads(text) if text.strip() else {}
    except ValueError:
        return parse_partial_arguments(text)


@dataclass(slots=True)
class CallDraft:
    """A tool call as it is being made; the fields a `ToolCall` row has."""

    message_id: int
    step: int
    index: int
    call_id: str
    name: str
    text_offset: int
    arguments: str = ""
    parsed_arguments: Any = None
    status: str = "streaming"
    output: str = ""
    error: str = ""
    started_at: datetime | None = None
    finished_at: datetime | None = None
    decision: str = ""
    decided_by: str = ""
    decided_at: datetime | None = None
    decision_reason: str = ""
    # The MCP server the tool comes from ("" for the site's own tools).
    server: str = ""
    # The last progress the running tool reported (progress of total, and its message).
    progress: float | None = None
    progress_total: float | None = None
    progress_message: str = ""
    structured_output: Any = None
    # The images the card shows: each {"mime_type", "size"} and, in the draft that saves them
    # (the runner's) and the rows, "data" (base64). Events and states carry no data.
    images: list[dict[str, Any]] = field(default_factory=list)

    @property
    def duration(self) -> timedelta | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at


@dataclass(frozen=True, slots=True)
class RetryDraft:
    """A model call being retried: why, which try comes next, and after how long a wait."""

    delay: float
    attempt: int
    attempts: int
    reason: str

    @property
    def seconds(self) -> int:
        """The wait as shown: whole seconds, rounded up."""
        return max(1, math.ceil(self.delay))


# A tool call's fields: a `CallDraft`'s (bar its message), as its state and its row have them.
CALL_FIELDS = tuple(field.name for field in fields(CallDraft) if field.name != "message_id")
CALL_TIMES = ("started_at", "finished_at", "decided_at")


def call_fields(call: object) -> dict[str, Any]:
    """The call's fields, from a `CallDraft` or a `ToolCall` row."""
    return {name: getattr(call, name) for name in CALL_FIELDS}


def answer_state(answer: AnswerRecord) -> dict[str, Any]:
    """The whole answer as JSON-ready data (a snapshot's `message`), from a draft or a row."""
    calls = []
    for step in answer.tool_call_steps():
        for call in step:
            fields = call_fields(call)
            for name in CALL_TIMES:
                fields[name] = fields[name].isoformat() if fields[name] else None
            fields["images"] = image_notes(fields["images"])
            calls.append(fields)
    return {
        "id": answer.id,
        "status": answer.status,
        "error": answer.error,
        "model": answer.model,
        "content": answer.content,
        "reasoning": answer.reasoning,
        "steps": answer.steps,
        "input_tokens": answer.input_tokens,
        "output_tokens": answer.output_tokens,
        "total_tokens": answer.total_tokens,
        "created_at": answer.created_at.isoformat(),
        "finished_at": answer.finished_at.isoformat() if answer.finished_at else None,
        "tool_calls": calls,
    }


def image_notes(images: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A call's images without their data: what events and states carry."""
    return [{"mime_type": image["mime_type"], "size": image["size"]} for image in images]


def _number(value: float | None) -> float | None:
    return None if value is None else float(value)


class Decided(TypedDict, total=False):
    decision: str
    decided_by: str
    reason: str


def decided(decision: Decision | None) -> Decided:
    """A `ToolStatus`'s decision fields."""
    if decision is None:
        return {}
    return {"decision": decision.name, "decided_by": decision.by, "reason": decision.reason}


@dataclass(frozen=True, slots=True)
class AnswerCheckpoint:
    """What a checkpoint writes of an answer: its saved values at `seq`, and its tool calls when
    they changed since the last one (models.checkpoint_columns maps them to columns)."""

    seq: int
    status: str
    error: str
    content: str
    reasoning: str
    steps: int
    input_tokens: int | None
    output_tokens: int | None
    total_tokens: int | None
    response_id: str
    finished_at: datetime | None
    calls: tuple[CallDraft, ...] | None = None


class AnswerRecord(Protocol):
    """A saved answer as a `Message` row has it (a draft has the same), read only."""

    @property
    def id(self) -> int: ...

    @property
    def created_at(self) -> datetime: ...

    @property
    def model(self) -> str: ...

    @property
    def status(self) -> str: ...

    @property
    def error(self) -> str: ...

    @property
    def content(self) -> str: ...

    @property
    def reasoning(self) -> str: ...

    @property
    def steps(self) -> int: ...

    @property
    def input_tokens(self) -> int | None: ...

    @property
    def output_tokens(self) -> int | None: ...

    @property
    def total_tokens(self) -> int | None: ...

    @property
    def finished_at(self) -> datetime | None: ...

    def tool_call_steps(self) -> Sequence[Sequence[Any]]: ...


class AnswerDraft:
    """An assistant message being written, with the attributes a `Message` row has."""

    role = "assistant"

    def __init__(
        self,
        *,
        message_id: int,
        created_at: datetime,
        model: str = "",
        status: str = "streaming",
        publish: Callable[[Event], None] | None = None,
    ) -> None:
        self.id = message_id
        self.created_at = created_at
        self.model = model
        self.status = status
        self.error = ""
        self.steps = 0
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None
        self.total_tokens: int | None = None
        self.finished_at: datetime | None = None
        # Where a Responses answer continues from; saved with the row, never shown.
        self.response_id = ""
        self.seq = 0
        # Bumped by every change to a call, so a checkpoint knows when to save them.
        self.calls_version = 0
        self.calls: dict[tuple[int, int], CallDraft] = {}
        # The retry being waited for, until the answer's next event.
        self.retry: RetryDraft | None = None
        self._text: list[str] = []
        self._text_length = 0
        self._reasoning: list[str] = []
        # Where the plain tail of the last text part starts on the page (the text before it is
        # shown as Markdown); kept by rendering.render_events, None until it works it out.
        self.shown_stable: int | None = None
        # Where new events go (the run's stream); None for a mirror, which only applies them.
        self.publish = publish
        # Called when a change should reach the rows now rather than at the next checkpoint
        # (a call starts waiting for the user, or is decided on).
        self.save_soon: Callable[[], None] | None = None
        # The MCP server of each tool that has one, by the tool's name (set by the runner).
        self.tool_servers: dict[str, str] = {}
        # Progress reports are merged: at most one event per call every `progress_interval`
        # seconds, the latest report last (see tool_progress).
        self.progress_interval = 0.1
        self._progress_sent: dict[tuple[int, int], float] = {}
        self._progress_waiting: dict[tuple[int, int], ToolProgress] = {}

    # What templates and the checkpoint read, as on a Message.

    @property
    def content(self) -> str:
        if len(self._text) > 1:
            self._text = ["".join(self._text)]
        return self._text[0] if self._text else ""

    @property
    def reasoning(self) -> str:
        if len(self._reasoning) > 1:
            self._reasoning = ["".join(self._reasoning)]
        return self._reasoning[0] if self._reasoning else ""

    @property
    def has_reasoning(self) -> bool:
        return any(self._reasoning)

    @property
    def in_progress(self) -> bool:
        return self.status in ANSWER_IN_PROGRESS

    @property
    def duration(self) -> timedelta | None:
        if self.finished_at is None:
            return None
        return self.finished_at - self.created_at

    def tool_call_steps(self) -> list[list[CallDraft]]:
        return group_by_step(call for _, call in sorted(self.calls.items()))

    def parts(self) -> list[tuple[str, list[CallDraft]]]:
        return split_parts(self.content, self.tool_call_steps())

    # Events: the one way the draft changes.

    def apply(self, event: Event) -> bool:
        """Bring the draft up to `event`: False if it already has it, SequenceGap if it is early."""
        if isinstance(event, Snapshot):
            if event.seq <= self.seq:
                return False
            self._restore(event.message)
            self.seq = event.seq
            return True
        if event.seq <= self.seq:
            return False
        if event.seq != self.seq + 1:
            raise SequenceGap(self.seq, event.seq)
        self.retry = None
        match event:
            case TextDelta(text=text):
                self._text.append(text)
                self._text_length += len(text)
            case ReasoningDelta(text=text):
                self._reasoning.append(text)
            case Step(step=step):
                self.steps = step
            case ToolCreated():
                self.calls[(event.step, event.index)] = CallDraft(
                    self.id,
                    event.step,
                    event.index,
                    event.call_id,
                    event.name,
                    event.text_offset,
                    server=event.server,
                )
                self.calls_version += 1
            case ToolProgress():
                call = self.calls[(event.step, event.index)]
                call.progress = event.progress
                call.progress_total = event.total
                call.progress_message = event.message
                self.calls_version += 1
            case ToolArguments():
                call = self.calls[(event.step, event.index)]
                call.arguments += event.delta
                call.parsed_arguments = event.parsed
                self.calls_version += 1
            case ToolStatus():
                self._change_call(event)
            case Retrying(delay=delay, attempt=attempt, attempts=attempts, reason=reason):
                self.retry = RetryDraft(delay, attempt, attempts, reason)
            case Usage():
                self.input_tokens = event.input_tokens
                self.output_tokens = event.output_tokens
                self.total_tokens = event.total_tokens
            case MessageStatus(status=status, error=error, at=at):
                self.status = status
                self.error = error
                if status not in ANSWER_IN_PROGRESS:
                    self.finished_at = parse_time(at)
        self.seq = event.seq
        return True

    def _change_call(self, event: ToolStatus) -> None:
        call = self.calls[(event.step, event.index)]
        call.status = event.status
        if event.arguments is not None:
            call.arguments = event.arguments
            call.parsed_arguments = event.parsed
        if event.decision:
            call.decision = event.decision
            call.decided_by = event.decided_by
            call.decided_at = parse_time(event.at)
            call.decision_reason = event.reason
        if event.status == "running":
            call.started_at = parse_time(event.at)
        elif event.status not in ("pending", "awaiting_approval"):
            call.output = event.output
            call.error = event.error
            call.structured_output = event.structured
            call.images = list(event.images)
            call.finished_at = parse_time(event.at)
        self.calls_version += 1

    def _emit(self, event: Event) -> Event:
        self.apply(event)
        if self.publish is not None:
            self.publish(event)
        return event

    @property
    def next_seq(self) -> int:
        return self.seq + 1

    # The tool loop's observer (streaming.loop.LoopObserver).

    async def step_started(self, step: int) -> None:
        self._emit(Step(self.next_seq, step))

    async def text(self, delta: str) -> None:
        metrics.STREAM_DELTAS.text += 1
        self._emit(TextDelta(self.next_seq, delta))

    async def reasoning_delta(self, delta: str) -> None:
        metrics.STREAM_DELTAS.reasoning += 1
        self._emit(ReasoningDelta(self.next_seq, delta))

    async def tool_started(self, step: int, index: int, call_id: str, name: str) -> None:
        server = self.tool_servers.get(name, "")
        self._emit(
            ToolCreated(self.next_seq, step, index, call_id, name, self._text_length, server)
        )

    async def tool_arguments(self, step: int, index: int, delta: str) -> None:
        metrics.STREAM_DELTAS.tool_arguments += 1
        so_far = self.calls[(step, index)].arguments + delta
        self._emit(
            ToolArguments(self.next_seq, step, index, delta, parse_partial_arguments(so_far))
        )

    async def tool_ready(
        self, step: int, index: int, call_id: str, name: str, arguments: str
    ) -> None:
        if (step, index) not in self.calls:
            await self.tool_started(step, index, call_id, name)
        self._emit(
            ToolStatus(
                self.next_seq,
                step,
                index,
                "pending",
                arguments=arguments,
                parsed=parse_arguments(arguments),
            )
        )

    async def tool_awaiting_approval(self, step: int, index: int) -> None:
        self._emit(
            ToolStatus(self.next_seq, step, index, "awaiting_approval", at=now().isoformat())
        )
        self._save_soon()

    async def tool_running(self, step: int, index: int, decision: Decision | None = None) -> None:
        self._emit(
            ToolStatus(
                self.next_seq, step, index, "running", at=now().isoformat(), **decided(decision)
            )
        )
        if decision is not None:
            self._save_soon()

    async def tool_denied(self, step: int, index: int, decision: Decision, output: str) -> None:
        self._count_ended(step, index, "denied")
        self._emit(
            ToolStatus(
                self.next_seq,
                step,
                index,
                "denied",
                output=output,
                at=now().isoformat(),
                **decided(decision),
            )
        )
        self._save_soon()

    def _save_soon(self) -> None:
        if self.save_soon is not None:
            self.save_soon()

    async def tool_progress(
        self, step: int, index: int, progress: float, total: float | None, message: str
    ) -> None:
        """One event per report, unless reports come faster than `progress_interval`: then the
        latest waits out the interval (a flood of reports costs the stream nothing)."""
        key = (step, index)
        if key not in self.calls or self.calls[key].status != "running":
            return
        report = ToolProgress(0, step, index, float(progress), _number(total), message[:500])
        loop = asyncio.get_running_loop()
        wait = self._progress_sent.get(key, -math.inf) + self.progress_interval - loop.time()
        if wait <= 0:
            self._send_progress(report)
            return
        if key not in self._progress_waiting:
            loop.call_later(wait, self._send_waiting_progress, key)
        self._progress_waiting[key] = report

    def _send_waiting_progress(self, key: tuple[int, int]) -> None:
        report = self._progress_waiting.pop(key, None)
        if report is not None and self.calls[key].status == "running":
            self._send_progress(report)

    def _send_progress(self, report: ToolProgress) -> None:
        self._progress_sent[(report.step, report.index)] = asyncio.get_running_loop().time()
        self._emit(replace(report, seq=self.next_seq))

    def _count_ended(self, step: int, index: int, status: str) -> None:
        metrics.tool_call_ended(status)
        server = self.calls[(step, index)].server
        if server:
            metrics.mcp_call_ended(server, status)

    async def tool_finished(self, step: int, index: int, result: ToolResult) -> None:
        self._count_ended(step, index, "succeeded" if result.ok else "failed")
        self._progress_waiting.pop((step, index), None)
        self._emit(
            ToolStatus(
                self.next_seq,
                step,
                index,
                "succeeded" if result.ok else "failed",
                output=result.output,
                error=result.error,
                at=now().isoformat(),
                structured=result.structured,
                images=image_notes(list(result.images)),
            )
        )
        if result.images:
            # The data goes to the rows only (the page fetches each image from there), soon.
            self.calls[(step, index)].images = list(result.images)
            self.calls_version += 1
            self._save_soon()

    async def usage(self, usage: provider.Usage) -> None:
        self._emit(
            Usage(
                self.next_seq,
                (self.input_tokens or 0) + usage.input_tokens,
                (self.output_tokens or 0) + usage.output_tokens,
                (self.total_tokens or 0) + usage.total_tokens,
            )
        )

    async def retrying(self, retry: provider.Retrying) -> None:
        self._emit(
            Retrying(self.next_seq, retry.delay, retry.attempt, retry.attempts, retry.reason)
        )

    def set_status(self, status: str) -> None:
        """Queued while waiting for the local model, streaming once it is this answer's turn."""
        self._emit(MessageStatus(self.next_seq, status))

    def finish(self, status: str, error: str = "") -> list[Event]:
        """End the answer: unfinished calls cancelled, then its final status.

        The events are applied but not published: the runner publishes them once they are
        saved, so that whoever sees the answer finished can send the next message at once.
        """
        at = now().isoformat()
        events: list[Event] = []
        for (step, index), call in sorted(self.calls.items()):
            if call.status not in CALL_ANSWERED:
                self._count_ended(step, index, "cancelled")
                events.append(ToolStatus(self.next_seq, step, index, "cancelled", at=at))
                self.apply(events[-1])
        events.append(MessageStatus(self.next_seq, status, error, at))
        self.apply(events[-1])
        return events

    # The whole answer at once, for a subscriber that is too far behind, and back.

    def state(self) -> dict[str, Any]:
        return answer_state(self)

    def snapshot(self) -> Snapshot:
        return Snapshot(self.seq, self.state())

    @classmethod
    def from_record(cls, record: AnswerRecord, *, seq: int) -> AnswerDraft:
        """The draft of a saved answer (a `Message` row with its calls), read as it is."""
        draft = cls(
            message_id=record.id,
            created_at=record.created_at,
            model=record.model,
            status=record.status,
        )
        draft.error = record.error
        draft._text = [record.content]
        draft._text_length = len(record.content)
        draft._reasoning = [record.reasoning]
        draft.steps = record.steps
        draft.input_tokens = record.input_tokens
        draft.output_tokens = record.output_tokens
        draft.total_tokens = record.total_tokens
        draft.finished_at = record.finished_at
        for step in record.tool_call_steps():
            for call in step:
                copy = CallDraft(message_id=record.id, **call_fields(call))
                draft.calls[(copy.step, copy.index)] = copy
        draft.calls_version += 1
        draft.seq = seq
        return draft

    def checkpoint(self, *, with_calls: bool) -> AnswerCheckpoint:
        """The draft's values as a checkpoint saves them; its calls too `with_calls`."""
        calls = None
        if with_calls:
            calls = tuple(replace(call) for _, call in sorted(self.calls.items()))
        return AnswerCheckpoint(
            seq=self.seq,
            status=self.status,
            error=self.error,
            content=self.content,
            reasoning=self.reasoning,
            steps=self.steps,
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            total_tokens=self.total_tokens,
            response_id=self.response_id,
            finished_at=self.finished_at,
            calls=calls,
        )

    @classmethod
    def from_state(cls, state: dict[str, Any], *, seq: int) -> AnswerDraft:
        draft = cls(message_id=state["id"], created_at=now())
        draft._restore(state)
        draft.seq = seq
        return draft

    def _restore(self, state: dict[str, Any]) -> None:
        self.id = state["id"]
        self.created_at = parse_time(state["created_at"]) or self.created_at
        self.status = state["status"]
        self.error = state["error"]
        self.model = state["model"]
        self._text = [state["content"]]
        self._text_length = len(state["content"])
        self._reasoning = [state["reasoning"]]
        self.steps = state["steps"]
        self.input_tokens = state["input_tokens"]
        self.output_tokens = state["output_tokens"]
        self.total_tokens = state["total_tokens"]
        self.finished_at = parse_time(state["finished_at"])
        self.retry = None
        self.calls = {}
        for data in state["tool_calls"]:
            # A state from a process that predates the decision fields has none.
            fields = {name: data[name] for name in CALL_FIELDS if name in data}
            for name in CALL_TIMES:
                fields[name] = parse_time(fields.get(name))
            call = CallDraft(message_id=self.id, **fields)
            self.calls[(call.step, call.index)] = call
        self.calls_version += 1
