"""Actions: the page's, the API's and the model's tool's deletes are one path, which stops a
running answer before it deletes."""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from conversations import runner
from conversations.api.tokens import token_create
from conversations.models import Conversation, Message
from conversations.toolbox import toolbox_for
from tests.helpers.chat import Connect, new_conversation, opened, receive_text
from tests.helpers.fake_openai import FakeOpenAI, sse, text_stream

pytestmark = pytest.mark.django_db(transaction=True)


def page_delete(user: User, conversation: Conversation) -> None:
    client = Client()
    client.force_login(user)
    response = client.post(reverse("conversation-delete", args=[conversation.pk]))
    assert response.status_code == 302


def api_delete(user: User, conversation: Conversation) -> None:
    _, raw = token_create(user=user)
    client = Client(headers={"authorization": f"Bearer {raw}"})
    response = client.delete(reverse("api-conversation", args=[conversation.pk]))
    assert response.status_code == 204


async def tool_delete(user: User, conversation: Conversation) -> None:
    # The model's tool, called from an answer in another of the user's conversations.
    elsewhere = await new_conversation(user)
    tool = toolbox_for(user_id=user.pk, conversation_id=elsewhere.pk).get("delete_conversation")
    assert tool is not None
    assert f'"deleted": {conversation.pk}' in await tool.function(conversation_id=conversation.pk)


@pytest.mark.parametrize("face", ["page", "api", "tool"])
async def test_every_delete_stops_the_running_answer_first(
    face: str, connect: Connect, user: User, model_server: FakeOpenAI, settings: Any
) -> None:
    # A delete alone would end the run at its next checkpoint, a minute away: only a Stop ends
    # it at once.
    settings.CHAT_CHECKPOINT_INTERVAL = 60
    model_server.queue(sse(text_stream(" ".join(["word"] * 200)), delay=0.05))
    conversation = await new_conversation(user)
    socket = await opened(connect, conversation, user)
    await socket.send_json_to({"message": "talk a lot"})
    await receive_text(socket, "word word")

    if face == "tool":
        await tool_delete(user, conversation)
    else:
        await sync_to_async(page_delete if face == "page" else api_delete)(user, conversation)

    # The model's stream was closed at once, and nothing of the conversation is left.
    await model_server.wait_for_closed_early(timeout=5)
    await runner.wait_for_local_runs()
    assert not await Conversation.objects.filter(pk=conversation.pk).aexists()
    assert not await Message.objects.filter(conversation_id=conversation.pk).aexists()
    await socket.disconnect()
