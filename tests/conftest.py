"""The tests' fixtures: users, signed-in sockets, the loopback model server and its SDK client,
and the app pointed at it. The helpers they use are in tests/helpers/."""

from __future__ import annotations

import inspect
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from tests.helpers.fake_openai import FakeOpenAI, SilentServer

# Django is imported inside fixtures so the pure streaming-core tests run without it.
if TYPE_CHECKING:
    import openai
    from channels.testing import WebsocketCommunicator
    from django.contrib.auth.models import User

    from conversations.models import Conversation
    from tests.helpers.chat import ApiConnect, ApiSocket, Connect


ORIGIN = (b"origin", b"http://localhost")
HOST = (b"host", b"localhost")


@pytest.fixture
def user(db: None) -> User:
    from django.contrib.auth.models import User

    return User.objects.create_user(username="alice", password="a-long-password-1")


@pytest.fixture
def other_user(db: None) -> User:
    from django.contrib.auth.models import User

    return User.objects.create_user(username="bob", password="a-long-password-2")


@pytest.fixture
def model_server(fake_openai: FakeOpenAI, settings: Any) -> FakeOpenAI:
    """The app's model is the loopback server, read by the real openai SDK."""
    settings.OPENAI_BASE_URL = fake_openai.base_url
    settings.OPENAI_API_KEY = "test-key"
    settings.LLM_MODEL = "fake-model"
    settings.LLM_MAX_RETRIES = 0
    settings.CHAT_CHECKPOINT_INTERVAL = 0.05
    return fake_openai


@pytest.fixture
async def connect() -> AsyncIterator[Connect]:
    """Open a chat socket as `user` (or anonymously) on the real ASGI application."""
    from asgiref.sync import sync_to_async
    from channels.testing import WebsocketCommunicator

    from chatsite.asgi import application
    from conversations import runner
    from tests.helpers.chat import session_cookie

    opened: list[WebsocketCommunicator] = []

    async def open_socket(
        conversation: Conversation,
        user: User | None,
        *,
        origin: bytes = ORIGIN[1],
        host: bytes = HOST[1],
    ) -> WebsocketCommunicator:
        headers = [(b"origin", origin), (b"host", host)]
        if user is not None:
            headers.append((b"cookie", await sync_to_async(session_cookie)(user)))
        communicator = WebsocketCommunicator(
            application, f"/ws/conversations/{conversation.pk}/", headers=headers
        )
        opened.append(communicator)
        return communicator

    yield open_socket
    await runner.wait_for_local_runs()
    for communicator in opened:
        await communicator.disconnect()


@pytest.fixture
async def api_connect() -> AsyncIterator[ApiConnect]:
    """Open an API socket to a conversation (or a conversation id) as `user`.

    The scope is what the token middleware leaves: the token's user and `api_auth_error` ("" for
    a good token, else why it was refused).
    """
    from channels.routing import URLRouter
    from channels.testing import WebsocketCommunicator

    from conversations import runner
    from conversations.api.routing import api_websocket_urlpatterns
    from tests.helpers.chat import ApiSocket

    opened: list[ApiSocket] = []

    async def open_socket(
        conversation: Conversation | int,
        user: User,
        *,
        auth_error: str = "",
        subprotocols: list[str] | None = None,
    ) -> ApiSocket:
        conversation_id = conversation if isinstance(conversation, int) else conversation.pk
        communicator = WebsocketCommunicator(
            URLRouter(api_websocket_urlpatterns),
            f"/ws/api/conversations/{conversation_id}/",
            subprotocols=["chat.v1"] if subprotocols is None else subprotocols,
        )
        communicator.scope["user"] = user
        communicator.scope["api_auth_error"] = auth_error
        opened.append(ApiSocket(communicator))
        return opened[-1]

    yield open_socket
    await runner.wait_for_local_runs()
    for socket in opened:
        await socket.disconnect()


@pytest.fixture(autouse=True)
def fresh_cache(request: pytest.FixtureRequest) -> Iterator[None]:
    """Each test counts messages and failed logins from zero, also in a Redis shared by runs."""
    uses_django = request.node.get_closest_marker("django_db") is not None or bool(
        {"db", "transactional_db", "client", "admin_client", "settings"} & set(request.fixturenames)
    )
    if not uses_django:
        yield
        return
    from axes.handlers.proxy import AxesProxyHandler

    settings = request.getfixturevalue("settings")
    settings.CACHES = {
        name: {**config, "KEY_PREFIX": f"{config.get('KEY_PREFIX', '')}test-{uuid.uuid4().hex}"}
        for name, config in settings.CACHES.items()
    }
    # django-axes keeps its handler, and the cache it holds, for good.
    AxesProxyHandler.implementation = None
    yield
    AxesProxyHandler.implementation = None


@pytest.fixture(autouse=True)
def close_async_db_connections(request: pytest.FixtureRequest) -> Iterator[None]:
    """Close the connections async tests opened in asgiref's worker thread.

    Django closes connections at the end of a request; tests have no request, and PostgreSQL
    refuses to drop the test database while one is still open.
    """
    yield
    if inspect.iscoroutinefunction(request.function):
        from asgiref.sync import SyncToAsync
        from django.db import connections

        SyncToAsync.single_thread_executor.submit(connections.close_all).result()


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    """A started FakeOpenAI (tests/helpers/fake_openai.py), stopped after the test."""
    fake = FakeOpenAI().start()
    yield fake
    fake.stop()


@pytest.fixture
async def openai_client(fake_openai: FakeOpenAI) -> AsyncIterator[openai.AsyncOpenAI]:
    """The real openai SDK's client of `fake_openai`, which never retries."""
    import openai

    async with openai.AsyncOpenAI(
        base_url=fake_openai.base_url, api_key="test", max_retries=0
    ) as client:
        yield client


@pytest.fixture
def silent_server() -> Iterator[SilentServer]:
    """A server that accepts connections and never answers (see `SilentServer`)."""
    server = SilentServer()
    yield server
    server.close()


@pytest.fixture
def headers_only_server() -> Iterator[SilentServer]:
    """A server that sends a stream's headers, then nothing."""
    server = SilentServer(headers=True)
    yield server
    server.close()
