"""Superseded messages: kept in the database and the admin, left out of the page, the API, the
exports (the page's own downloads too) and the history the model reads."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from conversations import history, services
from conversations.api.tokens import token_create
from conversations.models import Conversation, Message

pytestmark = pytest.mark.django_db

MESSAGES = "admin:conversations_message_changelist"


def branched(user: User) -> Conversation:
    """A conversation whose first answer was regenerated: "Old answer" is superseded."""
    conversation = Conversation.objects.create(owner=user, title="Branched <b>", model="m")
    Message.objects.create(conversation=conversation, role="user", content="The question")
    Message.objects.create(
        conversation=conversation,
        role="assistant",
        content="Old answer",
        superseded_at=timezone.now(),
    )
    Message.objects.create(conversation=conversation, role="assistant", content="New answer")
    return conversation


def signed_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_the_page_exports_are_downloads_of_the_current_messages(user: User) -> None:
    conversation = branched(user)
    client = signed_in(user)

    markdown = client.get(reverse("conversation-export-markdown", args=[conversation.pk]))
    document = client.get(reverse("conversation-export-json", args=[conversation.pk]))

    assert markdown.status_code == 200 and markdown["Content-Type"].startswith("text/markdown")
    assert markdown["Content-Disposition"] == (
        f'attachment; filename="conversation-{conversation.pk}.md"'
    )
    text = markdown.content.decode()
    assert text.startswith("# Branched <b>\n")
    assert "New answer" in text and "The question" in text and "Old answer" not in text
    assert document["Content-Disposition"] == (
        f'attachment; filename="conversation-{conversation.pk}.json"'
    )
    exported = json.loads(document.content)
    assert [m["content"] for m in exported["messages"]] == ["The question", "New answer"]
    assert exported["title"] == "Branched <b>" and "exported_at" in exported


@pytest.mark.parametrize("name", ["conversation-export-markdown", "conversation-export-json"])
def test_the_page_exports_are_the_owners_only(user: User, other_user: User, name: str) -> None:
    conversation = branched(user)
    url = reverse(name, args=[conversation.pk])

    assert signed_in(other_user).get(url).status_code == 404
    anonymous = Client().get(url)
    assert anonymous.status_code == 302 and anonymous["Location"].startswith(reverse("login"))
    assert signed_in(user).post(url).status_code == 405


def test_the_chat_page_links_the_exports_and_shows_the_current_messages(user: User) -> None:
    conversation = branched(user)

    html = signed_in(user).get(conversation.get_absolute_url()).content.decode()

    assert reverse("conversation-export-markdown", args=[conversation.pk]) in html
    assert reverse("conversation-export-json", args=[conversation.pk]) in html
    assert "New answer" in html and "Old answer" not in html


def test_the_api_leaves_superseded_messages_out(user: User) -> None:
    conversation = branched(user)
    _, raw = token_create(user=user)
    client = Client(headers={"authorization": f"Bearer {raw}"})

    one = client.get(reverse("api-conversation", args=[conversation.pk])).json()
    exported = client.get(reverse("api-conversation-export-md", args=[conversation.pk]))

    assert [m["content"] for m in one["messages"]] == ["The question", "New answer"]
    assert "Old answer" not in exported.content.decode()


def test_the_model_reads_the_current_messages_only(user: User) -> None:
    conversation = branched(user)
    Message.objects.create(conversation=conversation, role="user", content="Next")
    answer = Message.objects.create(conversation=conversation, role="assistant", status="streaming")

    sent = history.provider_history(conversation=conversation, before=answer)
    previous = services.last_answer(conversation=conversation, before=answer)

    assert [m["content"] for m in sent[1:]] == ["The question", "New answer", "Next"]
    assert previous is not None and previous.content == "New answer"


def test_the_conversation_lists_last_answer_is_a_current_one(user: User) -> None:
    conversation = Conversation.objects.create(owner=user, title="t")
    Message.objects.create(conversation=conversation, role="user", content="q")
    Message.objects.create(conversation=conversation, role="assistant", status="failed")
    Message.objects.create(
        conversation=conversation,
        role="assistant",
        status="complete",
        superseded_at=timezone.now(),
    )

    found = Conversation.objects.with_answer_status().get(pk=conversation.pk)

    assert found.answer_status == "failed"  # type: ignore[attr-defined]


def test_the_admin_shows_and_filters_superseded_messages(admin_client: Client, user: User) -> None:
    conversation = branched(user)
    url = reverse(MESSAGES)

    current = admin_client.get(url, {"superseded": "current"}).content.decode()
    superseded = admin_client.get(url, {"superseded": "superseded"}).content.decode()
    everything = admin_client.get(url).content.decode()
    old = conversation.messages.get(content="Old answer")
    change = admin_client.get(reverse("admin:conversations_message_change", args=[old.pk]))

    assert "New answer" in current and "Old answer" not in current
    assert "Old answer" in superseded and "New answer" not in superseded
    assert "current / superseded" in everything and "superseded at" in everything.lower()
    assert 'name="superseded_at"' not in change.content.decode()  # read-only
    assert "Superseded at" in change.content.decode()
