"""The chat socket and input it cannot take: bad text, random frames, limits, origins."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import User
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from conversations import limits, refusals
from conversations.models import Conversation, Message
from tests.helpers.chat import (
    Connect,
    finished,
    new_conversation,
    opened,
    receive_until,
    send_and_wait,
)
from tests.helpers.fake_openai import FakeOpenAI, sse, text_stream

pytestmark = pytest.mark.django_db(transaction=True)

PONG = '<template id="pong"></template>'


async def pong(socket: WebsocketCommunicator) -> str:
    await socket.send_json_to({"action": "ping"})
    return await socket.receive_from()


@pytest.mark.parametrize(
    ("frame", "shown"),
    [
        # JSON escapes that decode to half a UTF-16 surrogate pair: no character at all.
        ('{"message": "bad \\ud800"}', "lone UTF-16 surrogate"),
        ('{"message": "\\udfff and more"}', "lone UTF-16 surrogate"),
        ('{"message": "nul \\u0000 inside"}', "NUL character"),
        ("[" * 100_000, "not JSON"),
    ],
)
async def test_text_that_cannot_be_stored_gets_an_error_and_the_socket_stays_open(
    connect: Connect, user: User, frame: str, shown: str
) -> None:
    conversation = await new_conversation(user)
    socket = await opened(connect, conversation, user)

    await socket.send_to(text_data=frame)
    reply = await socket.receive_from()

    assert 'id="chat-error"' in reply and shown in reply
    assert await Message.objects.acount() == 0
    assert await pong(socket) == PONG


def acted_on(frame: str | bytes) -> bool:
    """Whether the frame is a message the server would store, or a Stop."""
    if isinstance(frame, bytes):
        return False
    try:
        data = json.loads(frame)
    except (ValueError, RecursionError):
        return False
    if not isinstance(data, dict) or data.get("action") == "ping":
        return False
    if data.get("action") == "stop":
        return True
    if "action" in data:
        return False  # an unknown action is refused, whatever else the frame holds
    text = data.get("message")
    return isinstance(text, str) and bool(text.strip())


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=8,
)
frames = st.one_of(
    st.text(),
    st.binary().map(lambda raw: raw.decode("utf-8", "surrogateescape")),
    json_values.map(json.dumps),
    st.dictionaries(st.sampled_from(["message", "action", "HEADERS"]), json_values).map(json.dumps),
    # Text that cannot be stored: lone surrogates and NUL, as JSON escapes and as themselves.
    st.text(alphabet=st.characters(codec=None, categories=["Cs"]), min_size=1).map(
        lambda text: json.dumps({"message": f"x{text}"})
    ),
    st.text().map(lambda text: json.dumps({"message": f"{text}\x00"})),
    # Binary frames, which the page never sends.
    st.binary(),
    st.text().map(lambda text: json.dumps({"message": text}).encode()),
).filter(lambda frame: not acted_on(frame))


def test_a_thousand_random_frames_each_get_an_answer_and_change_nothing(
    connect_sync: Any, user: User, caplog: pytest.LogCaptureFixture
) -> None:
    loop, _, socket = connect_sync(user)
    rows_before = Message.objects.count(), Conversation.objects.count()
    answered = 0

    @hypothesis_settings(
        max_examples=1000,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    @given(frame=frames)
    def one_frame(frame: str | bytes) -> None:
        nonlocal answered
        reply = loop.run_until_complete(exchange(socket, frame))
        assert 'id="chat-error"' in reply or reply == PONG, reply
        answered += 1

    with caplog.at_level(logging.WARNING):
        one_frame()

    assert answered >= 1000
    assert (Message.objects.count(), Conversation.objects.count()) == rows_before
    assert loop.run_until_complete(pong(socket)) == PONG
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


async def exchange(socket: WebsocketCommunicator, frame: str | bytes) -> str:
    # send_input, not send_to: that refuses an empty frame, which a client can send.
    key = "bytes" if isinstance(frame, bytes) else "text"
    await socket.send_input({"type": "websocket.receive", key: frame})
    return await socket.receive_from(timeout=5)


@pytest.fixture
def connect_sync(request: pytest.FixtureRequest) -> Any:
    """A chat socket driven from a plain (sync) test, on an event loop of its own."""
    from chatsite.asgi import application
    from tests.helpers.chat import session_cookie

    loop = asyncio.new_event_loop()
    sockets: list[WebsocketCommunicator] = []

    def open_socket(user: User) -> tuple[asyncio.AbstractEventLoop, Conversation, Any]:
        conversation = Conversation.objects.create(owner=user)
        socket = WebsocketCommunicator(
            application,
            f"/ws/conversations/{conversation.pk}/",
            headers=[
                (b"origin", b"http://localhost"),
                (b"host", b"localhost"),
                (b"cookie", session_cookie(user)),
            ],
        )
        sockets.append(socket)
        connected, _ = loop.run_until_complete(socket.connect())
        assert connected
        loop.run_until_complete(socket.receive_from())
        return loop, conversation, socket

    yield open_socket
    for socket in sockets:
        loop.run_until_complete(socket.disconnect())
    loop.close()
    from asgiref.sync import SyncToAsync
    from django.db import connections

    SyncToAsync.single_thread_executor.submit(connections.close_all).result()


async def test_messages_past_the_limit_per_minute_say_when_to_try_again(
    connect: Connect, user: User, model_server: FakeOpenAI, settings: Any
) -> None:
    settings.CHAT_MESSAGES_PER_MINUTE = 2
    conversation = await new_conversation(user)
    socket = await opened(connect, conversation, user)
    for answer in ("One.", "Two."):
        model_server.queue(sse(text_stream(answer)))
        await send_and_wait(socket, "a question")

    await socket.send_json_to({"message": "a third question"})
    reply = await receive_until(socket, lambda frame: 'id="chat-error"' in frame)

    assert "2 messages in the last minute" in reply[-1]
    assert "try again in" in reply[-1]
    assert await Message.objects.filter(role="user").acount() == 2


async def test_answers_at_once_past_the_limit_are_refused_until_one_ends(
    connect: Connect, user: User, model_server: FakeOpenAI, settings: Any
) -> None:
    settings.CHAT_CONCURRENT_ANSWERS = 1
    model_server.queue(sse(text_stream(" ".join(["slow"] * 30)), delay=0.05))
    model_server.queue(sse(text_stream("Now it fits.")))
    one, two = await new_conversation(user), await new_conversation(user)
    first = await opened(connect, one, user)
    second = await opened(connect, two, user)

    await first.send_json_to({"message": "take your time"})
    await receive_until(first, lambda frame: "slow" in frame)
    await second.send_json_to({"message": "me too"})
    refused = await receive_until(second, lambda frame: 'id="chat-error"' in frame)

    assert "answers are being written" in refused[-1]
    assert await Message.objects.filter(conversation=two).acount() == 0
    await receive_until(first, finished)
    await send_and_wait(second, "me too")
    assert await Message.objects.filter(conversation=two, content="Now it fits.").aexists()


def test_the_per_minute_count_is_atomic_across_threads(user: User, settings: Any) -> None:
    # Twenty senders at once, as from several processes sharing the cache (Redis when
    # REDIS_URL is set): exactly the limit gets through.
    from concurrent.futures import ThreadPoolExecutor

    settings.CHAT_MESSAGES_PER_MINUTE = 5

    def send(_: int) -> bool:
        try:
            limits.message_rate_take(user_id=user.pk, now=120.5)
        except refusals.RateLimited as refused:
            assert refused.retry_after == 60
            return False
        return True

    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(send, range(20)))

    assert results.count(True) == 5


async def test_socket_origins_are_checked_with_their_port(
    connect: Connect, user: User, settings: Any
) -> None:
    settings.ALLOWED_HOSTS = ["127.0.0.1", "localhost", "chat.example.com"]
    conversation = await new_conversation(user)
    # (origin, Host header, CSRF_TRUSTED_ORIGINS): accepted?
    cases = {
        ("http://127.0.0.1:8000", "127.0.0.1:8000", ""): True,
        # Another port on the same host is another site.
        ("http://127.0.0.1:9999", "127.0.0.1:8000", ""): False,
        ("http://localhost", "localhost:8000", ""): False,
        ("http://evil.example:8000", "127.0.0.1:8000", ""): False,
        # No port: the scheme's default, either scheme (TLS may end at a proxy in front).
        ("https://chat.example.com", "chat.example.com", ""): True,
        ("http://chat.example.com", "chat.example.com", ""): True,
        ("https://chat.example.com:8443", "chat.example.com", ""): False,
        # A Host that is not one of ALLOWED_HOSTS vouches for nothing.
        ("https://evil.example", "evil.example", ""): False,
        # Behind a proxy that forwards another Host: the public origin is trusted.
        ("https://chat.example.com", "127.0.0.1:8000", "https://chat.example.com"): True,
        ("http://chat.example.com", "127.0.0.1:8000", "https://chat.example.com"): False,
        ("https://a.example.net", "127.0.0.1:8000", "https://*.example.net"): True,
    }
    seen = {}
    for origin, host, trusted in cases:
        settings.CSRF_TRUSTED_ORIGINS = [trusted] if trusted else []
        socket = await connect(conversation, user, origin=origin.encode(), host=host.encode())
        seen[origin, host, trusted], _ = await socket.connect()
        await socket.disconnect()

    assert seen == cases
