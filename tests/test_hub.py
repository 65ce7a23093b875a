"""Delivering an answer's events: batching, catching up, other processes, a lossy layer, Stop.

A second `Hub` stands in for another Daphne process: it shares the channel layer with this
process's hub, and nothing else.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from conversations.live import hub as live
from conversations.live import pacer as pacing
from conversations.live.draft import AnswerDraft
from conversations.live.events import Event, Snapshot, TextDelta
from conversations.models import Conversation, Message
from tests.helpers.chat import Connect, appended_text, finished, opened, receive_until


class Recorder:
    """A subscriber in this process that keeps each batch it is sent."""

    channel_name = "unused"

    def __init__(self) -> None:
        self.batches: list[list[Event]] = []
        self.arrived = asyncio.Event()

    async def receive_events(self, message_id: int, events: list[Event]) -> None:
        self.batches.append(events)
        self.arrived.set()

    def seen_seq(self, message_id: int) -> int:
        return self.batches[-1][-1].seq if self.batches else 0

    async def refresh(self, message_id: int) -> None:
        pass

    async def next_batch(self) -> list[Event]:
        await asyncio.wait_for(self.arrived.wait(), 2)
        self.arrived.clear()
        return self.batches[-1]


async def running(hub: live.Hub, message_id: int = 1, conversation_id: int = 1) -> AnswerDraft:
    draft = AnswerDraft(message_id=message_id, created_at=timezone.now())
    await hub.start_run(conversation_id, draft)
    return draft


async def test_an_event_after_a_quiet_spell_goes_at_once_and_a_burst_goes_together() -> None:
    hub = live.Hub()
    draft = await running(hub)
    subscriber = Recorder()
    await hub.follow(subscriber, conversation_id=1, message_id=1, after=0)

    await draft.text("first")
    assert [e.seq for e in await subscriber.next_batch()] == [1]
    for word in ["a", "b", "c", "d", "e"]:
        await draft.text(word)
    assert [e.seq for e in await subscriber.next_batch()] == [2, 3, 4, 5, 6]
    await asyncio.sleep(pacing.WINDOW * 2)
    await draft.text("after a pause")
    assert [e.seq for e in await subscriber.next_batch()] == [7]
    assert len(subscriber.batches) == 3


def deliveries(event_times: list[float], pacer: pacing.Pacer) -> list[float]:
    """When a deliverer paced by `pacer` sends, for events published at `event_times`."""
    sent: list[float] = []
    pending_since: float | None = None
    clock = 0.0
    for at in [*event_times, float("inf")]:
        # Deliver what is pending, as the deliverer would, until the next event is due.
        while pending_since is not None:
            ready = clock + pacer.wait(clock)
            if ready > at:
                clock = at
                break
            clock = ready
            pacer.delivered(clock)
            sent.append(clock)
            pending_since = None
        if at == float("inf"):
            break
        clock = max(clock, at)
        pacer.event(at)
        pending_since = at if pending_since is None else pending_since
    return sent


def test_a_steady_twenty_a_second_stream_is_never_held_back() -> None:
    pacer = pacing.Pacer()
    # A newcomer's catch-up and a tool's status spend the burst just before the tokens start.
    pacer.delivered(0.0)
    pacer.delivered(0.001)
    tokens = [0.002 + number * pacing.WINDOW for number in range(100)]

    assert deliveries(tokens, pacer) == tokens, "each token goes the moment it arrives"


def test_an_answers_first_events_are_not_held_back() -> None:
    pacer = pacing.Pacer()
    pacer.delivered(0.0)  # a newcomer's catch-up
    # The first step starts, then the first token comes right after, then the rest.
    events = [0.006, 0.009, *(0.009 + number * pacing.WINDOW for number in range(1, 20))]

    assert deliveries(events, pacer) == events


def test_a_fast_stream_is_batched_to_about_twenty_deliveries_a_second() -> None:
    tokens = [number * 0.002 for number in range(500)]  # 500 a second for a second

    sent = deliveries(tokens, pacing.Pacer())

    assert 20 <= len(sent) <= 20 + pacing.BURST
    assert sent[0] == 0.0, "the first goes at once"
    after_the_burst = sent[int(pacing.BURST) :]
    gaps = [later - earlier for earlier, later in itertools.pairwise(after_the_burst)]
    assert min(gaps) >= pacing.WINDOW * 0.99


async def test_a_late_subscriber_gets_what_it_missed_then_the_rest() -> None:
    hub = live.Hub()
    draft = await running(hub)
    for word in ["one", "two", "three"]:
        await draft.text(word)

    subscriber = Recorder()
    await hub.follow(subscriber, conversation_id=1, message_id=1, after=1)
    assert [e.seq for e in await subscriber.next_batch()] == [2, 3]
    await draft.text("four")
    assert [e.seq for e in await subscriber.next_batch()] == [4]


async def test_a_subscriber_behind_the_kept_events_gets_a_snapshot(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(live, "KEEP", 4)
    hub = live.Hub()
    draft = await running(hub)
    for number in range(10):
        await draft.text(f"{number} ")

    subscriber = Recorder()
    await hub.follow(subscriber, conversation_id=1, message_id=1, after=0)
    [snapshot] = await subscriber.next_batch()
    assert isinstance(snapshot, Snapshot) and snapshot.seq == 10
    assert snapshot.message["content"] == "0 1 2 3 4 5 6 7 8 9 "
    await draft.text("10")
    [after] = await subscriber.next_batch()
    assert isinstance(after, TextDelta) and after.seq == 11


async def test_stop_reaches_an_answer_run_by_another_process() -> None:
    elsewhere = live.Hub()
    run = await elsewhere.start_run(5, AnswerDraft(message_id=9, created_at=timezone.now()))
    run.task = asyncio.create_task(asyncio.sleep(60))

    # Message 10 is one no process runs any more.
    unclaimed = await live.Hub().stop(5, [9, 10])

    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(run.task, 2)
    assert unclaimed == {10}


class LossyLayer:
    """The channel layer, but the `drop`th answer-events message sent through it is lost."""

    def __init__(self, layer: Any, drop: int) -> None:
        self.layer = layer
        self.drop = drop
        self.sent = 0

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        if message["type"] == "run.events":
            self.sent += 1
            if self.sent == self.drop:
                return
        await self.layer.send(channel, message)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.layer, name)


@pytest.mark.django_db(transaction=True)
async def test_a_page_on_another_process_catches_up_after_a_lost_delivery(
    connect: Connect, user: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only the gap the next delivery reveals can bring the lost words back in time.
    monkeypatch.setattr(live, "RENEW", 60)
    conversation = await Conversation.objects.acreate(owner=user)
    message = await Message.objects.acreate(
        conversation=conversation, role="assistant", status="streaming", model="m"
    )
    # The answer runs in "another process": a hub of its own whose deliveries can be lost.
    elsewhere = live.Hub()
    lossy = LossyLayer(elsewhere.layer, drop=2)
    elsewhere.layer = lossy  # type: ignore[assignment]
    draft = AnswerDraft(message_id=message.pk, created_at=message.created_at, model="m")
    run = await elsewhere.start_run(conversation.pk, draft)

    page = await opened(connect, conversation, user)
    words = [f"w{number} " for number in range(8)]
    for word in words:
        await draft.text(word)
        await asyncio.sleep(pacing.WINDOW * 2)  # one delivery per word; the second is lost
    run.finish(draft.finish("complete"))
    frames = await receive_until(page, finished, timeout=5)

    assert lossy.sent > len(words) + 1, "the lost word was sent again"
    shown = appended_text(frames, message.pk)
    assert "".join(shown) == "".join(words), "every word once, in order, the lost one too"
    assert "".join(words).strip() in frames[-1]
