"""Where running answers' events go: straight to subscribers in this process, and over the
channel layer to subscribers in others.

Each process (each event loop) has one `Hub`. An answer run here is a `RunStream`: it keeps
the answer's events and, for every subscriber, how far that subscriber has got, so a late or
lagging subscriber is caught up from the kept events (or with a snapshot) and a live one gets
each new event within one delivery window. Deliveries are paced by `Pacer`: an event after a
quiet spell goes out at once, faster ones are batched to about one delivery per window.

A subscriber in another process asks the `runs-<conversation>` group, which the hubs running
that conversation's answers join, and renews the request every `RENEW` seconds with the last
`seq` it has; the running hub sends the events after it to the subscriber's channel. The layer
is at-most-once, so a subscriber that sees a gap asks again from its last `seq`.

Stop is sent to the same group; the hubs running one of the answers say so, and an answer no
hub claims within `STOP_REPLY` seconds has no live run (its process died). A decision on a tool
call that waits for approval goes the same way: the hub running its answer resolves the wait and
says whether the call was waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
import weakref
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, Protocol

from channels.exceptions import ChannelFull
from channels.layers import BaseChannelLayer, get_channel_layer

from ..streaming.events import ToolCallReady
from ..streaming.loop import Decision
from .draft import AnswerDraft
from .events import Event, event_to_dict
from .pacer import Pacer

logger = logging.getLogger(__name__)

# Events kept per answer; a subscriber further behind gets a snapshot instead.
KEEP = 10_000
# How long a finished answer's stream stays, for subscribers still catching up.
LINGER = 10.0
# A remote subscriber renews its request this often, and is dropped after LEASE without one.
RENEW = 3.0
LEASE = 15.0
# A remote subscriber that has heard nothing for this long re-reads the answer from the rows.
SILENT = 10.0
# How long Stop waits for the processes running the conversation's answers to say so.
STOP_REPLY = 1.5


def runs_group(conversation_id: int) -> str:
    """The group of the hubs running one of the conversation's answers."""
    return f"runs-{conversation_id}"


def conversation_group(conversation_id: int) -> str:
    """The conversation's open pages, told of each new turn and of answers ended without a run."""
    return f"conversation-{conversation_id}"


class Subscriber(Protocol):
    """A page or client following answers (a consumer)."""

    # Where another process's hub sends this subscriber's events, as `run.events` messages.
    channel_name: str

    async def receive_events(self, message_id: int, events: list[Event]) -> None: ...
    def seen_seq(self, message_id: int) -> int: ...
    async def refresh(self, message_id: int) -> None:
        """Nothing heard for a while: re-read the answer from the database."""


