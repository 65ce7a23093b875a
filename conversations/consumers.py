"""The chat page's WebSocket: takes messages, message actions, Stop and tool-call decisions, pushes
partials as the answer grows."""

from __future__ import annotations

import json
import logging
from typing import Any

from channels.generic.websocket import AsyncWebsocketConsumer

from . import limits, metrics, rendering, services
from .live import approvals, drain, pages, sweeper, turns
from .live.draft import AnswerDraft, SequenceGap
from .live.events import Event, UsageChanged, event_from_dict
from .live.hub import conversation_group, hub
from .models import Conversation, Message

logger = logging.getLogger(__name__)

# Close code for "no such conversation"; the same for someone else's. The socket is accepted
# first and then closed with it: refused at the handshake, the page would see only 1006 and
# htmx would reconnect for ever.
NOT_FOUND = 4404

ACTIONS = ("stop", "ping", "approve", "deny", "rename", *turns.ACTIONS)


class ChatConsumer(AsyncWebsocketConsumer):  # type: ignore[misc]
    conversation: Conversation | None = None
    group = ""

    async def connect(self) -> None:
        metrics.socket_opened("page", self)
        # The page's copy of each answer it follows, at the last event it has shown.
        self.answers: dict[int, AnswerDraft] = {}
        self.shown_up_to = 0
        if drain.draining():
            # Refused at the handshake: the page tries again, and a load balancer sends it to
            # another server.
            await self.close()
            return
        try:
            self.conversation = await services.aconversation_get(
                user=self.scope["user"],
                conversation_id=int(self.scope["url_route"]["kwargs"]["conversation_id"]),
            )
        except Conversation.DoesNotExist:
            await self.accept()
            await self.close(code=NOT_FOUND, reason="No such conversation.")
            return
        self.group = conversation_group(self.conversation.pk)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        # An answer whose process died shows as interrupted, here and on the other pages.
        await sweeper.sweep(conversation_id=self.conversation.pk)
        # A snapshot on every (re)connect from the rows; a running answer's events since its
        # last save follow, so a reload or a dropped connection loses and repeats nothing.
        messages = await services.amessage_list(conversation=self.conversation)
        await self.send(text_data=rendering.render_messages(messages))
        # New turns are announced to every page; this one has shown every message up to here.
        self.shown_up_to = max((message.pk for message in messages), default=0)
        for message in messages:
            if message.in_progress:
                await self.follow(message)

    async def disconnect(self, code: int) -> None:
        metrics.socket_closed(self)
        hub().unfollow(self)
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.conversation is None:
            return  # Closed with NOT_FOUND; a frame sent before the close arrived is ignored.
        try:
            frame = parse_frame(text_data)
            if frame.get("action") == "stop":
                await sweeper.stop(conversation=self.conversation)
                return
            if frame.get("action") == "ping":
                await self.send(text_data=rendering.render_pong())
                return
            if frame.get("action") in ("approve", "deny"):
                await approvals.decide(
                    conversation_id=self.conversation.pk,
                    tool_call_id=frame["tool_call"],
                    approved=frame["action"] == "approve",
                    reason=frame.get("reason", ""),
                    decided_by=self.scope["user"].username,
                )
                await self.send(text_data=rendering.render_chat_error(""))
                return
            if frame.get("action") == "rename":
                await services.aconversation_rename(
                    owner_id=self.conversation.owner_id,
                    conversation_id=self.conversation.pk,
                    title=frame.get("title"),
                )
                # Every page of the conversation shows the new title, this one included.
                await pages.conversation_changed(conversation_id=self.conversation.pk)
                await self.send(text_data=rendering.render_chat_error(""))
                return
            # A draining server starts no new answer; one past this point runs and is drained.
            with drain.turn_starting():
                await self.start_turn(frame)
        except (
            services.ChatInputError,
            services.NoSuchConversation,
            limits.LimitReached,
            approvals.NotWaiting,
            drain.Refused,
        ) as error:
            await self.send(
                text_data=rendering.render_chat_error(
                    str(error), until_answer_ends=isinstance(error, services.AnswerRunning)
                )
            )

    async def start_turn(self, frame: dict[str, Any]) -> None:
        """A new message, or a message action (regenerate, retry, continue, edit), which
        replaces part of the list."""
        assert self.conversation is not None
        branch = frame.get("action") in turns.ACTIONS
        if branch:
            user_message, assistant_message = await turns.turn_redo(
                conversation=self.conversation,
                action=frame["action"],
                message_id=frame.get("message"),
                text=frame.get("text"),
            )
        else:
            user_message, assistant_message = await turns.turn_start(
                conversation=self.conversation, text=frame.get("message")
            )
        # The composer's box is cleared only for a message it sent.
        accepted = (
            rendering.render_chat_error("") if branch else rendering.render_message_accepted()
        )
        await self.send(text_data=accepted)
        await turns.turn_run(
            user_message=user_message,
            assistant_message=assistant_message,
            show=self.conversation_turn,
            branch=branch,
        )

    async def conversation_turn(self, event: dict[str, Any]) -> None:
        assert self.conversation is not None
        # The first message gives the conversation its title.
        self.conversation.title = event.get("title", self.conversation.title)
        if event["answer"]["id"] <= self.shown_up_to:
            # Shown already: by the page that sent it (this is the echo), or from the rows by a
            # page that opened since.
            return
        self.shown_up_to = event["answer"]["id"]
        await self.send(text_data=event["html"])
        answer = AnswerDraft.from_state(event["answer"], seq=event["seq"])
        self.answers[answer.id] = answer
        await hub().follow(
            self, conversation_id=self.conversation.pk, message_id=answer.id, after=answer.seq
        )

    async def conversation_changed(self, event: dict[str, Any]) -> None:
        """The conversation's title or sidebar entry changed (live.pages)."""
        assert self.conversation is not None
        self.conversation.title = event["title"]
        await self.send(text_data=event["html"])

    def sidebar_entry(self, answer: Message | AnswerDraft) -> str:
        """The page's sidebar entry once an answer has ended: its badge changes."""
        assert self.conversation is not None
        if answer.in_progress:
            return ""
        return rendering.render_sidebar_entry(conversation=self.conversation, status=answer.status)

    async def follow(self, message: Message) -> None:
        """Show the answer's events from where its saved state ends."""
        assert self.conversation is not None
        self.answers[message.pk] = services.answer_draft(message)
        await hub().follow(
            self, conversation_id=self.conversation.pk, message_id=message.pk, after=message.seq
        )

    # live.hub.Subscriber

    def seen_seq(self, message_id: int) -> int:
        answer = self.answers.get(message_id)
        return answer.seq if answer is not None else 0

    async def receive_events(self, message_id: int, events: list[Event]) -> None:
        answer = self.answers.get(message_id)
        if answer is None:
            return
        try:
            html = rendering.render_events(answer, events)
        except SequenceGap:
            # A delivery from another process was lost: ask again from what this page has.
            assert self.conversation is not None
            await hub().follow(
                self, conversation_id=self.conversation.pk, message_id=message_id, after=answer.seq
            )
            return
        if html:
            await self.send(text_data=html + self.sidebar_entry(answer))
        if any(isinstance(event, UsageChanged) for event in events):
            assert self.conversation is not None
            usage = await services.aconversation_usage(
                conversation_id=self.conversation.pk, answer=answer
            )
            await self.send(text_data=rendering.render_usage(usage))
        if not answer.in_progress:
            del self.answers[message_id]
            hub().unfollow(self, message_id)

    async def refresh(self, message_id: int) -> None:
        assert self.conversation is not None
        try:
            message = await services.amessage_get(
                conversation_id=self.conversation.pk, message_id=message_id
            )
        except Message.DoesNotExist:
            self.answers.pop(message_id, None)
            hub().unfollow(self, message_id)
            return
        answer = self.answers.get(message_id)
        if answer is None or (message.seq <= answer.seq and message.in_progress):
            return
        self.answers[message_id] = services.answer_draft(message)
        await self.send(text_data=rendering.render_message(message) + self.sidebar_entry(message))
        if not message.in_progress:
            del self.answers[message_id]
            hub().unfollow(self, message_id)

    async def answer_ended(self, event: dict[str, Any]) -> None:
        """An answer ended without its run (its process died, or Stop found none), from the rows."""
        answer = AnswerDraft.from_state(event["answer"], seq=event["seq"])
        if self.answers.pop(answer.id, None) is None:
            return
        hub().unfollow(self, answer.id)
        await self.send(text_data=rendering.render_message(answer) + self.sidebar_entry(answer))

    async def run_events(self, event: dict[str, Any]) -> None:
        """An answer's events, relayed from the process that runs it."""
        hub().heard(self, event["message_id"])
        events = [event_from_dict(data) for data in event["events"]]
        await self.receive_events(event["message_id"], events)


