"""Renaming a conversation: the checks, from its page's socket, and by the model's tool; every
open page of it shows the new title (heading, sidebar entry) at once."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from django.contrib.auth.models import User

from conversations import refusals, services
from conversations.models import Conversation
from tests.helpers.chat import ApiConnect, Connect, new_conversation, opened, receive_until
from tests.helpers.fake_openai import FakeOpenAI, sse, text_stream, tool_calls_stream

TOOL_CALL = re.compile(r'name="tool_call" value="(\d+:\d+:\d+)"')


def title_frame(title: str) -> Any:
    return lambda frame: f'<h1 id="conversation-title">{title}</h1>' in frame


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("title", "error"),
    [
        ("", "The title is empty"),
        ("   \n\t ", "The title is empty"),
        ("x" * 201, "the limit is 200"),
        (42, "must be text"),
        (None, "must be text"),
    ],
)
def test_a_bad_title_is_refused_and_nothing_is_stored(
    user: User, title: object, error: str
) -> None:
    conversation = Conversation.objects.create(owner=user, title="Kept")
    with pytest.raises(refusals.InvalidInput, match=error):
        services.conversation_rename(owner_id=user.pk, conversation_id=conversation.pk, title=title)
    conversation.refresh_from_db()
    assert conversation.title == "Kept"


@pytest.mark.django_db
def test_a_title_is_stripped_and_may_be_200_characters(user: User, other_user: User) -> None:
    conversation = Conversation.objects.create(owner=user)
    renamed = services.conversation_rename(
        owner_id=user.pk, conversation_id=conversation.pk, title="  Trip   to\nKyoto "
    )
    assert renamed.title == "Trip to Kyoto"
    long = "y" * 200
    assert (
        services.conversation_rename(
            owner_id=user.pk, conversation_id=conversation.pk, title=long
        ).title
        == long
    )
    with pytest.raises(services.NoSuchConversation):
        services.conversation_rename(
            owner_id=other_user.pk, conversation_id=conversation.pk, title="Mine now"
        )


@pytest.mark.django_db(transaction=True)
async def test_a_rename_from_one_page_reaches_every_open_page(connect: Connect, user: User) -> None:
    conversation = await new_conversation(user, title="Old name")
    page = await opened(connect, conversation, user)
    other_tab = await opened(connect, conversation, user)

    await page.send_json_to({"action": "rename", "title": "  A <new> name "})

    for socket in (page, other_tab):
        frames = await receive_until(socket, title_frame("A &lt;new&gt; name"))
        shown = frames[-1]
        assert re.search(
            rf'<li id="sidebar-conversation-{conversation.pk}" class="sidebar-entry current">',
            shown,
        )
        assert '<span class="sidebar-title">A &lt;new&gt; name</span>' in shown
    await conversation.arefresh_from_db()
    assert conversation.title == "A <new> name"


@pytest.mark.django_db(transaction=True)
async def test_a_bad_rename_shows_its_error_on_that_page_only(connect: Connect, user: User) -> None:
    conversation = await new_conversation(user, title="Old name")
    page = await opened(connect, conversation, user)

    await page.send_json_to({"action": "rename", "title": "   "})

    [frame] = await receive_until(page, lambda frame: 'id="chat-error"' in frame)
    assert "The title is empty" in frame
    assert "conversation-title" not in frame
    await conversation.arefresh_from_db()
    assert conversation.title == "Old name"


@pytest.mark.django_db(transaction=True)
async def test_the_rename_tool_updates_the_open_pages(
    connect: Connect, user: User, model_server: FakeOpenAI
) -> None:
    model_server.queue(
        sse(tool_calls_stream([("rename_conversation", json.dumps({"title": "Trip to Kyoto"}))]))
    )
    model_server.queue(sse(text_stream("Renamed.")))
    conversation = await new_conversation(user)
    page = await opened(connect, conversation, user)
    other_tab = await opened(connect, conversation, user)

    await page.send_json_to({"message": "Call this Trip to Kyoto"})
    frames = await receive_until(page, lambda frame: 'data-status="awaiting_approval"' in frame)
    [tool_call] = set(TOOL_CALL.findall(frames[-1]))
    # Until the user approves it, the title is the first message's.
    assert any(title_frame("Call this Trip to Kyoto")(frame) for frame in frames)
    await page.send_json_to({"action": "approve", "tool_call": tool_call})

    for socket in (page, other_tab):
        frames = await receive_until(socket, title_frame("Trip to Kyoto"))
        assert '<span class="sidebar-title">Trip to Kyoto</span>' in frames[-1]
    # The entry shown when the answer ends has the new title too.
    frames = await receive_until(page, lambda frame: 'data-status="complete"' in frame)
    assert '<span class="sidebar-title">Trip to Kyoto</span>' in frames[-1]


@pytest.mark.django_db(transaction=True)
async def test_an_api_client_of_the_conversation_is_not_disturbed_by_a_rename(
    connect: Connect, api_connect: ApiConnect, user: User
) -> None:
    conversation = await new_conversation(user, title="Old name")
    page = await opened(connect, conversation, user)
    client = await api_connect(conversation, user)
    assert (await client.connect())["type"] == "ready"

    await page.send_json_to({"action": "rename", "title": "New name"})
    await receive_until(page, title_frame("New name"))

    assert await client.nothing_before_pong() == []
