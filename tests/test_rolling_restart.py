"""A rolling restart under load loses nothing: `serve --workers 3` behind nginx (the shipped
deploy/nginx.conf), 100 API clients with answers streaming through it, SIGHUP to the parent
restarts every worker one after another; a client whose socket closes (1012) reconnects through
nginx, which sends it to another worker, and resumes. Every character a client was sent is in the
database, and no answer is left streaming.

Needs PostgreSQL and Redis (the workers share them), so it runs in `make test`'s second pass.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import User
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from conversations import drain, services
from conversations.api.tokens import token_create
from conversations.models import Conversation, Message
from tests.helpers.fake_openai import FakeOpenAI, sse, text_stream
from tests.helpers.nginx import nginx
from tests.helpers.servers import serve_workers, shared_server_env, wait_until, worker_pids

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        not (os.environ.get("REDIS_URL") and os.environ.get("DATABASE_URL", "").startswith("post")),
        reason="needs PostgreSQL and Redis (DATABASE_URL, REDIS_URL): make test's second pass",
    ),
]

CLIENTS = 100
WORKERS = 3
GRACE = 2.0
# Each answer: 60 words, one every 50 ms (3 s): some end within a worker's grace, some do not.
WORDS = " ".join(f"w{number}" for number in range(60))
DELAY = 0.05
FINAL = {"complete", "failed", "cancelled", "interrupted"}


@dataclass
class Answer:
    message_id: int
    seq: int = 0
    text: str = ""
    status: str = "streaming"


@dataclass
class Client:
    """An API client that sends a message, follows its answer to the end, and sends the next,
    reconnecting to the next worker (and resuming) whenever its socket closes."""

    number: int
    conversation_id: int
    token: str
    # The load balancer's WebSocket address.
    base: str
    answers: list[Answer] = field(default_factory=list)
    closes: list[int] = field(default_factory=list)
    refusals: int = 0
    socket: ClientConnection | None = None

    async def connect(self) -> dict[str, Any]:
        """Connect to a worker that takes the socket; its `ready` event."""
        while True:
            try:
                self.socket = await connect(
                    f"{self.base}/ws/api/conversations/{self.conversation_id}/",
                    subprotocols=["chat.v1"],  # type: ignore[list-item]
                    additional_headers={"Authorization": f"Bearer {self.token}"},
                    open_timeout=10,
                )
                ready: dict[str, Any] = json.loads(await self.socket.recv())
                assert ready["type"] == "ready", ready
                return ready
            except (OSError, InvalidHandshake, ConnectionClosed, TimeoutError):
                # Refused (nginx found no worker taking sockets for a moment): try again.
                self.refusals += 1
                await asyncio.sleep(0.05)

    async def run(self, stop: asyncio.Event) -> None:
        await self.connect()
        while not stop.is_set():
            await self.one_answer()
        assert self.socket is not None
        await self.socket.close()

    async def one_answer(self) -> None:
        send = {"type": "send", "text": "count"}
        outbox: list[dict[str, Any]] = [send]
        answer: Answer | None = None
        while answer is None or answer.status not in FINAL:
            assert self.socket is not None
            try:
                while outbox:
                    await self.socket.send(json.dumps(outbox[0]))
                    outbox.pop(0)
                frame = json.loads(await self.socket.recv())
            except ConnectionClosed as closed:
                self.closes.append(closed.rcvd.code if closed.rcvd else 1006)
                ready = await self.connect()
                latest = ready["answer"]
                known = {earlier.message_id for earlier in self.answers}
                if answer is None and (latest is None or latest["message_id"] in known):
                    # The message never got to a worker: send it again.
                    outbox = [send]
                    continue
                if answer is None:
                    answer = Answer(latest["message_id"])
                    self.answers.append(answer)
                outbox = [{"type": "resume", "message_id": answer.message_id, "after": answer.seq}]
                continue
            if frame["type"] == "error":
                # "restarting": the socket closes in a moment, and the message is sent again.
                # "busy": sent twice, as the first one did reach a worker: follow its answer.
                assert frame["code"] in ("restarting", "busy"), frame
                if frame["code"] == "busy" and answer is None:
                    outbox = [{"type": "resume", "after": 0}]
                continue
            answer = self.take(frame, answer)

    def take(self, frame: dict[str, Any], answer: Answer | None) -> Answer | None:
        """Apply one event to the answer followed (the first event of a new answer starts it)."""
        message_id = frame.get("message_id")
        if message_id is None:
            return answer
        if answer is None:
            if any(earlier.message_id == message_id for earlier in self.answers):
                return None
            answer = Answer(message_id)
            self.answers.append(answer)
        if message_id != answer.message_id or frame["seq"] < answer.seq:
            return answer
        kind = frame["type"]
        if kind in ("message.created", "snapshot"):
            answer.text = frame["message"]["content"]
            answer.status = frame["message"]["status"]
        elif frame["seq"] == answer.seq:
            return answer  # had it already (resumed from an earlier seq)
        elif kind == "text.delta":
            assert frame["seq"] == answer.seq + 1, "no gap"
            answer.text += frame["text"]
        elif kind == "message.finished":
            answer.status = frame["status"]
        answer.seq = frame["seq"]
        return answer


def server_env(fake_openai: FakeOpenAI) -> dict[str, str]:
    return shared_server_env(fake_openai) | {
        # As in production: the loopback model server, under 100 streams at once, now and then
        # refuses a connection, which a retry gets through.
        "LLM_MAX_RETRIES": "2",
        "CHAT_DRAIN_GRACE": str(GRACE),
        "CHAT_GENERATE_TITLES": "0",
        "CHAT_MESSAGES_PER_MINUTE": "0",
        "CHAT_CONCURRENT_ANSWERS": "0",
        "LOG_LEVEL": "WARNING",
    }


@sync_to_async
def clients_of(user: User, base: str) -> list[Client]:
    clients = []
    for number in range(CLIENTS):
        conversation = Conversation.objects.create(owner=user)
        _, token = token_create(user=user, name=f"client {number}")
        clients.append(Client(number, conversation.pk, token, base))
    return clients


def lost_characters(seen: str, saved: str) -> int:
    """How much of what a client was sent is not in the saved text (from the first difference)."""
    same = next(
        (i for i, (a, b) in enumerate(zip(seen, saved, strict=False)) if a != b),
        min(len(seen), len(saved)),
    )
    return len(seen) - same


def roll_steps(log: str) -> list[str]:
    """What the parent's log says happened to the workers after SIGHUP, in order."""
    after = log.partition("SIGHUP: restarting the workers one at a time.")[2]
    return [
        f"{worker} {what}".strip()
        for worker, what in re.findall(
            r"\] (Draining worker \d+|Worker \d+) \(port \d+, pid \d+\)\.? ?(.*)", after
        )
    ]


