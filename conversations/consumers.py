"""The chat page's WebSocket: takes messages and Stop, pushes re-rendered partials."""

from __future__ import annotations

import json
from typing import Any

from channels.generic.websocket import AsyncWebsocketConsumer

from . import rendering, runner, services
from .models import Conversation, Message

# Close code for "no such conversation"; the same for someone else's.
NOT_FOUND = 4404


class ChatConsumer(AsyncWebsocketConsumer):  # type: ignore[misc]
    conversation: Conversation | None = None
    group = ""

    async def connect(self) -> None:
        try:
            self.conversation = await services.aconversation_get(
                user=self.scope["user"],
                conversation_id=int(self.scope["url_route"]["kwargs"]["conversation_id"]),
            )
        except Conversation.DoesNotExist:
            await self.close(code=NOT_FOUND)
            return
        self.group = runner.conversation_group(self.conversation.pk)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        # A snapshot on every (re)connect: whatever was missed while away is in the rows.
        messages = await services.amessage_list(conversation=self.conversation)
        await self.send(text_data=rendering.render_messages(messages))

    async def disconnect(self, code: int) -> None:
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        assert self.conversation is not None
        try:
            frame = parse_frame(text_data)
            if frame.get("action") == "stop":
                await services.astop_request(conversation=self.conversation)
                return
            if frame.get("action") == "ping":
                await self.send(text_data=rendering.render_pong())
                return
            user_message, assistant_message = await services.aturn_start(
                conversation=self.conversation, text=frame.get("message")
            )
        except services.ChatInputError as error:
            await self.send(text_data=rendering.render_chat_error(str(error)))
            return
        await self.send(text_data=rendering.render_composer())
        await self.channel_layer.group_send(
            self.group,
            {"type": "conversation.turn", "message_ids": [user_message.pk, assistant_message.pk]},
        )
        runner.start_generation(assistant_message)

    async def conversation_turn(self, event: dict[str, Any]) -> None:
        assert self.conversation is not None
        messages: list[Message] = []
        for message_id in event["message_ids"]:
            try:
                messages.append(
                    await services.amessage_get(
                        conversation_id=self.conversation.pk, message_id=message_id
                    )
                )
            except Message.DoesNotExist:
                return
        await self.send(text_data=rendering.render_new_messages(messages))

    async def generation_update(self, event: dict[str, Any]) -> None:
        assert self.conversation is not None
        try:
            message = await services.amessage_get(
                conversation_id=self.conversation.pk, message_id=event["message_id"]
            )
        except Message.DoesNotExist:
            return
        await self.send(text_data=rendering.render_message(message))


def parse_frame(text_data: str | None) -> dict[str, Any]:
    if text_data is None:
        raise services.ChatInputError('Send text frames with JSON, such as {"message": "Hi"}.')
    try:
        frame = json.loads(text_data)
    except ValueError:
        raise services.ChatInputError(
            'That frame was not JSON; send {"message": "..."} or {"action": "stop"}.'
        ) from None
    if not isinstance(frame, dict):
        raise services.ChatInputError('That frame was not a JSON object; send {"message": "..."}.')
    return frame