class RunStream:
    """One answer being run in this process: its events, subscribers, and their delivery."""

    def __init__(self, hub: Hub, conversation_id: int, draft: AnswerDraft) -> None:
        self.hub = hub
        self.conversation_id = conversation_id
        self.draft = draft
        self.task: asyncio.Task[Any] | None = None
        # Set when the run writes its final state; Stop then has nothing left to stop.
        self.ending = False
        # Why the run was cut short without a Stop (its process is shutting down), if it was.
        self.interrupted = ""
        self._events: list[Event] = []
        self._first_seq = 1
        self._local: dict[Subscriber, int] = {}
        # channel name -> [last seq sent, lease deadline]
        self._remote: dict[str, list[float]] = {}
        self._wakeup = asyncio.Event()
        self._pacer = Pacer()
        self._deliverer = asyncio.create_task(self._deliver_forever())
        # Calls waiting for the user's decision: (step, index) -> what the decision resolves.
        self._waiting: dict[tuple[int, int], asyncio.Future[Decision]] = {}
        draft.publish = self.publish

    @property
    def message_id(self) -> int:
        return self.draft.id

    def publish(self, event: Event) -> None:
        self._pacer.event(time.monotonic())
        self._events.append(event)
        if len(self._events) > KEEP:
            dropped = len(self._events) - KEEP // 2
            del self._events[:dropped]
            self._first_seq += dropped
        if self._local or self._remote:
            self._wakeup.set()

    def subscribe(self, subscriber: Subscriber, *, after: int) -> None:
        self._local[subscriber] = after
        self._pacer.quiet = True  # a newcomer is caught up at once
        self._wakeup.set()

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self._local.pop(subscriber, None)

    def subscribe_remote(self, channel: str, *, after: int) -> None:
        # A request from behind what was sent means a delivery was lost: send it again.
        self._remote[channel] = [after, time.monotonic() + LEASE]
        self._wakeup.set()

    def cancel(self) -> None:
        if self.task is not None and not self.ending:
            self.task.cancel()

    def interrupt(self, reason: str) -> None:
        """End the run as `interrupted`, with `reason` as its error; its text so far is kept."""
        if self.task is not None and not self.ending:
            self.interrupted = reason
            self.task.cancel()

    def delivered(self) -> bool:
        """Whether every subscriber has been sent every event published so far."""
        last = self._first_seq + len(self._events) - 1
        return all(seq >= last for seq in self._local.values()) and all(
            position >= last for position, _ in self._remote.values()
        )

    # streaming.loop.Approver: the tool loop waits here for a decision on a call.

    async def decide(self, step: int, index: int, call: ToolCallReady) -> Decision:
        waiting: asyncio.Future[Decision] = asyncio.get_running_loop().create_future()
        self._waiting[(step, index)] = waiting
        try:
            return await waiting
        finally:
            del self._waiting[(step, index)]

    def resolve(self, step: int, index: int, decision: Decision) -> bool:
        """Decide on a call that waits for it; False if it does not (decided already, or none)."""
        waiting = self._waiting.get((step, index))
        if waiting is None or waiting.done():
            return False
        waiting.set_result(decision)
        return True

    def finish(self, events: list[Event]) -> None:
        """Publish the answer's final events; the stream lingers for late subscribers."""
        for event in events:
            self.publish(event)
        asyncio.get_running_loop().call_later(LINGER, self.hub.forget, self)

    def close(self) -> None:
        self._deliverer.cancel()

    def _after(self, seq: int) -> tuple[list[Event], int]:
        """The events a subscriber at `seq` has not had, and the seq it then has."""
        last = self._first_seq + len(self._events) - 1
        if seq >= last:
            return [], seq
        if seq + 1 < self._first_seq:
            snapshot = self.draft.snapshot()
            return [snapshot], snapshot.seq
        return self._events[seq + 1 - self._first_seq :], last

    async def _deliver_forever(self) -> None:
        while True:
            await self._wakeup.wait()
            if wait := self._pacer.wait(time.monotonic()):
                await asyncio.sleep(wait)
            self._wakeup.clear()
            try:
                if await self._deliver():
                    self._pacer.delivered(time.monotonic())
            except Exception:
                # Whatever it was, the next delivery may go better; a dead deliverer helps no one.
                logger.exception("delivering message %s's events failed", self.message_id)

    async def _deliver(self) -> bool:
        """Send every subscriber what it has not had; whether there was anything to send."""
        sent = False
        for subscriber, seq in list(self._local.items()):
            events, seq = self._after(seq)
            if not events:
                continue
            sent = True
            self._local[subscriber] = seq
            try:
                await subscriber.receive_events(self.message_id, events)
            except Exception:
                logger.exception("a subscriber of message %s failed; dropped", self.message_id)
                self._local.pop(subscriber, None)
        now = time.monotonic()
        for channel, (position, lease) in list(self._remote.items()):
            if lease < now:
                del self._remote[channel]
                continue
            events, seq = self._after(int(position))
            if not events:
                continue
            sent = True
            self._remote[channel][0] = seq
            message = {
                "type": "run.events",
                "message_id": self.message_id,
                "events": [event_to_dict(event) for event in events],
            }
            try:
                await self.hub.layer.send(channel, message)
            except ChannelFull:
                # The subscriber is not reading; it asks again from its last seq when it does.
                del self._remote[channel]
            except Exception:
                logger.warning("could not relay message %s to %s", self.message_id, channel)
                del self._remote[channel]
        return sent


@dataclass(slots=True)
class RemoteFollow:
    conversation_id: int
    heard: float = field(default_factory=time.monotonic)