def parse_frame(text_data: str | None) -> dict[str, Any]:
    if text_data is None:
        raise services.ChatInputError('Send text frames with JSON, such as {"message": "Hi"}.')
    try:
        frame = json.loads(text_data)
    except (ValueError, RecursionError):
        raise services.ChatInputError(
            'That frame was not JSON; send {"message": "..."} or {"action": "stop"}.'
        ) from None
    if not isinstance(frame, dict):
        raise services.ChatInputError('That frame was not a JSON object; send {"message": "..."}.')
    if "action" in frame and frame["action"] not in ACTIONS:
        raise services.ChatInputError(
            'Unknown action: send {"action": "stop"}, {"action": "ping"}, '
            '{"action": "rename", "title": "..."} or {"message": "..."}.'
        )
    if frame.get("action") == "edit" and not isinstance(frame.get("message"), str | int):
        raise services.ChatInputError(
            'Say which message to edit: {"action": "edit", "message": "<id>", "text": "..."}.'
        )
    if frame.get("action") in ("approve", "deny"):
        if not isinstance(frame.get("tool_call"), str):
            raise services.ChatInputError(
                f"Say which tool call to {frame['action']}: "
                '{"tool_call": "<message>:<step>:<index>"}.'
            )
        reason = frame.get("reason", "")
        if not isinstance(reason, str) or len(reason) > approvals.REASON_MAX_LENGTH:
            raise services.ChatInputError(
                f"The reason must be text of at most {approvals.REASON_MAX_LENGTH} characters."
            )
        frame["reason"] = reason.strip()
    return frame
