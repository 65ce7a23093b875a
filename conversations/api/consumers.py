"""The JSON API's socket: one conversation's commands in, its answers' events out (docs/api.md)."""

from __future__ import annotations

import json
import logging
from typing import Any

from channels.generic.websocket import AsyncWebsocketConsumer

from .. import limits, metrics, services
from ..live import approvals, drain, sweeper, turns
from ..live.events import (
    CallArgumentsAppended,
    CallChanged,
    CallStarted,
    Event,
    Snapshot,
    StatusChanged,
    event_from_dict,
    event_to_dict,
)
from ..live.hub import conversation_group, hub
from ..models import Conversation, Message
from .protocol import conversation_state, message_state, state_with_ids, tool_call_id

logger = logging.getLogger(__name__)

SUBPROTOCOL = "chat.v1"
# Close codes after the `error` event that says why (accepted first: a refused handshake tells a
# client nothing).
UNAUTHORIZED = 4401
NOT_FOUND = 4404
MAX_FRAME = 64 * 1024
FINAL = frozenset(
    {
        Message.Status.COMPLETE,
        Message.Status.FAILED,
        Message.Status.CANCELLED,
        Message.Status.INTERRUPTED,
    }
)
TOOL_EVENTS = (CallStarted, CallArgumentsAppended, CallChanged)


