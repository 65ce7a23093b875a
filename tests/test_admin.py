"""The admin: each conversation's last answer and chat page; stored model output is read-only."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from conversations.models import Conversation, Message, ToolCall

pytestmark = pytest.mark.django_db

CONVERSATIONS = "admin:conversations_conversation_changelist"
MESSAGES = "admin:conversations_message_changelist"


def conversation_with_answer(user: User, title: str, status: str | None) -> Conversation:
    conversation = Conversation.objects.create(owner=user, title=title)
    Message.objects.create(conversation=conversation, role="user", content=f"ask {title}")
    if status is not None:
        Message.objects.create(
            conversation=conversation,
            role="assistant",
            status=status,
            content=f"answer {title}",
            model=f"model-{title}",
        )
    return conversation


@pytest.fixture
def conversations(user: User) -> dict[str, Conversation]:
    earlier = conversation_with_answer(user, "finished-later", Message.Status.FAILED)
    # The latest answer counts: this one failed first, then answered.
    Message.objects.create(
        conversation=earlier, role="assistant", status=Message.Status.COMPLETE, content="fine"
    )
    return {
        "running": conversation_with_answer(user, "writing-now", Message.Status.STREAMING),
        "failed": conversation_with_answer(user, "went-wrong", Message.Status.FAILED),
        "complete": earlier,
        "none": conversation_with_answer(user, "not-answered", None),
    }


def test_the_conversation_list_shows_each_last_answers_status(
    admin_client: Client, conversations: dict[str, Conversation]
) -> None:
    html = admin_client.get(reverse(CONVERSATIONS)).content.decode()

    assert "last answer" in html
    rows = {name: row_of(html, str(conversation)) for name, conversation in conversations.items()}
    assert "Streaming" in rows["running"]
    assert "Failed" in rows["failed"]
    assert "Complete" in rows["complete"] and "Failed" not in rows["complete"]
    assert "no answer yet" in rows["none"]


def row_of(html: str, title: str) -> str:
    """The changelist's table row that shows `title`."""
    start = html.rindex("<tr", 0, html.index(f">{title}<"))
    return html[start : html.index("</tr>", start)]


@pytest.mark.parametrize(
    ("choice", "shown"),
    [
        ("running", "writing-now"),
        ("failed", "went-wrong"),
        ("complete", "finished-later"),
        ("none", "not-answered"),
    ],
)
def test_the_conversation_list_filters_by_last_answer(
    admin_client: Client, conversations: dict[str, Conversation], choice: str, shown: str
) -> None:
    html = admin_client.get(reverse(CONVERSATIONS), {"answer": choice}).content.decode()

    listed = [str(c) for c in conversations.values() if f">{c}<" in html]
    assert listed == [shown]


def test_the_message_list_filters_by_status_role_and_model(
    admin_client: Client, conversations: dict[str, Conversation]
) -> None:
    url = reverse(MESSAGES)

    by_status = admin_client.get(url, {"status__exact": "streaming"}).content.decode()
    by_role = admin_client.get(url, {"role__exact": "user"}).content.decode()
    by_model = admin_client.get(url, {"model": "model-went-wrong"}).content.decode()

    assert "answer writing-now" in by_status and "answer went-wrong" not in by_status
    assert "ask not-answered" in by_role and "answer writing-now" not in by_role
    assert "answer went-wrong" in by_model and "answer writing-now" not in by_model
    assert "Streaming" in admin_client.get(url).content.decode()


def test_each_conversation_links_to_its_chat_page_with_the_title_escaped(
    admin_client: Client, user: User
) -> None:
    conversation = Conversation.objects.create(owner=user, title='<b>bold</b> & "quoted"')
    chat_url = reverse("conversation-detail", args=[conversation.pk])

    listing = admin_client.get(reverse(CONVERSATIONS)).content.decode()
    change_url = reverse("admin:conversations_conversation_change", args=[conversation.pk])
    change = admin_client.get(change_url).content.decode()

    escaped = "&lt;b&gt;bold&lt;/b&gt; &amp; &quot;quoted&quot;"
    assert f'<a href="{chat_url}">{escaped}</a>' in listing
    assert f'<a href="{chat_url}">{escaped}</a>' in change
    assert "<b>bold</b>" not in listing and "<b>bold</b>" not in change
    assert "View on site" in change
    on_site = admin_client.get(conversation_view_on_site(conversation))
    assert on_site.status_code == 302 and on_site["Location"].endswith(chat_url)


def conversation_view_on_site(conversation: Conversation) -> str:
    from django.contrib.contenttypes.models import ContentType

    content_type = ContentType.objects.get_for_model(Conversation)
    return reverse("admin:view_on_site", args=[content_type.pk, conversation.pk])


def test_a_post_to_the_admin_does_not_change_what_the_model_wrote(
    admin_client: Client, user: User
) -> None:
    conversation = conversation_with_answer(user, "kept", Message.Status.COMPLETE)
    answer = conversation.messages.get(role="assistant")
    call = ToolCall.objects.create(
        message=answer, call_id="call_1", name="calculator", arguments="{}", output="391"
    )

    response = admin_client.post(
        reverse("admin:conversations_message_change", args=[answer.pk]),
        {
            "content": "forged",
            "reasoning": "forged",
            "error": "forged",
            "total_tokens": "999",
            "response_id": "forged",
            "seq": "999",
            "tool_calls-TOTAL_FORMS": "1",
            "tool_calls-INITIAL_FORMS": "1",
            "tool_calls-0-id": str(call.pk),
            "tool_calls-0-message": str(answer.pk),
            "tool_calls-0-output": "forged",
            "tool_calls-0-arguments": "forged",
        },
    )
    tool_call_post = admin_client.post(
        reverse("admin:conversations_toolcall_change", args=[call.pk]),
        {"output": "forged", "decision": "approved", "parsed_arguments": "{}"},
    )

    assert response.status_code == 302
    assert tool_call_post.status_code == 302
    answer.refresh_from_db()
    call.refresh_from_db()
    assert answer.content == "answer kept"
    assert (answer.reasoning, answer.error, answer.response_id) == ("", "", "")
    assert (answer.total_tokens, answer.seq) == (None, 0)
    assert (call.output, call.arguments, call.decision) == ("391", "{}", "")
    change = admin_client.get(reverse("admin:conversations_message_change", args=[answer.pk]))
    assert 'name="content"' not in change.content.decode()


def test_messages_and_tool_calls_cannot_be_added_in_the_admin(admin_client: Client) -> None:
    for name in ("message", "toolcall"):
        assert admin_client.get(reverse(f"admin:conversations_{name}_add")).status_code == 403
