"""`manage.py serve` over real sockets: what a client sees at the server's own limits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.helpers.servers import ROOT, daphne, migrate

LIMIT = 64 * 1024

# A user, their conversation and someone else's, and a signed-in session, in the server's database.
SEED = """
from django.contrib.auth.models import User
from django.contrib.sessions.backends.db import SessionStore
from conversations.models import Conversation
alice = User.objects.create_user("alice", password="a-long-password-1")
bob = User.objects.create_user("bob", password="a-long-password-2")
session = SessionStore()
session["_auth_user_id"] = str(alice.pk)
session["_auth_user_backend"] = "django.contrib.auth.backends.ModelBackend"
session["_auth_user_hash"] = alice.get_session_auth_hash()
session.create()
mine, theirs = Conversation.objects.create(owner=alice), Conversation.objects.create(owner=bob)
print(session.session_key, mine.pk, theirs.pk)
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, int, int]]:
    """`manage.py serve` on a fresh SQLite file: its URL, a session and two conversations."""
    database = tmp_path_factory.mktemp("serve") / "db.sqlite3"
    env = {
        "SECRET_KEY": "serve-test",
        "DATABASE_URL": f"sqlite:///{database}",
        # A remote model, so `serve` starts no local model (none is asked for here).
        "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
        "LLM_MODEL": "fake-model",
        "WEBSOCKET_MAX_MESSAGE_SIZE": str(LIMIT),
        "REDIS_URL": "",
    }
    migrate(env)
    seeded = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", SEED],
        cwd=ROOT,
        env={**os.environ, **env},
        check=True,
        capture_output=True,
        text=True,
    )
    # The last line: django-axes announces itself on the first.
    session, mine, theirs = seeded.stdout.splitlines()[-1].split()
    with daphne(env, serve=True, log=Path(database.parent / "serve.log")) as url:
        yield url, session, int(mine), int(theirs)


def socket_url(url: str, conversation: int) -> str:
    return f"{url.replace('http', 'ws')}/ws/conversations/{conversation}/"


async def test_a_message_past_the_limit_closes_with_1009_and_the_limit(
    server: tuple[str, str, int, int],
) -> None:
    url, session, mine, _ = server
    async with connect(
        socket_url(url, mine), origin=url, additional_headers={"Cookie": f"sessionid={session}"}
    ) as socket:  # type: ignore[arg-type]
        await socket.recv()  # the snapshot
        # Just under the limit: an answer (the text is too long for a message).
        await socket.send(json.dumps({"message": "x" * (LIMIT - 100)}))
        assert "the limit is 20,000" in str(await socket.recv())
        await socket.send(json.dumps({"message": "x" * (LIMIT + 1)}))
        with pytest.raises(ConnectionClosed) as closed:
            await socket.recv()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1009
    assert f"limit of {LIMIT} octets" in closed.value.rcvd.reason


async def test_someone_elses_conversation_closes_with_4404_after_the_handshake(
    server: tuple[str, str, int, int],
) -> None:
    url, session, _, theirs = server
    for conversation in (theirs, theirs + 1000):
        async with connect(
            socket_url(url, conversation),
            origin=url,  # type: ignore[arg-type]
            additional_headers={"Cookie": f"sessionid={session}"},
        ) as socket:
            with pytest.raises(ConnectionClosed) as closed:
                await socket.recv()
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 4404