async def test_a_rolling_restart_under_load_loses_no_character(
    fake_openai: FakeOpenAI, user: User, tmp_path: Path
) -> None:
    for _ in range(CLIENTS * 12):
        fake_openai.queue(sse(text_stream(WORDS), delay=DELAY))
    env, log = server_env(fake_openai), tmp_path / "serve.log"
    with (
        serve_workers(env, workers=WORKERS, log=log) as served,
        nginx(tmp_path / "nginx", served.ports) as url,
    ):
        clients = await clients_of(user, "ws" + url.removeprefix("http"))
        before = worker_pids(served.process.pid)
        stop = asyncio.Event()
        running = [asyncio.create_task(client.run(stop)) for client in clients]
        await asyncio.sleep(2)  # every client has an answer streaming

        served.process.send_signal(signal.SIGHUP)
        rolled = time.monotonic()
        await asyncio.to_thread(
            wait_until,
            lambda: "Every worker has been restarted." in served.output(),
            90,
            "every worker restarted",
        )
        roll_time = time.monotonic() - rolled
        stop.set()
        _, pending = await asyncio.wait(running, timeout=60)
        stuck = [
            (client.number, client.answers[-1:], client.closes)
            for client, task in zip(clients, running, strict=True)
            if task in pending
        ]
        if stuck:
            rows = [
                row
                async for row in Message.objects.filter(
                    pk__in=[answer.message_id for _, answers, _ in stuck for answer in answers]
                ).values("pk", "status", "seq", "heartbeat_at", "created_at", "finished_at")
            ]
            pytest.fail(f"clients still waiting for their answer's end: {stuck}; rows: {rows}")
        for task in running:
            task.result()
        after = worker_pids(served.process.pid)

    assert sorted(after) == served.ports
    assert not set(before.values()) & set(after.values()), "every worker was restarted"
    assert roll_steps(served.output()) == [
        step
        for number in range(1, WORKERS + 1)
        for step in (f"Draining worker {number}", f"Worker {number} is serving.")
    ], served.output()

    stored = {
        message.pk: message
        async for message in Message.objects.filter(
            conversation__owner=user, role=Message.Role.ASSISTANT
        )
    }
    answers = [answer for client in clients for answer in client.answers]
    statuses = [stored[answer.message_id].status for answer in answers]
    lost = sum(
        lost_characters(answer.text, stored[answer.message_id].content) for answer in answers
    )
    streaming = sum(message.in_progress for message in stored.values())
    complete = [answer for answer in answers if stored[answer.message_id].status == "complete"]
    interrupted = [
        stored[a.message_id] for a in answers if stored[a.message_id].status == "interrupted"
    ]
    seen_differs = sum(answer.text != stored[answer.message_id].content for answer in answers)
    closes = [code for client in clients for code in client.closes]
    print(
        f"\nrolling restart of {WORKERS} workers under {CLIENTS} clients: {roll_time:.1f} s\n"
        f"answers: {len(answers)} ({len(stored)} stored): {statuses.count('complete')} complete, "
        f"{statuses.count('interrupted')} interrupted, "
        f"{len(answers) - statuses.count('complete') - statuses.count('interrupted')} other\n"
        f"upstream streams requested: {len(fake_openai.requests)}; complete answers whole: "
        f"{sum(stored[a.message_id].content == WORDS for a in complete)}/{len(complete)}; "
        f"interrupted answers kept {sum(len(m.content) for m in interrupted)} characters; "
        f"ended by a sweeper: {sum(m.error == services.INTERRUPTED_ERROR for m in interrupted)}\n"
        f"characters the clients were sent: {sum(len(a.text) for a in answers)}, "
        f"lost: {lost}; answers whose client text differs from the row: {seen_differs}\n"
        f"socket closes: {len(closes)} ({closes.count(1012)} with 1012), "
        f"refused connection attempts: {sum(client.refusals for client in clients)}\n"
        f"answers left streaming: {streaming}"
    )
    assert lost == 0
    assert streaming == 0
    assert len(stored) == len(answers), "every answer stored was followed by its client"
    assert set(statuses) <= {"complete", "interrupted"}, [
        (stored[a.message_id].status, stored[a.message_id].error) for a in answers
    ]
    assert all(stored[answer.message_id].content == WORDS for answer in complete)
    assert all(WORDS.startswith(message.content) for message in interrupted)
    # Ended by its worker's drain; now and then one the worker stored as its grace ran out, and
    # so never ran, is ended by a sweeper once it is stale, its text (none) kept just the same.
    assert {message.error for message in interrupted} <= {
        drain.INTERRUPTED_ERROR,
        services.INTERRUPTED_ERROR,
    }
    assert seen_differs == 0, "each client ends with the answer as saved"
    assert closes.count(1012) >= 1
    # nginx always found a worker that took the socket: none was turned away.
    assert sum(client.refusals for client in clients) == 0
