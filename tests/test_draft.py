"""The answer's in-memory draft as the tool loop's observer, and mirrors built from its events.

No Django and no database: the loop runs against a scripted model, as in tests/test_loop.py.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from conversations.live.draft import AnswerDraft, SequenceGap
from conversations.live.events import (
    EVENT_TYPES,
    Event,
    MessageStatus,
    ReasoningDelta,
    Step,
    TextDelta,
    ToolArguments,
    ToolCreated,
    ToolStatus,
    Usage,
    event_from_dict,
    event_to_dict,
)
from conversations.streaming import events as stream
from conversations.streaming.loop import ChatCompletionsSession, Decision, run_tool_loop
from conversations.streaming.tools import Tool, Toolbox, ToolResult
from tests.helpers.scripted import call, scripted

STARTED = datetime(2026, 11, 24, 9, 30, tzinfo=UTC)


def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


def draft(published: list[Event] | None = None) -> AnswerDraft:
    return AnswerDraft(
        message_id=7,
        created_at=STARTED,
        model="fake-model",
        publish=None if published is None else published.append,
    )


async def answer_with_a_tool_call(published: list[Event]) -> AnswerDraft:
    """Think, call `add`, then answer in two pieces, with the events published."""
    writer = draft(published)
    provider = scripted(
        [
            stream.ReasoningDelta("Add them."),
            stream.TextDelta("Let me add. "),
            *call(0, "add", {"a": 2, "b": 3}),
            stream.Usage(10, 5, 15),
            stream.Finished("tool_calls"),
        ],
        [
            stream.TextDelta("It is "),
            stream.TextDelta("5."),
            stream.Usage(20, 3, 23),
            stream.Finished("stop"),
        ],
    )
    outcome = await run_tool_loop(
        session=ChatCompletionsSession(provider, []),
        toolbox=Toolbox([Tool.from_function(add)]),
        observer=writer,
        max_steps=8,
    )
    assert outcome.status == "complete"
    return writer


async def test_the_loop_reports_become_numbered_events_and_the_answer() -> None:
    published: list[Event] = []
    writer = await answer_with_a_tool_call(published)

    assert [event.seq for event in published] == list(range(1, len(published) + 1))
    assert [type(event) for event in published] == [
        Step,
        ReasoningDelta,
        TextDelta,
        ToolCreated,
        ToolArguments,
        ToolArguments,
        ToolStatus,  # pending, with the whole arguments
        Usage,
        ToolStatus,  # running
        ToolStatus,  # succeeded
        Step,
        TextDelta,
        TextDelta,
        Usage,
    ]
    started = published[3]
    assert isinstance(started, ToolCreated)
    assert (started.name, started.text_offset) == ("add", len("Let me add. "))
    # Arguments parsed as far as they have come, while they stream.
    half = published[4]
    assert isinstance(half, ToolArguments)
    assert (half.delta, half.parsed) == ('{"a":', {})
    whole = published[5]
    assert isinstance(whole, ToolArguments) and whole.parsed == {"a": 2, "b": 3}
    assert [e.status for e in published if isinstance(e, ToolStatus)] == [
        "pending",
        "running",
        "succeeded",
    ]
    assert writer.content == "Let me add. It is 5."
    assert writer.reasoning == "Add them."
    assert (writer.input_tokens, writer.output_tokens, writer.total_tokens) == (30, 8, 38)
    assert writer.steps == 2
    [made] = writer.calls.values()
    assert (made.status, made.output, made.parsed_arguments) == ("succeeded", "5", {"a": 2, "b": 3})
    assert made.started_at is not None and made.finished_at is not None
    assert [(text, [c.name for c in calls]) for text, calls in writer.parts()] == [
        ("Let me add. ", ["add"]),
        ("It is 5.", []),
    ]


async def test_a_mirror_fed_the_events_holds_the_same_answer() -> None:
    published: list[Event] = []
    writer = await answer_with_a_tool_call(published)
    published += writer.finish("complete")

    # As a page starts it: from the saved message, before any event.
    mirror = AnswerDraft(message_id=7, created_at=STARTED, model="fake-model")
    for event in published:
        assert mirror.apply(event)

    assert mirror.seq == writer.seq == len(published)
    assert mirror.state() == writer.state()
    assert mirror.status == "complete" and mirror.finished_at is not None


async def test_events_survive_their_wire_form() -> None:
    published: list[Event] = []
    writer = await answer_with_a_tool_call(published)
    published.append(writer.snapshot())

    over_the_wire = [event_from_dict(json.loads(json.dumps(event_to_dict(e)))) for e in published]

    assert over_the_wire == published


async def test_a_mirror_ignores_repeats_and_refuses_to_skip_an_event() -> None:
    published: list[Event] = []
    await answer_with_a_tool_call(published)
    mirror = AnswerDraft(message_id=7, created_at=STARTED)
    for event in published[:3]:
        mirror.apply(event)

    assert mirror.apply(published[1]) is False, "an event it already has changes nothing"
    with pytest.raises(SequenceGap) as gap:
        mirror.apply(published[4])
    assert (gap.value.have, gap.value.got) == (3, 5)
    assert mirror.content == "Let me add. " and mirror.seq == 3


async def test_a_snapshot_catches_a_mirror_up_and_later_events_continue_from_it() -> None:
    published: list[Event] = []
    writer = draft(published)
    await writer.step_started(1)
    await writer.text("Hello")
    snapshot = writer.snapshot()
    await writer.text(", world")

    mirror = AnswerDraft(message_id=7, created_at=STARTED)
    mirror.apply(published[0])
    assert mirror.apply(snapshot)
    assert mirror.apply(published[1]) is False, "the snapshot already had it"
    mirror.apply(published[2])

    assert (mirror.content, mirror.seq) == ("Hello, world", 3)
    assert mirror.state() == writer.state()


async def test_the_end_cancels_unfinished_calls_and_is_not_published() -> None:
    published: list[Event] = []
    writer = draft(published)
    await writer.step_started(1)
    await writer.tool_started(1, 0, "call_0", "add")
    await writer.tool_arguments(1, 0, '{"a": 1')

    ending = writer.finish("cancelled")

    assert len(published) == 3, "the runner publishes the end once it is saved"
    assert [(type(e), getattr(e, "status", None)) for e in ending] == [
        (ToolStatus, "cancelled"),
        (MessageStatus, "cancelled"),
    ]
    assert writer.calls[(1, 0)].status == "cancelled"
    assert writer.status == "cancelled" and not writer.in_progress


async def test_a_finished_call_keeps_its_status_at_the_end() -> None:
    writer = draft()
    await writer.tool_ready(1, 0, "call_0", "add", '{"a": 1, "b": 2}')
    await writer.tool_running(1, 0)
    await writer.tool_finished(1, 0, ToolResult.failure("boom"))

    ending = writer.finish("failed", "The model server answered 500.")

    assert [type(event) for event in ending] == [MessageStatus]
    assert writer.calls[(1, 0)].status == "failed"
    assert writer.error == "The model server answered 500."


def test_a_draft_restored_from_its_state_renders_like_the_original() -> None:
    state: dict[str, Any] = {
        "id": 3,
        "status": "streaming",
        "error": "",
        "model": "m",
        "content": "Before. After.",
        "reasoning": "",
        "steps": 2,
        "input_tokens": None,
        "output_tokens": None,
        "total_tokens": None,
        "created_at": STARTED.isoformat(),
        "finished_at": None,
        "tool_calls": [
            {
                "step": 1,
                "index": 0,
                "call_id": "c",
                "name": "add",
                "text_offset": 8,
                "arguments": "{}",
                "parsed_arguments": {},
                "status": "succeeded",
                "output": "3",
                "error": "",
                "started_at": STARTED.isoformat(),
                "finished_at": STARTED.isoformat(),
                "decision": "",
                "decided_by": "",
                "decided_at": None,
                "decision_reason": "",
                "server": "",
                "progress": None,
                "progress_total": None,
                "progress_message": "",
                "structured_output": None,
                "images": [],
            }
        ],
    }
    restored = AnswerDraft.from_state(state, seq=12)

    assert restored.seq == 12 and restored.state() == state
    assert [text for text, _ in restored.parts()] == ["Before. ", "After."]


async def test_a_decision_is_told_in_the_calls_events_and_reaches_a_mirror() -> None:
    published: list[Event] = []
    writer = draft(published)
    saves: list[int] = []
    writer.save_soon = lambda: saves.append(writer.seq)
    await writer.step_started(1)
    await writer.tool_ready(1, 0, "call_0", "rename", '{"title": "A"}')
    await writer.tool_ready(1, 1, "call_1", "rename", '{"title": "B"}')

    await writer.tool_awaiting_approval(1, 0)
    await writer.tool_awaiting_approval(1, 1)
    await writer.tool_running(1, 0, Decision(approved=True, by="alice"))
    await writer.tool_finished(1, 0, ToolResult(ok=True, output="renamed"))
    await writer.tool_denied(1, 1, Decision(approved=False, timed_out=True), "too late")

    changes = [event for event in published if isinstance(event, ToolStatus)][2:]
    assert [(e.index, e.status, e.decision, e.decided_by) for e in changes] == [
        (0, "awaiting_approval", "", ""),
        (1, "awaiting_approval", "", ""),
        (0, "running", "approved", "alice"),
        (0, "succeeded", "", ""),
        (1, "denied", "timed_out", ""),
    ]
    # Waiting and each decision are saved at once, not at the next checkpoint.
    assert saves == [changes[0].seq, changes[1].seq, changes[2].seq, changes[4].seq]
    approved, timed_out = writer.calls[(1, 0)], writer.calls[(1, 1)]
    assert (approved.status, approved.decision, approved.decided_by) == (
        "succeeded",
        "approved",
        "alice",
    )
    assert approved.decided_at == approved.started_at is not None
    assert (timed_out.status, timed_out.decision, timed_out.output) == (
        "denied",
        "timed_out",
        "too late",
    )
    assert timed_out.decided_at == timed_out.finished_at is not None
    assert timed_out.started_at is None
    # Denied is an end: the answer's end leaves it as it is.
    writer.finish("complete")
    assert writer.calls[(1, 1)].status == "denied"

    mirror = AnswerDraft(message_id=7, created_at=STARTED, model="fake-model")
    for event in published:
        assert mirror.apply(event_from_dict(json.loads(json.dumps(event_to_dict(event)))))
    assert mirror.calls == writer.calls


def test_each_event_class_is_named_as_its_wire_type() -> None:
    # "text.delta" is TextDelta, "message.status" MessageStatus: one name for code and wire.
    for wire_type, kind in EVENT_TYPES.items():
        assert kind.__name__ == "".join(part.capitalize() for part in wire_type.split("."))
