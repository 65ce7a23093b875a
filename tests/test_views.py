"""Pages: accounts, the conversation list, the chat page, delete, isolation and the admin."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from conversations.models import Conversation, Message, ToolCall

pytestmark = pytest.mark.django_db


def signed_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_first_account_is_a_superuser_and_later_ones_are_not(client: Client, settings: Any) -> None:
    settings.SIGNUP = "open"
    for name in ("first", "second"):
        response = Client().post(
            reverse("signup"),
            {"username": name, "password1": "pass-word-123!", "password2": "pass-word-123!"},
        )
        assert response.status_code == 302
    assert User.objects.get(username="first").is_superuser
    assert User.objects.get(username="first").is_staff
    assert not User.objects.get(username="second").is_superuser


def test_signup_logs_in_and_shows_the_list(client: Client) -> None:
    response = client.post(
        reverse("signup"),
        {"username": "carol", "password1": "pass-word-123!", "password2": "pass-word-123!"},
        follow=True,
    )
    assert response.status_code == 200
    assert b"carol" in response.content
    assert b"New conversation" in response.content


def test_signup_errors_are_shown(client: Client) -> None:
    response = client.post(
        reverse("signup"), {"username": "dave", "password1": "x", "password2": "y"}
    )
    assert response.status_code == 200
    assert b"didn\xe2\x80\x99t match" in response.content or b"didn't match" in response.content
    assert not User.objects.filter(username="dave").exists()


def test_pages_require_login(client: Client, user: User) -> None:
    conversation = Conversation.objects.create(owner=user)
    for url in (
        reverse("conversation-list"),
        reverse("conversation-detail", args=[conversation.pk]),
    ):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("login"))


def test_login_page_logs_in(client: Client, user: User) -> None:
    response = client.post(
        reverse("login"), {"username": "alice", "password": "a-long-password-1"}, follow=True
    )
    assert response.wsgi_request.user == user
    assert b"Conversations" in response.content


def with_a_message(conversation: Conversation) -> Conversation:
    Message.objects.create(conversation=conversation, role="user", content="hello")
    return conversation


def test_list_shows_only_my_conversations_newest_first(user: User, other_user: User) -> None:
    with_a_message(Conversation.objects.create(owner=user, title="older one"))
    with_a_message(Conversation.objects.create(owner=user, title="newer one"))
    with_a_message(Conversation.objects.create(owner=other_user, title="bob's secret"))

    content = signed_in(user).get(reverse("conversation-list")).content.decode()

    assert content.index("newer one") < content.index("older one")
    assert "bob&#x27;s secret" not in content and "bob's secret" not in content


def test_new_conversation_opens_the_chat_page(user: User) -> None:
    client = signed_in(user)
    response = client.post(reverse("conversation-create"), follow=True)
    conversation = Conversation.objects.get(owner=user)
    assert response.redirect_chain[-1][0] == reverse("conversation-detail", args=[conversation.pk])
    content = response.content.decode()
    assert f'ws-connect="/ws/conversations/{conversation.pk}/"' in content
    assert 'name="message"' in content


def test_new_conversation_twice_opens_the_same_empty_conversation(user: User) -> None:
    client = signed_in(user)
    first = client.post(reverse("conversation-create"))
    second = client.post(reverse("conversation-create"))

    conversation = Conversation.objects.get(owner=user)
    assert first["Location"] == second["Location"] == conversation.get_absolute_url()


def test_new_conversation_after_a_message_is_a_new_one(user: User) -> None:
    client = signed_in(user)
    client.post(reverse("conversation-create"))
    first = with_a_message(Conversation.objects.get(owner=user))

    response = client.post(reverse("conversation-create"))

    assert Conversation.objects.filter(owner=user).count() == 2
    second = Conversation.objects.exclude(pk=first.pk).get(owner=user)
    assert response["Location"] == second.get_absolute_url()
    assert client.post(reverse("conversation-create"))["Location"] == second.get_absolute_url()


def test_new_conversation_never_reuses_someone_elses_empty_one(
    user: User, other_user: User
) -> None:
    theirs = Conversation.objects.create(owner=other_user, title="bob's empty one")

    response = signed_in(user).post(reverse("conversation-create"))

    mine = Conversation.objects.get(owner=user)
    assert response["Location"] == mine.get_absolute_url()
    assert Conversation.objects.get(pk=theirs.pk).owner == other_user
    assert not theirs.messages.exists()


def test_the_list_hides_conversations_without_messages(user: User) -> None:
    Conversation.objects.create(owner=user, title="nothing said here")
    with_a_message(Conversation.objects.create(owner=user, title="we talked"))

    content = signed_in(user).get(reverse("conversation-list")).content.decode()

    assert "we talked" in content
    assert "nothing said here" not in content


def test_the_list_of_only_empty_conversations_says_there_are_none(user: User) -> None:
    signed_in(user).post(reverse("conversation-create"))

    content = signed_in(user).get(reverse("conversation-list")).content.decode()

    assert "No conversations yet." in content


def test_no_model_configured_says_how_to_fix_it(user: User, settings: Any) -> None:
    settings.LLM_BACKEND = "remote"
    settings.OPENAI_API_KEY = ""
    settings.OPENAI_BASE_URL = ""
    conversation = Conversation.objects.create(owner=user)
    content = signed_in(user).get(reverse("conversation-detail", args=[conversation.pk]))
    assert b"No model is configured" in content.content
    assert b"OPENAI_BASE_URL" in content.content


def test_chat_page_renders_history_with_tool_cards(user: User) -> None:
    conversation = Conversation.objects.create(owner=user, title="maths")
    Message.objects.create(conversation=conversation, role="user", content="<b>17*23</b>?")
    answer = Message.objects.create(
        conversation=conversation,
        role="assistant",
        content="It is **391**.<script>alert(1)</script>",
        model="fake-model",
        input_tokens=10,
        output_tokens=5,
        total_tokens=15,
    )
    ToolCall.objects.create(
        message=answer,
        call_id="call_1",
        name="calculator",
        arguments='{"expression": "17*23"}',
        parsed_arguments={"expression": "17*23"},
        status=ToolCall.Status.SUCCEEDED,
        output="391",
    )

    content = signed_in(user).get(reverse("conversation-detail", args=[conversation.pk]))
    html = content.content.decode()

    assert "&lt;b&gt;17*23&lt;/b&gt;?" in html
    assert "<strong>391</strong>" in html
    assert "<script>alert(1)</script>" not in html
    assert 'class="tool-card status-succeeded"' in html
    assert "<dt>expression</dt><dd>17*23</dd>" in html
    assert "10 in / 5 out tokens" in html


def test_streaming_text_is_escaped_not_rendered(user: User) -> None:
    conversation = Conversation.objects.create(owner=user)
    Message.objects.create(
        conversation=conversation,
        role="assistant",
        content="**half** <img src=x onerror=alert(1)>",
        status=Message.Status.STREAMING,
    )
    html = signed_in(user).get(reverse("conversation-detail", args=[conversation.pk]))
    text = html.content.decode()
    assert "**half** &lt;img src=x onerror=alert(1)&gt;" in text
    assert "<img" not in text


def test_someone_elses_conversation_is_a_404(user: User, other_user: User) -> None:
    theirs = Conversation.objects.create(owner=other_user, title="private")
    client = signed_in(user)

    assert client.get(reverse("conversation-detail", args=[theirs.pk])).status_code == 404
    assert client.get(reverse("conversation-detail", args=[theirs.pk + 99])).status_code == 404
    assert client.post(reverse("conversation-delete", args=[theirs.pk])).status_code == 404
    assert Conversation.objects.filter(pk=theirs.pk).exists()


# A delete stops the conversation's answers first, through channels' database_sync_to_async,
# which closes a connection left in a transaction, as a test's is: this test commits.
@pytest.mark.django_db(transaction=True)
def test_delete_removes_the_conversation_and_its_messages(user: User) -> None:
    conversation = Conversation.objects.create(owner=user)
    Message.objects.create(conversation=conversation, role="user", content="bye")
    client = signed_in(user)

    assert client.get(reverse("conversation-delete", args=[conversation.pk])).status_code == 405
    response = client.post(reverse("conversation-delete", args=[conversation.pk]))

    assert response.status_code == 302
    assert not Conversation.objects.exists()
    assert not Message.objects.exists()


def test_delete_needs_the_csrf_token(user: User) -> None:
    conversation = Conversation.objects.create(owner=user)
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    response = client.post(reverse("conversation-delete", args=[conversation.pk]))
    assert response.status_code == 403
    assert Conversation.objects.filter(pk=conversation.pk).exists()


@pytest.fixture
def admin_data(user: User) -> dict[str, Any]:
    conversation = Conversation.objects.create(owner=user, title="admin view", model="m")
    message = Message.objects.create(
        conversation=conversation,
        role="assistant",
        content="the answer",
        model="m",
        total_tokens=7,
        input_tokens=3,
        output_tokens=4,
    )
    call = ToolCall.objects.create(
        message=message,
        call_id="call_9",
        name="current_time",
        arguments='{"timezone": "Asia/Tokyo"}',
        parsed_arguments={"timezone": "Asia/Tokyo"},
        status=ToolCall.Status.SUCCEEDED,
        output="2026-11-24 01:00 JST",
    )
    return {"conversation": conversation, "message": message, "toolcall": call}


def test_every_admin_changelist_and_change_page_renders(
    admin_client: Client, admin_data: dict[str, Any]
) -> None:
    for name, obj in admin_data.items():
        changelist = admin_client.get(reverse(f"admin:conversations_{name}_changelist"))
        assert changelist.status_code == 200
        change = admin_client.get(reverse(f"admin:conversations_{name}_change", args=[obj.pk]))
        assert change.status_code == 200
    conversation_page = admin_client.get(
        reverse("admin:conversations_conversation_change", args=[admin_data["conversation"].pk])
    ).content.decode()
    assert "the answer" in conversation_page
    message_page = admin_client.get(
        reverse("admin:conversations_message_change", args=[admin_data["message"].pk])
    ).content.decode()
    assert "current_time" in message_page and "Asia/Tokyo" in message_page


def test_admin_filters_and_search_work(admin_client: Client, admin_data: dict[str, Any]) -> None:
    url = reverse("admin:conversations_toolcall_changelist")
    assert b"call_9" in admin_client.get(url, {"status__exact": "succeeded"}).content
    assert b"call_9" not in admin_client.get(url, {"status__exact": "failed"}).content
    found = admin_client.get(
        reverse("admin:conversations_conversation_changelist"), {"q": "admin view"}
    )
    assert b"admin view" in found.content


def test_the_admin_shows_who_decided_on_a_call_and_filters_by_decision(
    admin_client: Client, admin_data: dict[str, Any]
) -> None:
    denied = ToolCall.objects.create(
        message=admin_data["message"],
        step=2,
        call_id="call_10",
        name="delete_conversation",
        arguments='{"conversation_id": 3}',
        status=ToolCall.Status.DENIED,
        output="The user denied this tool call: not that one",
        decision=ToolCall.Decision.DENIED,
        decided_by="alice",
        decided_at=timezone.now(),
        decision_reason="not that one",
    )
    url = reverse("admin:conversations_toolcall_changelist")
    by_decision = admin_client.get(url, {"decision__exact": "denied"}).content
    assert b"call_10" in by_decision and b"call_9" not in by_decision
    assert b"call_10" in admin_client.get(url, {"status__exact": "denied"}).content
    change = admin_client.get(
        reverse("admin:conversations_toolcall_change", args=[denied.pk])
    ).content.decode()
    assert "not that one" in change and "alice" in change
    inline = admin_client.get(
        reverse("admin:conversations_message_change", args=[admin_data["message"].pk])
    ).content.decode()
    assert "Decided by" in inline and "not that one" in inline


def test_the_inputs_maxlength_is_the_limit_the_server_enforces(user: User, settings: Any) -> None:
    settings.CHAT_MESSAGE_MAX_LENGTH = 1234
    conversation = Conversation.objects.create(owner=user)
    Message.objects.create(conversation=conversation, role="user", content="hello")
    html = signed_in(user).get(reverse("conversation-detail", args=[conversation.pk])).content
    # The composer and the edit box of the user's message.
    assert html.decode().count('maxlength="1234"') == 2
