"""The WebSocket consumer both faces build on: one conversation's socket that follows its answers.

It owns what the chat page and the JSON API share: connecting (refused while draining, a
conversation of the user's or none), following answers through the hub, dropping events it has
and asking again from its last `seq` when one is missing, re-reading a silent answer from the
rows, the commands both take (turns, Stop, decisions), and catching every `Refusal` once. A face
(consumers.ChatConsumer, api.consumers.ApiConsumer) renders its own wire format: the `show_*`
and `refuse` methods, and the frames it reads (`receive_json`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from channels.generic.websocket import AsyncJsonWebsocketConsumer

from . import actions, drain, metrics, services, turns
from .live.events import Event, MessageStatus, Snapshot, event_from_dict
from .live.hub import conversation_group, hub
from .models import Conversation, Message
from .refusals import BadFrame, NotFound, Refusal

# A message action instead of a new message: it replaces part of the conversation.
REDO = frozenset(turns.ACTIONS)


@dataclass(frozen=True, slots=True)
class Command:
    """A command both faces take, read from either's frames."""

    kind: str  # "send", one of REDO, "stop", "approve" or "deny"
    text: object = None
    message_id: object = None
    model: str | None = None
    api_style: str | None = None
    tool_call_id: str = ""
    reason: str = ""


def ends_answer(event: Event) -> bool:
    """Whether the answer is finished once `event` is applied."""
    if isinstance(event, Snapshot):
        return event.message["status"] in Message.FINISHED
    return isinstance(event, MessageStatus) and event.status in Message.FINISHED


