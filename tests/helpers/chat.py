"""Helpers for tests that chat through the sockets: open one, send, read frames as a page or an
API client would."""

from __future__ import annotations

import asyncio
import html
import json
import re
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import User
from jsonschema import Draft202012Validator

from conversations import runner
from conversations.api.protocol import message_state
from conversations.live.draft import AnswerDraft
from conversations.live.events import Event, event_from_dict
from conversations.models import Conversation, Message, ToolCall
from conversations.services import ordered_calls

APPEND = re.compile(r'<div hx-swap-oob="beforeend:#message-(\d+)-text-\d+-tail">(.*?)</div>', re.S)


# The types of the `connect` and `api_connect` fixtures, which open a page's or an API client's
# socket on the real ASGI application.
Connect = Callable[..., Coroutine[Any, Any, WebsocketCommunicator]]
ApiConnect = Callable[..., Coroutine[Any, Any, "ApiSocket"]]


def session_cookie(user: User) -> bytes:
    """The Cookie header of a session signed in as `user`."""
    from django.test import Client

    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}".encode()


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
    """The plain text a page rendering `frame` shows in a message still being written (after any
    finished Markdown blocks)."""
    found = re.findall(
        rf'class="tail plain" id="message-{message_id}-text-\d+-tail">(.*?)</div>', frame, re.S
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


# The JSON API's socket (docs/api.md): every frame either way is checked against its schema.

SCHEMA = json.loads((Path(__file__).parents[2] / "docs" / "api-schema.json").read_text())
COMMAND = Draft202012Validator({**SCHEMA, "oneOf": [{"$ref": "#/$defs/command"}]})
EVENT = Draft202012Validator({**SCHEMA, "oneOf": [{"$ref": "#/$defs/event"}]})


class ApiSocket:
    """An API client's socket: sends commands and receives events as JSON, each one checked
    against docs/api-schema.json."""

    def __init__(self, communicator: WebsocketCommunicator) -> None:
        self.communicator = communicator
        self.received: list[dict[str, Any]] = []

    async def connect(self) -> dict[str, Any]:
        """Connect and read `ready` (or the error that refused the socket)."""
        connected, self.subprotocol = await self.communicator.connect()
        assert connected
        return await self.receive()

    async def send(self, frame: dict[str, Any], *, valid: bool = True) -> None:
        """Send a command; `valid=False` for one the schema (and so the server) refuses."""
        if valid:
            COMMAND.validate(frame)
        else:
            assert not COMMAND.is_valid(frame), f"the schema accepts {frame}"
        await self.communicator.send_to(text_data=json.dumps(frame))

    async def send_raw(self, text: str | None = None, data: bytes | None = None) -> None:
        await self.communicator.send_to(text_data=text, bytes_data=data)

    async def receive(self, timeout: float = 10) -> dict[str, Any]:
        frame = json.loads(await self.communicator.receive_from(timeout=timeout))
        EVENT.validate(frame)
        self.received.append(frame)
        return frame

    async def receive_until(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10
    ) -> list[dict[str, Any]]:
        frames: list[dict[str, Any]] = []
        async with asyncio.timeout(timeout):
            while True:
                frames.append(await self.receive(timeout))
                if predicate(frames[-1]):
                    return frames

    async def command(self, frame: dict[str, Any], *, valid: bool = True) -> dict[str, Any]:
        """Send a command and receive the next frame (its error, or its first event)."""
        await self.send(frame, valid=valid)
        return await self.receive()

    async def nothing_before_pong(self) -> list[dict[str, Any]]:
        """Ping; the frames received before the pong (none, when nothing else was sent)."""
        await self.send({"type": "ping", "id": "sync"})
        frames = await self.receive_until(lambda frame: frame["type"] == "pong")
        assert frames[-1] == {"type": "pong", "seq": None, "command_id": "sync"}
        return frames[:-1]

    async def closed_with(self) -> int:
        output = await self.communicator.receive_output(timeout=5)
        assert output["type"] == "websocket.close"
        return int(output["code"])

    async def disconnect(self) -> None:
        await self.communicator.disconnect()


async def api_opened(api_connect: ApiConnect, conversation: Conversation, user: User) -> ApiSocket:
    """A connected API socket whose `ready` event has been read."""
    socket = await api_connect(conversation, user)
    ready = await socket.connect()
    assert ready["type"] == "ready"
    return socket


def answer_finished(frame: dict[str, Any]) -> bool:
    """An event that ends an answer: `message.finished`, or a snapshot of an ended one."""
    return frame["type"] == "message.finished" or (
        frame["type"] == "snapshot" and frame["message"]["status"] not in ("queued", "streaming")
    )


async def api_send_and_wait(socket: ApiSocket, text: str, **fields: Any) -> list[dict[str, Any]]:
    """Send a message; the frames until its answer has finished (from `message.created` on)."""
    await socket.send({"type": "send", "text": text, **fields})
    frames = await socket.receive_until(answer_finished)
    await runner.wait_for_local_runs()
    return frames


def mirror_of(created: dict[str, Any]) -> AnswerDraft:
    """A client's copy of the answer a `message.created` or `snapshot` event holds."""
    return AnswerDraft.from_state(created["message"], seq=created["seq"])


def pipeline_event(frame: dict[str, Any]) -> Event:
    """The answer event an API frame carries, as the server's pipeline made it."""
    data = {key: value for key, value in frame.items() if key not in ("message_id", "tool_call_id")}
    if data["type"] == "message.finished":
        data["type"] = "message.status"
    return event_from_dict(data)


def rebuilt(frames: list[dict[str, Any]], message_id: int) -> AnswerDraft:
    """The answer as a client rebuilds it from frames (deduplicated by seq, in order)."""
    mirror: AnswerDraft | None = None
    for frame in frames:
        if frame.get("message_id") != message_id:
            continue
        if frame["type"] in ("message.created", "snapshot"):
            if mirror is None or frame["seq"] > mirror.seq:
                mirror = mirror_of(frame)
            continue
        assert mirror is not None, "an event before the answer's state"
        mirror.apply(pipeline_event(frame))
    assert mirror is not None
    return mirror


async def stored_state(message_id: int) -> dict[str, Any]:
    message = await Message.objects.prefetch_related(ordered_calls()).aget(pk=message_id)
    return message_state(message)


# Collects whatever the Content-Security-Policy blocks in `window.cspViolations`.
CSP_WATCH = """window.cspViolations = [];
document.addEventListener('securitypolicyviolation', (event) => {
  window.cspViolations.push(event.violatedDirective + ' ' + event.blockedURI);
});"""


def browser_sign_up(page: Any, base_url: str) -> Any:
    """Watch the page for CSP violations, sign up as walter (the site's first user) and open a new
    conversation, as a new user does in the browser; the sign-up page's response."""
    page.add_init_script(CSP_WATCH)
    signup = page.goto(f"{base_url}/signup/")
    page.fill("#id_username", "walter")
    page.fill("#id_password1", "a-browser-password-1")
    page.fill("#id_password2", "a-browser-password-1")
    page.click("button[type=submit]")
    # The list's own button: the sidebar's is folded away on a phone.
    page.click("main >> text=New conversation")
    return signup
