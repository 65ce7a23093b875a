"""The JSON socket's message actions: regenerate, retry, continue and edit (docs/api.md)."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User

from conversations.models import Conversation, Message
from tests.helpers.chat import (
    ApiConnect,
    ApiSocket,
    answer_finished,
    api_opened,
    api_send_and_wait,
    new_conversation,
)
from tests.helpers.fake_openai import FakeOpenAI, error, sse, text_stream

pytestmark = pytest.mark.django_db(transaction=True)


async def act(socket: ApiSocket, frame: dict[str, Any]) -> list[dict[str, Any]]:
    await socket.send(frame)
    return await socket.receive_until(answer_finished)


def text_of(frames: list[dict[str, Any]]) -> str:
    return "".join(frame["text"] for frame in frames if frame["type"] == "text.delta")


async def current(conversation: Conversation) -> list[tuple[str, str]]:
    return [
        (message.role, message.content)
        async for message in Message.objects.filter(
            conversation=conversation, superseded_at=None
        ).order_by("created_at", "id")
    ]


async def test_regenerate_answers_again_and_a_watcher_learns_what_was_superseded(
    api_connect: ApiConnect, user: User, model_server: FakeOpenAI
) -> None:
    model_server.queue(sse(text_stream("First try.")))
    model_server.queue(sse(text_stream("Second try.")))
    conversation = await new_conversation(user)
    socket = await api_opened(api_connect, conversation, user)
    watcher = await api_opened(api_connect, conversation, user)
    first = await api_send_and_wait(socket, "Say something", id=1)
    await watcher.receive_until(answer_finished)

    frames = await act(socket, {"type": "regenerate", "id": 2})
    seen = await watcher.receive_until(answer_finished)

    created = frames[0]
    assert created["type"] == "message.created"
    assert created["user_message"] == first[0]["user_message"]
    assert created["message_ids"] == [first[0]["user_message"]["id"], created["message_id"]]
    assert first[0]["message_id"] not in created["message_ids"]
    assert text_of(frames) == "Second try."
    assert seen[0]["message_ids"] == created["message_ids"]
    assert await current(conversation) == [("user", "Say something"), ("assistant", "Second try.")]
    old = await Message.objects.aget(pk=first[0]["message_id"])
    assert (old.content, old.superseded_at is not None) == ("First try.", True)
    # The model was asked the same question again, without the answer it replaced.
    assert model_server.requests[-1]["messages"][-1] == {"role": "user", "content": "Say something"}
    assert all(m.get("content") != "First try." for m in model_server.requests[-1]["messages"])


async def test_edit_replaces_the_message_and_everything_after_it(
    api_connect: ApiConnect, user: User, model_server: FakeOpenAI
) -> None:
    for text in ("One.", "Two.", "Edited answer."):
        model_server.queue(sse(text_stream(text)))
    conversation = await new_conversation(user)
    socket = await api_opened(api_connect, conversation, user)
    await api_send_and_wait(socket, "first")
    second = await api_send_and_wait(socket, "second")

    frames = await act(
        socket,
        {"type": "edit", "message_id": second[0]["user_message"]["id"], "text": "second, edited"},
    )

    assert frames[0]["user_message"]["content"] == "second, edited"
    assert text_of(frames) == "Edited answer."
    assert await current(conversation) == [
        ("user", "first"),
        ("assistant", "One."),
        ("user", "second, edited"),
        ("assistant", "Edited answer."),
    ]
    assert await Message.objects.filter(conversation=conversation).acount() == 6
    assert len(frames[0]["message_ids"]) == 4


async def test_retry_after_a_failure_and_continue_after_a_cut_off(
    api_connect: ApiConnect, user: User, model_server: FakeOpenAI
) -> None:
    model_server.queue(error(500, "the server fell over"))
    model_server.queue(sse(text_stream("Worked this time and then", finish_reason="length")))
    model_server.queue(sse(text_stream(" went on to the end.")))
    conversation = await new_conversation(user)
    socket = await api_opened(api_connect, conversation, user)
    failed = await api_send_and_wait(socket, "try it")
    assert failed[-1]["status"] == "failed"

    retried = await act(socket, {"type": "retry"})
    continued = await act(socket, {"type": "continue"})

    assert text_of(retried) == "Worked this time and then"
    assert continued[0]["user_message"]["content"] == "Continue where you left off."
    assert text_of(continued) == " went on to the end."
    assert [role for role, _ in await current(conversation)] == [
        "user",
        "assistant",
        "user",
        "assistant",
    ]


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ({"type": "retry"}, "unavailable"),
        ({"type": "continue"}, "unavailable"),
        ({"type": "edit", "message_id": 999_999, "text": "x"}, "not_found"),
        ({"type": "edit", "message_id": "1", "text": "x"}, "invalid_command"),
        ({"type": "edit", "text": "x"}, "invalid_command"),
    ],
)
async def test_an_action_that_does_not_apply_is_refused_and_stores_nothing(
    api_connect: ApiConnect,
    user: User,
    model_server: FakeOpenAI,
    frame: dict[str, Any],
    code: str,
) -> None:
    model_server.queue(sse(text_stream("A complete answer.")))
    conversation = await new_conversation(user)
    socket = await api_opened(api_connect, conversation, user)
    await api_send_and_wait(socket, "hello")

    await socket.send(frame | {"id": "a1"}, valid=code != "invalid_command")
    refused = await socket.receive()

    assert (refused["type"], refused["code"], refused["command_id"]) == ("error", code, "a1")
    if frame["type"] in ("retry", "continue"):
        assert await Message.objects.filter(conversation=conversation).acount() == 2
    assert await socket.nothing_before_pong() == []
    assert await current(conversation) == [("user", "hello"), ("assistant", "A complete answer.")]


async def test_someone_elses_message_cannot_be_edited(
    api_connect: ApiConnect, user: User, other_user: User, model_server: FakeOpenAI
) -> None:
    model_server.queue(sse(text_stream("Theirs.")))
    theirs = await new_conversation(other_user)
    their_socket = await api_opened(api_connect, theirs, other_user)
    sent = await api_send_and_wait(their_socket, "private")
    mine = await new_conversation(user)
    socket = await api_opened(api_connect, mine, user)

    await socket.send(
        {"type": "edit", "message_id": sent[0]["user_message"]["id"], "text": "hijacked"}
    )
    refused = await socket.receive()

    assert refused["code"] == "not_found"
    assert await current(theirs) == [("user", "private"), ("assistant", "Theirs.")]
    assert await Message.objects.filter(conversation=mine).acount() == 0


async def test_regenerate_before_any_answer_or_while_one_runs_is_refused(
    api_connect: ApiConnect, user: User, model_server: FakeOpenAI
) -> None:
    model_server.queue(sse(text_stream(" ".join(["word"] * 100)), delay=0.05))
    conversation = await new_conversation(user)
    socket = await api_opened(api_connect, conversation, user)

    await socket.send({"type": "regenerate"})
    assert (await socket.receive())["code"] == "unavailable"
    await socket.send({"type": "send", "text": "count"})
    assert (await socket.receive())["type"] == "message.created"
    await socket.send({"type": "regenerate", "id": 7})
    refused = await socket.receive_until(lambda frame: frame["type"] == "error")

    assert (refused[-1]["code"], refused[-1]["command_id"]) == ("busy", 7)
    finished = await socket.receive_until(answer_finished)
    assert finished[-1]["status"] == "complete"
    assert await Message.objects.filter(conversation=conversation).acount() == 2