class CommandError(Exception):
    """A command refused: its `code` and message go back to the client in an `error` event."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class ApiConsumer(AsyncWebsocketConsumer):  # type: ignore[misc]
    conversation: Conversation | None = None
    group = ""

    async def connect(self) -> None:
        metrics.socket_opened("api", self)
        # The last seq sent to the client of each answer it follows.
        self.sent: dict[int, int] = {}
        # The newest answer the client knows of: later ones come as `message.created`.
        self.known_up_to = 0
        if drain.draining():
            # Refused at the handshake: the client connects again, and a load balancer sends it
            # to another server.
            await self.close()
            return
        offered = self.scope.get("subprotocols") or []
        await self.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in offered else None)
        auth_error = self.scope.get("api_auth_error", "Send an API token.")
        if auth_error:
            await self.send_error("unauthorized", auth_error)
            await self.close(code=UNAUTHORIZED)
            return
        try:
            conversation = await services.aconversation_get(
                user=self.scope["user"],
                conversation_id=int(self.scope["url_route"]["kwargs"]["conversation_id"]),
            )
        except Conversation.DoesNotExist:
            await self.send_error("not_found", "No such conversation.")
            await self.close(code=NOT_FOUND)
            return
        self.group = conversation_group(conversation.pk)
        await self.channel_layer.group_add(self.group, self.channel_name)
        # An answer whose process died shows as interrupted.
        await sweeper.sweep(conversation_id=conversation.pk)
        answer = await services.aanswer_latest(conversation=conversation)
        self.known_up_to = answer.pk if answer is not None else 0
        self.conversation = conversation
        await self.send_json(
            {
                "type": "ready",
                "seq": None,
                "conversation": conversation_state(conversation),
                "answer": None
                if answer is None
                else {"message_id": answer.pk, "status": answer.status, "seq": answer.seq},
            }
        )

    async def disconnect(self, code: int) -> None:
        metrics.socket_closed(self)
        hub().unfollow(self)
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def send_json(self, data: dict[str, Any]) -> None:
        await self.send(text_data=json.dumps(data, ensure_ascii=False))

    async def send_error(self, code: str, message: str, command_id: Any = None) -> None:
        error: dict[str, Any] = {"type": "error", "seq": None, "code": code, "message": message}
        if command_id is not None:
            error["command_id"] = command_id
        await self.send_json(error)

    # Commands.

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.conversation is None:
            return  # Closed already; a frame sent before the close arrived is ignored.
        command_id = None
        try:
            frame = parse_frame(text_data)
            command_id = frame.get("id")
            check_command(frame)
            await self.run_command(frame)
        except CommandError as error:
            await self.send_error(error.code, str(error), command_id)

    async def run_command(self, frame: dict[str, Any]) -> None:
        assert self.conversation is not None
        match frame["type"]:
            case "send" | "regenerate" | "retry" | "continue" | "edit":
                await self.send_turn(frame)
            case "stop":
                await sweeper.stop(conversation=self.conversation)
            case "approve" | "deny":
                try:
                    await approvals.decide(
                        conversation_id=self.conversation.pk,
                        tool_call_id=frame["tool_call_id"],
                        approved=frame["type"] == "approve",
                        reason=frame.get("reason", ""),
                        decided_by=self.scope["user"].get_username(),
                    )
                except approvals.NotWaiting as error:
                    raise CommandError("not_waiting", str(error)) from None
            case "resume":
                await self.resume(message_id=frame.get("message_id"), after=frame["after"])
            case "ping":
                pong: dict[str, Any] = {"type": "pong", "seq": None}
                if "id" in frame:
                    pong["command_id"] = frame["id"]
                await self.send_json(pong)

    async def send_turn(self, frame: dict[str, Any]) -> None:
        """`send`, or a message action (regenerate, retry, continue, edit), which supersedes part
        of the conversation."""
        # A draining server starts no new answer; one past this point runs and is drained.
        try:
            with drain.turn_starting():
                await self.start_turn(frame)
        except drain.Refused as refused:
            raise CommandError("restarting", str(refused)) from None

    async def start_turn(self, frame: dict[str, Any]) -> None:
        assert self.conversation is not None
        branch = frame["type"] != "send"
        try:
            if branch:
                user_message, assistant_message = await turns.turn_redo(
                    conversation=self.conversation,
                    action=frame["type"],
                    message_id=frame.get("message_id"),
                    text=frame.get("text"),
                )
            else:
                user_message, assistant_message = await turns.turn_start(
                    conversation=self.conversation,
                    text=frame["text"],
                    model=frame.get("model"),
                    api_style=frame.get("api_style"),
                )
        except services.AnswerRunning as error:
            raise CommandError("busy", str(error)) from None
        except services.NoSuchMessage as error:
            raise CommandError("not_found", str(error)) from None
        except services.ActionUnavailable as error:
            raise CommandError("unavailable", str(error)) from None
        except services.ChatInputError as error:
            raise CommandError("invalid_input", str(error)) from None
        except limits.LimitReached as error:
            raise CommandError("rate_limited", str(error)) from None
        await turns.turn_run(
            user_message=user_message,
            assistant_message=assistant_message,
            show=self.conversation_turn,
            branch=branch,
        )

    async def resume(self, *, message_id: int | None, after: int) -> None:
        """The answer's events after `after`, then its live ones; a finished answer's state if
        the client has less of it than the rows."""
        assert self.conversation is not None
        try:
            if message_id is None:
                message = await services.aanswer_latest(conversation=self.conversation)
                if message is None:
                    raise Message.DoesNotExist
            else:
                message = await services.amessage_get(
                    conversation_id=self.conversation.pk, message_id=message_id
                )
                if message.role != Message.Role.ASSISTANT:
                    raise Message.DoesNotExist
        except Message.DoesNotExist:
            raise CommandError("not_found", "No such answer in this conversation.") from None
        if message.in_progress:
            await self.follow(message.pk, after=after)
        elif after < message.seq:
            hub().unfollow(self, message.pk)
            self.sent.pop(message.pk, None)
            await self.send_events(message.pk, [Snapshot(message.seq, message_state(message))])

    async def follow(self, message_id: int, *, after: int) -> None:
        assert self.conversation is not None
        self.sent[message_id] = after
        await hub().follow(
            self, conversation_id=self.conversation.pk, message_id=message_id, after=after
        )

    # Events.

    async def conversation_turn(self, event: dict[str, Any]) -> None:
        """A new turn, from this client or any other socket of the conversation."""
        answer = event["answer"]
        if answer["id"] <= self.known_up_to:
            return  # The echo of one this client was sent already, or known since it connected.
        self.known_up_to = answer["id"]
        await self.send_json(
            {
                "type": "message.created",
                "seq": event["seq"],
                "message_id": answer["id"],
                "user_message": event["user_message"],
                "message": state_with_ids(answer),
            }
            | ({"message_ids": event["message_ids"]} if "message_ids" in event else {})
        )
        await self.follow(answer["id"], after=event["seq"])

    async def answer_ended(self, event: dict[str, Any]) -> None:
        """An answer ended without its run (its process died, or Stop found none): its final
        state, numbered past whatever the client has of it."""
        message_id = event["answer"]["id"]
        seq = max(event["seq"], self.sent.pop(message_id, 0) + 1)
        hub().unfollow(self, message_id)
        await self.send_json(snapshot_data(message_id, seq, state_with_ids(event["answer"])))

    async def conversation_changed(self, event: dict[str, Any]) -> None:
        """The conversation's title changed (for its pages): clients read it from its state."""

    async def run_events(self, event: dict[str, Any]) -> None:
        """An answer's events, relayed from the process that runs it."""
        hub().heard(self, event["message_id"])
        events = [event_from_dict(data) for data in event["events"]]
        await self.receive_events(event["message_id"], events)

    # live.hub.Subscriber

    def seen_seq(self, message_id: int) -> int:
        return self.sent.get(message_id, 0)

    async def receive_events(self, message_id: int, events: list[Event]) -> None:
        seq = self.sent.get(message_id)
        if seq is None:
            return
        fresh = []
        for event in events:
            if not isinstance(event, Snapshot) and event.seq > seq + 1:
                # A delivery from another process was lost: ask again from what was sent.
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
        for event in events:
            if message_id in self.sent:
                self.sent[message_id] = event.seq
            await self.send_json(event_data(message_id, event))
            if ended(event):
                self.sent.pop(message_id, None)
                hub().unfollow(self, message_id)
                return

    async def refresh(self, message_id: int) -> None:
        """Nothing heard of a followed answer for a while: its state from the rows, if newer."""
        assert self.conversation is not None
        try:
            message = await services.amessage_get(
                conversation_id=self.conversation.pk, message_id=message_id
            )
        except Message.DoesNotExist:
            self.sent.pop(message_id, None)
            hub().unfollow(self, message_id)
            return
        seq = self.sent.get(message_id)
        if seq is not None and message.seq > seq:
            await self.send_events(message_id, [Snapshot(message.seq, message_state(message))])
        elif not message.in_progress:
            self.sent.pop(message_id, None)
            hub().unfollow(self, message_id)


