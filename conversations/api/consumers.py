"""The JSON API's socket: one conversation's commands in, its answers' events out (docs/api.md);
the following itself is follower.Follower's."""

from __future__ import annotations

import json
from typing import Any

from .. import limits, services
from ..follower import Command, Follower
from ..live.events import (
    Event,
    MessageStatus,
    Snapshot,
    ToolArguments,
    ToolCreated,
    ToolProgress,
    ToolStatus,
    event_to_dict,
    tool_call_id,
)
from ..models import Message
from ..refusals import BadFrame, NotFound, Refusal, Unauthorized
from .protocol import conversation_state, message_state, state_with_ids

SUBPROTOCOL = "chat.v1"
# Close codes after the `error` event that says why.
UNAUTHORIZED = 4401
NOT_FOUND = 4404
MAX_FRAME = 64 * 1024
TOOL_EVENTS = (ToolCreated, ToolArguments, ToolStatus, ToolProgress)


class ApiConsumer(Follower):
    face = "api"

    def subprotocol(self) -> str | None:
        offered = self.scope.get("subprotocols") or []
        return SUBPROTOCOL if SUBPROTOCOL in offered else None

    def check_access(self) -> None:
        auth_error = self.scope.get("api_auth_error", "Send an API token.")
        if auth_error:
            raise Unauthorized(auth_error)

    async def refuse_connection(self, refusal: Refusal) -> None:
        await self.send_error(refusal.code, str(refusal))
        await self.close(code=NOT_FOUND if isinstance(refusal, NotFound) else UNAUTHORIZED)

    async def opened(self) -> None:
        assert self.conversation is not None
        answer = await services.aanswer_latest(conversation=self.conversation)
        self.known_up_to = answer.pk if answer is not None else 0
        await self.send_json(
            {
                "type": "ready",
                "seq": None,
                "conversation": conversation_state(self.conversation),
                "answer": None
                if answer is None
                else {"message_id": answer.pk, "status": answer.status, "seq": answer.seq},
            }
        )

    @classmethod
    async def decode_json(cls, text_data: str) -> dict[str, Any]:
        return parse_frame(text_data)

    @classmethod
    async def encode_json(cls, content: dict[str, Any]) -> str:
        return json.dumps(content, ensure_ascii=False)

    async def send_error(self, code: str, message: str, command_id: Any = None) -> None:
        error: dict[str, Any] = {"type": "error", "seq": None, "code": code, "message": message}
        if command_id is not None:
            error["command_id"] = command_id
        await self.send_json(error)

    async def refuse(self, refusal: Refusal, frame: Any) -> None:
        command_id = frame.get("id") if isinstance(frame, dict) else None
        await self.send_error(refusal.code, str(refusal), command_id)

    # Commands.

    async def receive_json(self, content: dict[str, Any], **kwargs: Any) -> None:
        check_command(content)
        match content["type"]:
            case "resume":
                await self.resume(message_id=content.get("message_id"), after=content["after"])
            case "ping":
                pong: dict[str, Any] = {"type": "pong", "seq": None}
                if "id" in content:
                    pong["command_id"] = content["id"]
                await self.send_json(pong)
            case kind:
                await self.run_command(
                    Command(
                        kind,
                        text=content.get("text"),
                        message_id=content.get("message_id"),
                        model=content.get("model"),
                        api_style=content.get("api_style"),
                        tool_call_id=content.get("tool_call_id", ""),
                        reason=content.get("reason", ""),
                    )
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
            raise NotFound("No such answer in this conversation.") from None
        if message.in_progress:
            await self.follow(message.pk, after=after)
        elif after < message.seq:
            self.forget(message.pk)
            await self.send_events(message.pk, [Snapshot(message.seq, message_state(message))])

    # What the client is sent.

    async def show_turn(self, event: dict[str, Any]) -> None:
        answer = event["answer"]
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

    async def show_ended(self, state: dict[str, Any], seq: int, followed: int | None) -> None:
        """Its final state, numbered past whatever the client has of it."""
        seq = max(seq, (followed or 0) + 1)
        await self.send_json(snapshot_data(state["id"], seq, state_with_ids(state)))

    async def conversation_changed(self, event: dict[str, Any]) -> None:
        """The conversation's title changed (for its pages): clients read it from its state."""

    async def show_events(self, message_id: int, events: list[Event]) -> None:
        for event in events:
            await self.send_json(event_data(message_id, event))

    async def show_row(self, message: Message, *, newer: bool) -> None:
        if newer:
            await self.send_json(
                event_data(message.pk, Snapshot(message.seq, message_state(message)))
            )


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
    elif isinstance(event, MessageStatus) and event.status in Message.FINISHED:
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


def parse_frame(text_data: str) -> dict[str, Any]:
    """The JSON object a frame holds, with a valid `id` or none; BadFrame if it is not one."""
    if len(text_data) > MAX_FRAME or len(text_data.encode("utf-8", "replace")) > MAX_FRAME:
        raise BadFrame("too_large", f"A frame may be {MAX_FRAME // 1024} KiB at most.")
    try:
        frame = json.loads(text_data)
    except (ValueError, RecursionError):
        raise BadFrame("invalid_json", "That frame was not JSON.") from None
    if not isinstance(frame, dict):
        raise BadFrame("invalid_json", "That frame was not a JSON object.")
    if "id" in frame and not (is_type(frame["id"], str) or is_type(frame["id"], int)):
        raise BadFrame("invalid_command", "`id` must be a string or a whole number.")
    return frame


def check_command(frame: dict[str, Any]) -> None:
    """BadFrame naming what is wrong with a command's type or fields."""
    kind = frame.get("type")
    if not isinstance(kind, str) or kind not in COMMANDS:
        raise BadFrame(
            "unknown_command", f"Unknown command {kind!r}: `type` is one of {', '.join(COMMANDS)}."
        )
    for name, (expected, required) in COMMANDS[kind].items():
        if name not in frame:
            if required:
                raise BadFrame(
                    "invalid_command", f"`{kind}` needs `{name}`, {TYPE_NAMES[expected]}."
                )
        elif not is_type(frame[name], expected):
            raise BadFrame("invalid_command", f"`{name}` must be {TYPE_NAMES[expected]}.")
    if kind == "resume" and frame["after"] < 0:
        raise BadFrame("invalid_command", "`after` must be 0 or more.")
    if kind == "deny" and len(frame.get("reason", "")) > limits.REASON_MAX_LENGTH:
        raise BadFrame(
            "invalid_command",
            f"`reason` may be {limits.REASON_MAX_LENGTH} characters at most.",
        )


def is_type(value: object, expected: type) -> bool:
    # JSON's true and false are Python ints; no field here takes them.
    return isinstance(value, expected) and not isinstance(value, bool)