class Hub:
    """This event loop's running answers, and its subscribers to answers run elsewhere."""

    def __init__(self) -> None:
        layer = get_channel_layer()
        assert layer is not None, "CHANNEL_LAYERS must be configured"
        self.layer: BaseChannelLayer = layer
        self.runs: dict[int, RunStream] = {}
        self.channel = ""
        self._reader: asyncio.Task[None] | None = None
        self._follows: dict[tuple[int, Subscriber], RemoteFollow] = {}
        self._renewer: asyncio.Task[None] | None = None
        # Stops awaiting replies: token -> (answers no hub claimed yet, set once none is left)
        self._stops: dict[str, tuple[set[int], asyncio.Event]] = {}
        # Decisions sent to other processes: token -> whether the call was waiting
        self._decisions: dict[str, asyncio.Future[bool]] = {}

    # Producing: the runner's side.

    async def start_run(self, conversation_id: int, draft: AnswerDraft) -> RunStream:
        """Register an answer about to run here, reachable from other processes too."""
        run = RunStream(self, conversation_id, draft)
        self.runs[draft.id] = run
        try:
            await self.layer.group_add(runs_group(conversation_id), await self._channel())
        except Exception:
            logger.warning("other processes cannot follow or stop message %s", draft.id)
        return run

    def forget(self, run: RunStream) -> None:
        if self.runs.get(run.message_id) is run:
            del self.runs[run.message_id]
        run.close()
        if self.channel and not any(
            other.conversation_id == run.conversation_id for other in self.runs.values()
        ):
            asyncio.get_running_loop().create_task(self._leave(runs_group(run.conversation_id)))

    async def _leave(self, group: str) -> None:
        with contextlib.suppress(Exception):
            await self.layer.group_discard(group, self.channel)

    async def stop(self, conversation_id: int, message_ids: Collection[int] = ()) -> set[int]:
        """Stop the conversation's running answers, here and in every other process.

        Returns those of `message_ids` that no process runs: none claimed them within
        `STOP_REPLY` seconds (or the other processes could not be asked).
        """
        unclaimed = set(message_ids)
        for run in list(self.runs.values()):
            if run.conversation_id == conversation_id:
                run.cancel()
                unclaimed.discard(run.message_id)
        request: dict[str, Any] = {"type": "run.stop", "conversation_id": conversation_id}
        token = uuid.uuid4().hex
        answered = asyncio.Event()
        if unclaimed:
            self._stops[token] = (unclaimed, answered)
            request |= {"reply_to": await self._channel(), "token": token}
        try:
            await self.layer.group_send(runs_group(conversation_id), request)
            if unclaimed:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(STOP_REPLY):
                        await answered.wait()
        except Exception:
            logger.warning("could not ask other processes to stop conversation %s", conversation_id)
        finally:
            self._stops.pop(token, None)
        return unclaimed

    async def decide(
        self, conversation_id: int, message_id: int, step: int, index: int, decision: Decision
    ) -> bool:
        """Give a waiting call of the conversation its decision, wherever its answer runs.

        False when no process's call by that position waits for one (decided already, no such
        call, another conversation's, or no process answered within `STOP_REPLY` seconds).
        """
        run = self.runs.get(message_id)
        if run is not None:
            return run.conversation_id == conversation_id and run.resolve(step, index, decision)
        token = uuid.uuid4().hex
        claimed: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._decisions[token] = claimed
        request = {
            "type": "run.decide",
            "conversation_id": conversation_id,
            "message_id": message_id,
            "step": step,
            "index": index,
            "approved": decision.approved,
            "by": decision.by,
            "reason": decision.reason,
            "token": token,
        }
        try:
            request["reply_to"] = await self._channel()
            await self.layer.group_send(runs_group(conversation_id), request)
            async with asyncio.timeout(STOP_REPLY):
                return await claimed
        except TimeoutError:
            return False
        except Exception:
            logger.warning("could not send a decision to conversation %s", conversation_id)
            return False
        finally:
            self._decisions.pop(token, None)

    # Subscribing: the faces' side.

    async def follow(
        self, subscriber: Subscriber, *, conversation_id: int, message_id: int, after: int
    ) -> None:
        """Send `subscriber` the answer's events after `after`, then each new one."""
        run = self.runs.get(message_id)
        if run is not None:
            self._follows.pop((message_id, subscriber), None)
            run.subscribe(subscriber, after=after)
            return
        self._follows[(message_id, subscriber)] = RemoteFollow(conversation_id)
        await self._ask(subscriber, conversation_id, message_id, after)
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.create_task(self._renew_forever())

    def heard(self, subscriber: Subscriber, message_id: int) -> None:
        follow = self._follows.get((message_id, subscriber))
        if follow is not None:
            follow.heard = time.monotonic()

    def unfollow(self, subscriber: Subscriber, message_id: int | None = None) -> None:
        """Stop sending `subscriber` one answer's events, or every answer's."""
        for run in self.runs.values():
            if message_id is None or run.message_id == message_id:
                run.unsubscribe(subscriber)
        for key in list(self._follows):
            if key[1] is subscriber and (message_id is None or key[0] == message_id):
                del self._follows[key]

    async def _ask(
        self, subscriber: Subscriber, conversation_id: int, message_id: int, after: int
    ) -> None:
        try:
            await self.layer.group_send(
                runs_group(conversation_id),
                {
                    "type": "run.subscribe",
                    "message_id": message_id,
                    "after": after,
                    "reply_to": subscriber.channel_name,
                },
            )
        except Exception:
            logger.warning("could not ask for message %s's events", message_id)

    async def _renew_forever(self) -> None:
        while self._follows:
            await asyncio.sleep(RENEW)
            for (message_id, subscriber), follow in list(self._follows.items()):
                if (message_id, subscriber) not in self._follows:
                    continue
                after = subscriber.seen_seq(message_id)
                if message_id in self.runs:
                    await self.follow(
                        subscriber,
                        conversation_id=follow.conversation_id,
                        message_id=message_id,
                        after=after,
                    )
                    continue
                if time.monotonic() - follow.heard > SILENT:
                    follow.heard = time.monotonic()
                    try:
                        await subscriber.refresh(message_id)
                    except Exception:
                        logger.exception("refreshing message %s failed", message_id)
                if (message_id, subscriber) in self._follows:
                    await self._ask(subscriber, follow.conversation_id, message_id, after)

    # The layer: requests from other processes.

    async def _channel(self) -> str:
        if not self.channel:
            # The default prefix: channels-redis pops all of a process's "specific." channels with
            # one blocking read; a channel of another prefix would hold that read for itself.
            self.channel = await self.layer.new_channel()
            self._reader = asyncio.create_task(self._read_forever())
        return self.channel

    async def _read_forever(self) -> None:
        while True:
            try:
                message = await self.layer.receive(self.channel)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.warning("the channel layer failed; retrying in 1 s", exc_info=True)
                await asyncio.sleep(1)
                continue
            self.handle(message)

    def handle(self, message: dict[str, Any]) -> None:
        match message:
            case {"type": "run.subscribe", "message_id": int(), "after": int(), "reply_to": str()}:
                run = self.runs.get(message["message_id"])
                if run is not None:
                    run.subscribe_remote(message["reply_to"], after=message["after"])
            case {"type": "run.stop", "conversation_id": int(conversation_id)}:
                stopped = []
                for run in list(self.runs.values()):
                    if run.conversation_id == conversation_id:
                        run.cancel()
                        stopped.append(run.message_id)
                if stopped and isinstance(message.get("reply_to"), str):
                    reply = {"type": "run.stopping", "token": message.get("token"), "ids": stopped}
                    asyncio.get_running_loop().create_task(self._reply(message["reply_to"], reply))
            case {
                "type": "run.decide",
                "conversation_id": int(conversation_id),
                "message_id": int(message_id),
                "step": int(step),
                "index": int(index),
                "approved": bool(approved),
                "by": str(by),
                "reason": str(reason),
                "reply_to": str(reply_to),
                "token": str(token),
            }:
                run = self.runs.get(message_id)
                if run is not None and run.conversation_id == conversation_id:
                    decision = Decision(approved=approved, by=by, reason=reason)
                    reply = {
                        "type": "run.decided",
                        "token": token,
                        "waiting": run.resolve(step, index, decision),
                    }
                    asyncio.get_running_loop().create_task(self._reply(reply_to, reply))
            case {"type": "run.decided", "token": str(token), "waiting": bool(was_waiting)}:
                claimed = self._decisions.get(token)
                if claimed is not None and not claimed.done():
                    claimed.set_result(was_waiting)
            case {"type": "run.stopping", "token": str(token), "ids": list(message_ids)}:
                if waiting := self._stops.get(token):
                    unclaimed, answered = waiting
                    unclaimed.difference_update(message_ids)
                    if not unclaimed:
                        answered.set()

    async def _reply(self, channel: str, message: dict[str, Any]) -> None:
        try:
            await self.layer.send(channel, message)
        except Exception:
            logger.warning("could not answer %s from %s", message["type"], channel)


_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Hub] = weakref.WeakKeyDictionary()


def hub() -> Hub:
    """The running event loop's hub."""
    loop = asyncio.get_running_loop()
    found = _hubs.get(loop)
    if found is None:
        found = _hubs[loop] = Hub()
    return found