def ended(event: Event) -> bool:
    if isinstance(event, Snapshot):
        return event.message["status"] in FINAL
    return isinstance(event, StatusChanged) and event.status in FINAL


def event_data(message_id: int, event: Event) -> dict[str, Any]:
    """One pipeline event as the API sends it."""
    if isinstance(event, Snapshot):
        message = event.message if "role" in event.message else state_with_ids(event.message)
        return snapshot_data(message_id, event.seq, message)
    data = event_to_dict(event)
    data["message_id"] = message_id
    if isinstance(event, TOOL_EVENTS):
        data["tool_call_id"] = tool_call_id(
            message_id=message_id, step=event.step, index=event.index
        )
    elif isinstance(event, StatusChanged) and event.status in FINAL:
        data["type"] = "message.finished"
    return data


def snapshot_data(message_id: int, seq: int, message: dict[str, Any]) -> dict[str, Any]:
    return {"type": "snapshot", "seq": seq, "message_id": message_id, "message": message}


# Each command's fields: name -> (JSON type, required).
COMMANDS: dict[str, dict[str, tuple[type, bool]]] = {
    "send": {"text": (str, True), "model": (str, False), "api_style": (str, False)},
    "stop": {},
    "regenerate": {},
    "retry": {},
    "continue": {},
    "edit": {"message_id": (int, True), "text": (str, True)},
    "approve": {"tool_call_id": (str, True)},
    "deny": {"tool_call_id": (str, True), "reason": (str, False)},
    "resume": {"after": (int, True), "message_id": (int, False)},
    "ping": {},
}
TYPE_NAMES = {str: "a string", int: "a whole number"}


def parse_frame(text_data: str | None) -> dict[str, Any]:
    """The JSON object a frame holds, with a valid `id` or none; CommandError if it is not one."""
    if text_data is None:
        raise CommandError("invalid_json", "Send text frames holding one JSON object.")
    if len(text_data) > MAX_FRAME or len(text_data.encode("utf-8", "replace")) > MAX_FRAME:
        raise CommandError("too_large", f"A frame may be {MAX_FRAME // 1024} KiB at most.")
    try:
        frame = json.loads(text_data)
    except (ValueError, RecursionError):
        raise CommandError("invalid_json", "That frame was not JSON.") from None
    if not isinstance(frame, dict):
        raise CommandError("invalid_json", "That frame was not a JSON object.")
    if "id" in frame and not (is_type(frame["id"], str) or is_type(frame["id"], int)):
        raise CommandError("invalid_command", "`id` must be a string or a whole number.")
    return frame


def check_command(frame: dict[str, Any]) -> None:
    """CommandError naming what is wrong with a command's type or fields."""
    kind = frame.get("type")
    if not isinstance(kind, str) or kind not in COMMANDS:
        raise CommandError(
            "unknown_command", f"Unknown command {kind!r}: `type` is one of {', '.join(COMMANDS)}."
        )
    for name, (expected, required) in COMMANDS[kind].items():
        if name not in frame:
            if required:
                raise CommandError(
                    "invalid_command", f"`{kind}` needs `{name}`, {TYPE_NAMES[expected]}."
                )
        elif not is_type(frame[name], expected):
            raise CommandError("invalid_command", f"`{name}` must be {TYPE_NAMES[expected]}.")
    if kind == "resume" and frame["after"] < 0:
        raise CommandError("invalid_command", "`after` must be 0 or more.")
    if kind == "deny" and len(frame.get("reason", "")) > approvals.REASON_MAX_LENGTH:
        raise CommandError(
            "invalid_command",
            f"`reason` may be {approvals.REASON_MAX_LENGTH} characters at most.",
        )


def is_type(value: object, expected: type) -> bool:
    # JSON's true and false are Python ints; no field here takes them.
    return isinstance(value, expected) and not isinstance(value, bool)
