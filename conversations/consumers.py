"""The chat page's WebSocket: takes messages, message actions, Stop and tool-call decisions, pushes
partials as the answer grows (the following itself is follower.Follower's)."""

from __future__ import annotations

import json
from typing import Any

from . import actions, limits, rendering, services
from .follower import REDO, Command, Follower
from .live.draft import AnswerDraft
from .live.events import Event, Usage
from .models import Message
from .refusals import Busy, InvalidInput, Refusal

# Close code for "no such conversation"; the same for someone else's.
NOT_FOUND = 4404

ACTIONS = ("stop", "ping", "approve", "deny", "rename", *REDO)


class ChatConsumer(Follower):
    face = "page"
    TEXT_FRAMES = 'Send text frames with JSON, such as {"message": "Hi"}.'

    async def connect(self) -> None:
        # The page's copy of each answer it follows, at the last event it has shown.
        self.answers: dict[int, AnswerDraft] = {}
        await super().connect()

    async def refuse_connection(self, refusal: Refusal) -> None:
        await self.close(code=NOT_FOUND, reason=str(refusal))

    async def opened(self) -> None:
        # A snapshot on every (re)connect from the rows; a running answer's events since its
        # last save follow, so a reload or a dropped connection loses and repeats nothing.
        assert self.conversation is not None
        messages = await services.amessage_list(conversation=self.conversation)
        await self.send(text_data=rendering.render_messages(messages))
        # New turns are announced to every page; this one has shown every message up to here.
        self.known_up_to = max((message.pk for message in messages), default=0)
        for message in messages:
            if message.in_progress:
                self.answers[message.pk] = services.answer_draft(message)
                await self.follow(message.pk, after=message.seq)

    @classmethod
    async def decode_json(cls, text_data: str) -> dict[str, Any]:
        return parse_frame(text_data)

    async def receive_json(self, content: dict[str, Any], **kwargs: Any) -> None:
        assert self.conversation is not None
        action = content.get("action")
        match action:
            case "ping":
                await self.send(text_data=rendering.render_pong())
            case "rename":
                # Every page of the conversation shows the new title, this one included.
                await actions.conversation_rename(
                    owner_id=self.conversation.owner_id,
                    conversation_id=self.conversation.pk,
                    title=content.get("title"),
                )
                await self.send(text_data=rendering.render_chat_error(""))
            case "approve" | "deny":
                await self.run_command(
                    Command(action, tool_call_id=content["tool_call"], reason=content["reason"])
                )
                await self.send(text_data=rendering.render_chat_error(""))
            case "stop":
                await self.run_command(Command("stop"))
            case "edit":
                await self.run_command(
                    Command("edit", message_id=content["message"], text=content.get("text"))
                )
            case None:
                await self.run_command(Command("send", text=content.get("message")))
            case _:
                await self.run_command(Command(action))

    async def refuse(self, refusal: Refusal, frame: Any) -> None:
        await self.send(
            text_data=rendering.render_chat_error(
                str(refusal), until_answer_ends=isinstance(refusal, Busy)
            )
        )

    async def turn_accepted(self, command: Command) -> None:
        # The composer's box is cleared only for a message it sent.
        if command.kind == "send":
            await self.send(text_data=rendering.render_message_accepted())
        else:
            await self.send(text_data=rendering.render_chat_error(""))

    # What the page shows.

    async def show_turn(self, event: dict[str, Any]) -> None:
        assert self.conversation is not None
        await self.send(text_data=event["html"])
        answer = AnswerDraft.from_state(event["answer"], seq=event["seq"])
        self.answers[answer.id] = answer

    async def conversation_turn(self, event: dict[str, Any]) -> None:
        assert self.conversation is not None
        # The first message gives the conversation its title.
        self.conversation.title = event.get("title", self.conversation.title)
        await super().conversation_turn(event)

    async def conversation_changed(self, event: dict[str, Any]) -> None:
        """The conversation's title or sidebar entry changed (actions.conversation_changed)."""
        assert self.conversation is not None
        self.conversation.title = event["title"]
        await self.send(text_data=event["html"])

    def forget(self, message_id: int) -> int | None:
        self.answers.pop(message_id, None)
        return super().forget(message_id)

    async def show_events(self, message_id: int, events: list[Event]) -> None:
        answer = self.answers.get(message_id)
        if answer is None:
            return
        html = rendering.render_events(answer, events)
        if html:
            await self.send(text_data=html + self.sidebar_entry(answer))
        if any(isinstance(event, Usage) for event in events):
            assert self.conversation is not None
            usage = await services.aconversation_usage(
                conversation_id=self.conversation.pk, answer=answer
            )
            await self.send(text_data=rendering.render_usage(usage))

    async def show_row(self, message: Message, *, newer: bool) -> None:
        if message.in_progress:
            self.answers[message.pk] = services.answer_draft(message)
        await self.send(text_data=rendering.render_message(message) + self.sidebar_entry(message))

    async def show_ended(self, state: dict[str, Any], seq: int, followed: int | None) -> None:
        if followed is None:
            return
        answer = AnswerDraft.from_state(state, seq=seq)
        await self.send(text_data=rendering.render_message(answer) + self.sidebar_entry(answer))

    def sidebar_entry(self, answer: Message | AnswerDraft) -> str:
        """The page's sidebar entry once an answer has ended: its badge changes."""
        assert self.conversation is not None
        if answer.in_progress:
            return ""
        return rendering.render_sidebar_entry(conversation=self.conversation, status=answer.status)


def parse_frame(text_data: str) -> dict[str, Any]:
    try:
        frame = json.loads(text_data)
    except (ValueError, RecursionError):
        raise InvalidInput(
            'That frame was not JSON; send {"message": "..."} or {"action": "stop"}.'
        ) from None
    if not isinstance(frame, dict):
        raise InvalidInput('That frame was not a JSON object; send {"message": "..."}.')
    if "action" in frame and frame["action"] not in ACTIONS:
        raise InvalidInput(
            'Unknown action: send {"action": "stop"}, {"action": "ping"}, '
            '{"action": "rename", "title": "..."} or {"message": "..."}.'
        )
    if frame.get("action") == "edit" and not isinstance(frame.get("message"), str | int):
        raise InvalidInput(
            'Say which message to edit: {"action": "edit", "message": "<id>", "text": "..."}.'
        )
    if frame.get("action") in ("approve", "deny"):
        if not isinstance(frame.get("tool_call"), str):
            raise InvalidInput(
                f"Say which tool call to {frame['action']}: "
                '{"tool_call": "<message>:<step>:<index>"}.'
            )
        reason = frame.get("reason", "")
        if not isinstance(reason, str) or len(reason) > limits.REASON_MAX_LENGTH:
            raise InvalidInput(
                f"The reason must be text of at most {limits.REASON_MAX_LENGTH} characters."
            )
        frame["reason"] = reason.strip()
    return frame
