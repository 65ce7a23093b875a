"""Helpers for tests that chat through the socket: open it, send, read frames as a page would."""

from __future__ import annotations

import asyncio
import html
import re
from collections.abc import Callable

from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import User

from conversations import runner
from conversations.models import Conversation, Message, ToolCall
from tests.conftest import Connect

APPEND = re.compile(r'<div hx-swap-oob="beforeend:#message-(\d+)-text-\d+">(.*?)</div>', re.S)


async def new_conversation(user: User, **fields: str) -> Conversation:
    return await Conversation.objects.acreate(owner=user, **fields)


async def opened(connect: Connect, conversation: Conversation, user: User) -> WebsocketCommunicator:
    """A connected chat socket whose snapshot frame has been read."""
    socket = await connect(conversation, user)
    connected, _ = await socket.connect()
    assert connected
    await socket.receive_from()
    return socket


async def receive_until(
    socket: WebsocketCommunicator, predicate: Callable[[str], bool], timeout: float = 10
) -> list[str]:
    """Frames received until one satisfies `predicate` (a test failure if none does in time)."""
    frames: list[str] = []
    async with asyncio.timeout(timeout):
        while True:
            frame = await socket.receive_from(timeout=timeout)
            frames.append(frame)
            if predicate(frame):
                return frames


def finished(frame: str) -> bool:
    """A frame showing an answer that is no longer being written."""
    return "message role-assistant" in frame and not re.search(
        r'message role-assistant status-(streaming|queued)"', frame
    )


def answer_id(frames: list[str]) -> int:
    """The id of the answer a new turn's frame announced."""
    return int(re.findall(r'id="message-(\d+)" class="message role-assistant', frames[-1])[0])


def appended_text(frames: list[str], message_id: int | None = None) -> list[str]:
    """The pieces of answer text the frames appended, as the page shows them, in order."""
    return [
        html.unescape(text)
        for target, text in (match.groups() for frame in frames for match in APPEND.finditer(frame))
        if message_id is None or int(target) == message_id
    ]


def shown_text(frame: str, message_id: int) -> str:
    """The text a page rendering `frame` shows in a message still being written."""
    found = re.findall(
        rf'<div class="text plain" id="message-{message_id}-text-\d+">(.*?)</div>', frame, re.S
    )
    return "".join(html.unescape(text) for text in found)


async def receive_text(socket: WebsocketCommunicator, text: str, timeout: float = 10) -> list[str]:
    """Frames received until the answer text appended so far contains `text`."""
    frames: list[str] = []

    def shown(frame: str) -> bool:
        frames.append(frame)
        return text in "".join(appended_text(frames))

    await receive_until(socket, shown, timeout)
    return frames


async def send_and_wait(socket: WebsocketCommunicator, text: str) -> list[str]:
    """Send a message and receive frames until its answer is finished."""
    await socket.send_json_to({"message": text})
    frames = await receive_until(socket, lambda f: 'hx-swap-oob="beforeend"' in f)
    answer = answer_id(frames)

    def ended(frame: str) -> bool:
        # Late frames of an earlier answer may still be queued; wait for this answer's end,
        # which the new turn's frame already shows when the answer ended that fast.
        return f'id="message-{answer}"' in frame and finished(frame.split("role-user")[-1])

    if not ended(frames[-1]):
        frames += await receive_until(socket, ended)
    await runner.wait_for_local_runs()
    return frames


async def assistant_message(conversation: Conversation) -> Message:
    return await Message.objects.filter(
        conversation=conversation, role=Message.Role.ASSISTANT
    ).alatest("created_at")


async def calls_of(message: Message) -> list[ToolCall]:
    return [call async for call in message.tool_calls.order_by("step", "index")]