class Follower(AsyncJsonWebsocketConsumer):  # type: ignore[misc]
    # The face's name, for the open-sockets gauge.
    face = ""
    conversation: Conversation | None = None
    group = ""

    async def connect(self) -> None:
        metrics.socket_opened(self.face, self)
        # The last seq shown of each answer followed.
        self.seen: dict[int, int] = {}
        # The newest answer this socket has shown: a later one is a new turn.
        self.known_up_to = 0
        if drain.draining():
            # Refused at the handshake: the socket tries again, and a load balancer sends it to
            # another server.
            await self.close()
            return
        await self.accept(subprotocol=self.subprotocol())
        # Accepted first, then closed with a code that says why: a refused handshake tells the
        # other side nothing, and htmx would reconnect for ever.
        try:
            self.check_access()
            conversation = await services.aconversation_get(
                user=self.scope["user"],
                conversation_id=int(self.scope["url_route"]["kwargs"]["conversation_id"]),
            )
        except Conversation.DoesNotExist:
            await self.refuse_connection(NotFound("No such conversation."))
            return
        except Refusal as refusal:
            await self.refuse_connection(refusal)
            return
        self.group = conversation_group(conversation.pk)
        await self.channel_layer.group_add(self.group, self.channel_name)
        # An answer whose process died shows as interrupted, here and on the other sockets.
        await actions.answers_sweep(conversation_id=conversation.pk)
        self.conversation = conversation
        await self.opened()

    async def disconnect(self, code: int) -> None:
        metrics.socket_closed(self)
        hub().unfollow(self)
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.conversation is None:
            return  # Closed already; a frame sent before the close arrived is ignored.
        frame = None
        try:
            if text_data is None:
                raise BadFrame("invalid_json", self.TEXT_FRAMES)
            frame = await self.decode_json(text_data)
            await self.receive_json(frame)
        except Refusal as refusal:
            await self.refuse(refusal, frame)

    # What a face says and shows.

    TEXT_FRAMES = "Send text frames holding one JSON object."

    def subprotocol(self) -> str | None:
        return None

    def check_access(self) -> None:
        """Raise a Refusal if the socket may not open (before its conversation is looked up)."""

    async def refuse_connection(self, refusal: Refusal) -> None:
        raise NotImplementedError

    async def opened(self) -> None:
        """Show the conversation as it is, and follow what is running."""
        raise NotImplementedError

    async def refuse(self, refusal: Refusal, frame: Any) -> None:
        raise NotImplementedError

    async def turn_accepted(self, command: Command) -> None:
        """The turn is stored; its answer starts next."""

    async def show_turn(self, event: dict[str, Any]) -> None:
        raise NotImplementedError

    async def show_events(self, message_id: int, events: list[Event]) -> None:
        raise NotImplementedError

    async def show_row(self, message: Message, *, newer: bool) -> None:
        """A followed answer as the rows have it: `newer` than what was shown, or finished."""
        raise NotImplementedError

    async def show_ended(self, state: dict[str, Any], seq: int, followed: int | None) -> None:
        """An answer that ended without its run, at `seq`; `followed` is what this socket had
        shown of it (None if it did not follow it)."""
        raise NotImplementedError

    # Commands.

    async def run_command(self, command: Command) -> None:
        assert self.conversation is not None
        match command.kind:
            case "stop":
                await actions.answers_stop(conversation=self.conversation)
            case "approve" | "deny":
                await actions.tool_call_decide(
                    conversation_id=self.conversation.pk,
                    tool_call_id=command.tool_call_id,
                    approved=command.kind == "approve",
                    reason=command.reason,
                    decided_by=self.scope["user"].get_username(),
                )
            case _:
                # A draining server starts no new answer; one past this point runs and is
                # drained.
                with drain.turn_starting():
                    await self.start_turn(command)

    async def start_turn(self, command: Command) -> None:
        """A new message, or a message action (regenerate, retry, continue, edit)."""
        assert self.conversation is not None
        branch = command.kind in REDO
        if branch:
            user_message, assistant_message = await turns.turn_redo(
                conversation=self.conversation,
                action=command.kind,
                message_id=command.message_id,
                text=command.text,
            )
        else:
            user_message, assistant_message = await turns.turn_start(
                conversation=self.conversation,
                text=command.text,
                model=command.model,
                api_style=command.api_style,
            )
        await self.turn_accepted(command)
        await turns.turn_run(
            user_message=user_message,
            assistant_message=assistant_message,
            show=self.conversation_turn,
            branch=branch,
        )

    # Following answers.

    async def follow(self, message_id: int, *, after: int) -> None:
        """Show the answer's events after `after`, then each new one."""
        assert self.conversation is not None
        self.seen[message_id] = after
        await hub().follow(
            self, conversation_id=self.conversation.pk, message_id=message_id, after=after
        )

    def forget(self, message_id: int) -> int | None:
        """Follow the answer no more; the seq shown of it, None if it was not followed."""
        hub().unfollow(self, message_id)
        return self.seen.pop(message_id, None)

    # Group events: the conversation's (actions, turns) and its answers' (live.hub).

    async def conversation_turn(self, event: dict[str, Any]) -> None:
        """A new turn, from this socket (shown first) or any other of the conversation."""
        answer_id = event["answer"]["id"]
        if answer_id <= self.known_up_to:
            # Shown already: the echo of this socket's own turn, or read from the rows by a
            # socket that opened since.
            return
        self.known_up_to = answer_id
        await self.show_turn(event)
        await self.follow(answer_id, after=event["seq"])

    async def answer_ended(self, event: dict[str, Any]) -> None:
        """An answer ended without its run (its process died, or Stop found none)."""
        followed = self.forget(event["answer"]["id"])
        await self.show_ended(event["answer"], event["seq"], followed)

    async def run_events(self, event: dict[str, Any]) -> None:
        """An answer's events, relayed from the process that runs it."""
        hub().heard(self, event["message_id"])
        events = [event_from_dict(data) for data in event["events"]]
        await self.receive_events(event["message_id"], events)

    # live.hub.Subscriber

    def seen_seq(self, message_id: int) -> int:
        return self.seen.get(message_id, 0)

    async def receive_events(self, message_id: int, events: list[Event]) -> None:
        seq = self.seen.get(message_id)
        if seq is None:
            return
        fresh = []
        for event in events:
            if not isinstance(event, Snapshot) and event.seq > seq + 1:
                # A delivery from another process was lost: ask again from what was shown.
                assert self.conversation is not None
                await hub().follow(
                    self, conversation_id=self.conversation.pk, message_id=message_id, after=seq
                )
                break
            if event.seq > seq:
                fresh.append(event)
                seq = event.seq
        await self.send_events(message_id, fresh)

    async def send_events(self, message_id: int, events: list[Event]) -> None:
        """Show `events`, the next of the answer's; it is forgotten once one ends it."""
        end = next((at for at, event in enumerate(events) if ends_answer(event)), None)
        if end is not None:
            events = events[: end + 1]
        if not events:
            return
        if message_id in self.seen:
            self.seen[message_id] = events[-1].seq
        await self.show_events(message_id, events)
        if end is not None:
            self.forget(message_id)

    async def refresh(self, message_id: int) -> None:
        """Nothing heard of a followed answer for a while: its state from the rows, if newer."""
        assert self.conversation is not None
        try:
            message = await services.amessage_get(
                conversation_id=self.conversation.pk, message_id=message_id
            )
        except Message.DoesNotExist:
            self.forget(message_id)
            return
        seen = self.seen.get(message_id)
        if seen is None or (message.seq <= seen and message.in_progress):
            return
        if message.in_progress:
            self.seen[message_id] = message.seq
        else:
            self.forget(message_id)
        await self.show_row(message, newer=message.seq > seen)
