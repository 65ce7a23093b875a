"""Resuming an answer over the API socket: after a dropped connection nothing is lost or repeated,
and a finished answer comes back as one snapshot."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from django.contrib.auth.models import User

from conversations import runner
from conversations.api.protocol import message_state
from conversations.models import Message
from tests.helpers.chat import (
    ApiConnect,
    answer_finished,
    api_opened,
    api_send_and_wait,
    new_conversation,
    rebuilt,
    stored_state,
)
from tests.helpers.fake_openai import FakeOpenAI, sse, text_stream, tool_calls_stream

pytestmark = pytest.mark.django_db(transaction=True)


def long_answer_with_tool_calls(model_server: FakeOpenAI, *, delay: float) -> None:
    arguments = json.dumps({"expression": " + ".join(str(n) for n in range(1, 40))})
    model_server.queue(
        sse(
            tool_calls_stream(
                [("calculator", arguments), ("current_time", json.dumps({"timezone": "UTC"}))],
                text_before="Let me work that out first.",
                pieces=30,
            ),
            delay=delay,
        )
    )
    model_server.queue(sse(text_stream(" ".join(f"word{n}" for n in range(500))), delay=delay))


def last_seq(frames: list[dict[str, Any]], message_id: int) -> int:
    return max(frame["seq"] for frame in frames if frame.get("message_id") == message_id)


async def test_fifty_dropped_connections_lose_and_repeat_nothing(
    api_connect: ApiConnect, user: User, model_server: FakeOpenAI
) -> None:
    rng = random.Random(20261124)
    long_answer_with_tool_calls(model_server, delay=0.02)
    conversation = await new_conversation(user)
    socket = await api_opened(api_connect, conversation, user)
    await socket.send({"type": "send", "text": "a long one, please"})
    created = await socket.receive()
    message_id = created["message_id"]
    received = [created]
    drops = 0
    finished = False
    while drops < 50 and not finished:
        # Read a few frames (or none), then drop the connection with whatever is on its way.
        for _ in range(rng.randint(0, 4)):
            frame = await socket.receive()
            received.append(frame)
            if answer_finished(frame):
                finished = True
                break
        if finished:
            break
        await socket.disconnect()
        drops += 1
        socket = await api_opened(api_connect, conversation, user)
        after = last_seq(received, message_id)
        await socket.send({"type": "resume", "message_id": message_id, "after": after})
    if not finished:
        received += await socket.receive_until(answer_finished, timeout=30)
    await runner.wait_for_local_runs()

    assert drops == 50, "the answer should outlast fifty dropped connections"
    seqs = [frame["seq"] for frame in received]
    assert seqs == list(range(len(seqs))), "every event once, in order, from message.created on"
    assert message_state(rebuilt(received, message_id)) == await stored_state(message_id)
    stored = await Message.objects.aget(pk=message_id)
    assert stored.status == Message.Status.COMPLETE and stored.content.endswith("word499")
    assert [call["status"] for call in (await stored_state(message_id))["tool_calls"]] == [
        "succeeded",
        "succeeded",
    ]


async def test_resume_after_any_seq_sends_exactly_the_events_after_it(
    api_connect: ApiConnect, user: User, model_server: FakeOpenAI
) -> None:
    long_answer_with_tool_calls(model_server, delay=0.01)
    conversation = await new_conversation(user)
    sender = await api_opened(api_connect, conversation, user)
    await sender.send({"type": "send", "text": "a long one, please"})
    early = await sender.receive_until(lambda frame: frame["seq"] >= 40)
    message_id = early[0]["message_id"]
    late = await api_opened(api_connect, conversation, user)

    # No message_id: the latest answer.
    await late.send({"type": "resume", "after": 23})
    resumed = await late.receive_until(answer_finished, timeout=30)
    everything = early + await sender.receive_until(answer_finished, timeout=30)
    await runner.wait_for_local_runs()

    assert [frame["seq"] for frame in resumed] == list(range(24, resumed[-1]["seq"] + 1))
    assert all(frame["message_id"] == message_id for frame in resumed)
    stored = await stored_state(message_id)
    base = [frame for frame in early if frame["seq"] <= 23]
    assert message_state(rebuilt(base + resumed, message_id)) == stored
    assert message_state(rebuilt(everything, message_id)) == stored
    assert [frame["seq"] for frame in everything] == list(range(len(everything)))


async def test_resume_of_a_finished_answer_is_one_snapshot_when_behind(
    api_connect: ApiConnect, user: User, model_server: FakeOpenAI
) -> None:
    model_server.queue(
        sse(tool_calls_stream([("calculator", json.dumps({"expression": "6*7"}))]), delay=0.01)
    )
    model_server.queue(sse(text_stream("It is 42."), delay=0.01))
    conversation = await new_conversation(user)
    sender = await api_opened(api_connect, conversation, user)
    first = await api_send_and_wait(sender, "6*7?")
    model_server.queue(sse(text_stream("Still 42.")))
    second = await api_send_and_wait(sender, "sure?")
    message_id, last = first[0]["message_id"], first[-1]["seq"]
    stored = await stored_state(message_id)
    socket = await api_opened(api_connect, conversation, user)

    await socket.send({"type": "resume", "message_id": message_id, "after": 0})
    snapshot = await socket.receive()
    await socket.send({"type": "resume", "message_id": message_id, "after": last - 3})
    behind = await socket.receive()
    await socket.send({"type": "resume", "message_id": message_id, "after": last})
    nothing = await socket.nothing_before_pong()
    await socket.send({"type": "resume", "after": 0})
    latest = await socket.receive()

    assert snapshot == {
        "type": "snapshot",
        "seq": last,
        "message_id": message_id,
        "message": stored,
    }
    assert behind == snapshot
    assert nothing == []
    assert (latest["message_id"], latest["seq"]) == (second[0]["message_id"], second[-1]["seq"])
    assert latest["message"] == await stored_state(second[0]["message_id"])
    assert stored["tool_calls"][0]["output"] == "42"


async def test_resume_of_a_running_answer_from_zero_replays_it_whole(
    api_connect: ApiConnect, user: User, model_server: FakeOpenAI
) -> None:
    model_server.queue(sse(text_stream(" ".join(["word"] * 60)), delay=0.02))
    conversation = await new_conversation(user)
    sender = await api_opened(api_connect, conversation, user)
    await sender.send({"type": "send", "text": "talk"})
    created = (await sender.receive_until(lambda frame: frame["seq"] >= 10))[0]
    late = await api_opened(api_connect, conversation, user)
    assert late.received[0]["answer"]["status"] == "streaming"

    await late.send({"type": "resume", "message_id": created["message_id"], "after": 0})
    frames = await late.receive_until(answer_finished)
    await runner.wait_for_local_runs()

    assert [frame["seq"] for frame in frames] == list(range(1, frames[-1]["seq"] + 1))
    stored = await stored_state(created["message_id"])
    assert message_state(rebuilt([created, *frames], created["message_id"])) == stored
