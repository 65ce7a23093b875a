"""The follower both sockets build on, tested as Channels tests a consumer: send the group event,
read what the socket sends. No runner and no model: the events stand in for a run in another
process."""

from __future__ import annotations

from typing import Any

import pytest
from channels.layers import get_channel_layer
from django.contrib.auth.models import User

from conversations import actions
from conversations.live.events import MessageStatus, TextDelta, event_to_dict
from conversations.live.hub import conversation_group
from conversations.models import Conversation, Message
from tests.helpers.chat import ApiConnect, Connect, new_conversation, opened

pytestmark = pytest.mark.django_db(transaction=True)


async def running_answer(user: User) -> tuple[Conversation, Message]:
    """A conversation whose answer another process is writing (its rows say so)."""
    conversation = await new_conversation(user)
    await Message.objects.acreate(conversation=conversation, role="user", content="Hi")
    answer = await Message.objects.acreate(
        conversation=conversation, role="assistant", status="streaming", model="m"
    )
    return conversation, answer


async def relay(conversation: Conversation, answer: Message, *events: Any) -> None:
    """The running process's hub relaying events (here to the group, which the socket is in)."""
    layer = get_channel_layer()
    assert layer is not None
    await layer.group_send(
        conversation_group(conversation.pk),
        {
            "type": "run.events",
            "message_id": answer.pk,
            "events": [event_to_dict(event) for event in events],
        },
    )


async def test_the_api_socket_gets_each_event_once_and_none_after_a_gap(
    api_connect: ApiConnect, user: User
) -> None:
    conversation, answer = await running_answer(user)
    socket = await api_connect(conversation, user)
    ready = await socket.connect()
    assert ready["answer"] == {"message_id": answer.pk, "status": "streaming", "seq": 0}
    await socket.send({"type": "resume", "message_id": answer.pk, "after": 0})

    await relay(conversation, answer, TextDelta(1, "Hel"), TextDelta(2, "lo"))
    # A repeat of what was sent, and one more: only the new one goes out.
    await relay(conversation, answer, TextDelta(2, "lo"), TextDelta(3, "!"))
    # Event 5 without 4 (a lost delivery): held back, and the socket asks the run again.
    await relay(conversation, answer, TextDelta(5, "?"))
    await relay(conversation, answer, TextDelta(4, " "), MessageStatus(5, "complete"))
    frames = await socket.receive_until(lambda frame: frame["type"] == "message.finished")

    assert [(frame["seq"], frame.get("text")) for frame in frames] == [
        (1, "Hel"),
        (2, "lo"),
        (3, "!"),
        (4, " "),
        (5, None),
    ]
    assert frames[-1]["status"] == "complete"
    # Finished: later events of that answer are not followed.
    await relay(conversation, answer, TextDelta(6, "late"))
    assert await socket.nothing_before_pong() == []


async def test_the_page_shows_each_event_once_and_its_title_changes(
    connect: Connect, user: User
) -> None:
    conversation, answer = await running_answer(user)
    page = await opened(connect, conversation, user)

    await relay(conversation, answer, TextDelta(1, "Hel"), TextDelta(2, "lo"))
    first = await page.receive_from(timeout=5)
    await relay(conversation, answer, TextDelta(2, "lo"), TextDelta(3, "!"))
    second = await page.receive_from(timeout=5)
    assert "Hel" in first and "lo" in first
    assert "!" in second and "lo" not in second

    layer = get_channel_layer()
    assert layer is not None
    await layer.group_send(
        conversation_group(conversation.pk),
        {"type": "conversation.changed", "title": "New", "html": "<title>New</title>"},
    )
    assert await page.receive_from(timeout=5) == "<title>New</title>"
    await page.disconnect()


async def test_an_answer_ended_elsewhere_reaches_both_faces(
    connect: Connect, api_connect: ApiConnect, user: User
) -> None:
    conversation, answer = await running_answer(user)
    page = await opened(connect, conversation, user)
    socket = await api_connect(conversation, user)
    await socket.connect()
    await socket.send({"type": "resume", "message_id": answer.pk, "after": 0})
    await socket.nothing_before_pong()

    await relay(conversation, answer, TextDelta(1, "Half"))
    assert (await socket.receive())["seq"] == 1
    await page.receive_from(timeout=5)

    # Stop, from anywhere: no process claims the answer, so it ends at once from the rows.
    await actions.answers_stop(conversation=conversation)

    snapshot = await socket.receive()
    assert snapshot["type"] == "snapshot" and snapshot["seq"] > 1
    assert snapshot["message"]["status"] == "cancelled"
    html = await page.receive_from(timeout=5)
    assert 'data-status="cancelled"' in html
    await page.disconnect()
