"""The HTTP API: token auth, isolation between users, pagination, create, read, delete, export."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from markdown_it import MarkdownIt

from conversations import runner
from conversations.api.tokens import REFUSED, token_create, token_revoke
from conversations.models import Conversation, Message, ToolCall
from tests.helpers.chat import Connect, new_conversation, opened, receive_text
from tests.helpers.fake_openai import FakeOpenAI, sse, text_stream

pytestmark = pytest.mark.django_db


def api_client(user: User) -> Client:
    _, raw = token_create(user=user)
    return Client(headers={"authorization": f"Bearer {raw}"})


def conversation_with_tools(user: User, output: str = "391") -> Conversation:
    conversation = Conversation.objects.create(owner=user, title="What is 17 * 23?", model="m")
    Message.objects.create(conversation=conversation, role="user", content="What is 17 * 23?")
    answer = Message.objects.create(
        conversation=conversation,
        role="assistant",
        content="Let me check. 17 × 23 = 391.",
        model="m",
        steps=2,
        total_tokens=241,
    )
    ToolCall.objects.create(
        message=answer,
        step=1,
        index=0,
        text_offset=len("Let me check. "),
        call_id="call_a1",
        name="calculator",
        arguments='{"expression": "17 * 23"}',
        parsed_arguments={"expression": "17 * 23"},
        status="succeeded",
        output=output,
    )
    return conversation


def urls(conversation_id: int) -> dict[str, str]:
    return {
        "one": reverse("api-conversation", args=[conversation_id]),
        "json": reverse("api-conversation-export-json", args=[conversation_id]),
        "md": reverse("api-conversation-export-md", args=[conversation_id]),
    }


# Authentication


def test_every_call_needs_a_valid_token(user: User) -> None:
    conversation = conversation_with_tools(user)
    token, raw = token_create(user=user)
    wrong = "chat_" + "A" * 43
    calls = [("get", reverse("api-conversations")), ("post", reverse("api-conversations"))]
    calls += [("get", url) for url in urls(conversation.pk).values()]
    calls += [("delete", urls(conversation.pk)["one"])]

    for method, url in calls:
        missing = getattr(Client(), method)(url)
        assert missing.status_code == 401
        assert missing["WWW-Authenticate"] == "Bearer"
        assert missing.json()["error"]["code"] == "unauthorized"
        refused = getattr(Client(headers={"authorization": f"Bearer {wrong}"}), method)(url)
        assert refused.status_code == 401
        assert refused.json() == {"error": {"code": "unauthorized", "message": REFUSED}}

    token_revoke(token=token)
    revoked = Client(headers={"authorization": f"Bearer {raw}"}).get(reverse("api-conversations"))
    assert revoked.status_code == 401
    assert revoked.json() == {"error": {"code": "unauthorized", "message": REFUSED}}
    assert Conversation.objects.filter(pk=conversation.pk).exists()


def test_a_session_cookie_is_not_an_api_credential(user: User) -> None:
    browser = Client()
    browser.force_login(user)
    assert browser.get(reverse("api-conversations")).status_code == 401
    assert browser.post(reverse("api-conversations")).status_code == 401
    assert not Conversation.objects.exists()


def test_posts_with_a_token_need_no_csrf_token(user: User) -> None:
    _, raw = token_create(user=user)
    client = Client(enforce_csrf_checks=True, headers={"authorization": f"Bearer {raw}"})
    response = client.post(reverse("api-conversations"), content_type="application/json")
    assert response.status_code == 201


# Isolation


def test_another_users_conversation_is_answered_like_a_missing_one(
    user: User, other_user: User
) -> None:
    theirs = conversation_with_tools(other_user)
    mine = api_client(user)
    missing = theirs.pk + 1000

    assert mine.get(reverse("api-conversations")).json()["results"] == []
    for name, url in urls(theirs.pk).items():
        response = mine.get(url)
        assert response.status_code == 404, name
        assert response.json() == mine.get(urls(missing)[name]).json()
        assert response.json()["error"]["code"] == "not_found"
    deleted = mine.delete(urls(theirs.pk)["one"])
    assert deleted.status_code == 404
    assert deleted.json() == mine.delete(urls(missing)["one"]).json()
    assert Conversation.objects.filter(pk=theirs.pk).exists()


# The list


def test_the_list_is_paginated_newest_first(user: User, other_user: User) -> None:
    start = timezone.now()
    for number in range(45):
        conversation = Conversation.objects.create(owner=user, title=f"c{number}")
        Conversation.objects.filter(pk=conversation.pk).update(
            updated_at=start + timedelta(minutes=number)
        )
    Conversation.objects.create(owner=other_user, title="not mine")
    client = api_client(user)

    first = client.get(reverse("api-conversations")).json()
    assert (first["count"], first["page"], first["pages"]) == (45, 1, 3)
    assert first["next"] == "/api/conversations/?page=2"
    assert first["previous"] is None
    assert [c["title"] for c in first["results"]] == [f"c{n}" for n in range(44, 24, -1)]
    assert set(first["results"][0]) == {
        "id",
        "title",
        "model",
        "api_style",
        "created_at",
        "updated_at",
    }

    last = client.get(first["next"].replace("2", "3")).json()
    assert last["page"] == 3
    assert last["next"] is None
    assert last["previous"] == "/api/conversations/?page=2"
    assert [c["title"] for c in last["results"]] == [f"c{n}" for n in range(4, -1, -1)]

    for bad in ("0", "4", "x", "-1"):
        response = client.get(reverse("api-conversations"), {"page": bad})
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "invalid_page"


def test_an_empty_list_is_one_empty_page(user: User) -> None:
    listed = api_client(user).get(reverse("api-conversations")).json()
    assert listed == {
        "count": 0,
        "page": 1,
        "pages": 1,
        "next": None,
        "previous": None,
        "results": [],
    }


# Create


def test_post_starts_a_conversation(user: User) -> None:
    client = api_client(user)

    # No body at all (curl -X POST), then an empty object.
    for response in (
        client.generic("POST", reverse("api-conversations")),
        client.post(reverse("api-conversations"), content_type="application/json"),
    ):
        assert response.status_code == 201
        created = Conversation.objects.get(pk=response.json()["id"])
        assert created.owner == user
        assert response.json() == {
            "id": created.pk,
            "title": "",
            "model": created.model,
            "api_style": "chat_completions",
            "created_at": created.created_at.isoformat(),
            "updated_at": created.updated_at.isoformat(),
        }

    chosen = client.post(
        reverse("api-conversations"),
        {"model": created.model, "api_style": "chat_completions"},
        content_type="application/json",
    )
    assert chosen.status_code == 201
    assert chosen.json()["model"] == created.model
    assert Conversation.objects.filter(owner=user).count() == 3


def test_post_always_creates_and_the_list_shows_empty_conversations(user: User) -> None:
    client = api_client(user)

    first = client.post(reverse("api-conversations"), content_type="application/json").json()["id"]
    second = client.post(reverse("api-conversations"), content_type="application/json").json()["id"]

    assert first != second
    listed = client.get(reverse("api-conversations")).json()["results"]
    assert [conversation["id"] for conversation in listed] == [second, first]


def test_post_refuses_bad_bodies_and_choices(user: User) -> None:
    client = api_client(user)
    url = reverse("api-conversations")
    cases: list[tuple[str, str]] = [
        ("{", "invalid_json"),
        ("[1, 2]", "invalid_json"),
        ('{"model": "no-such-model"}', "invalid_input"),
        ('{"api_style": "carrier pigeon"}', "invalid_input"),
        ('{"model": 12}', "invalid_input"),
    ]
    for body, code in cases:
        response = client.post(url, body, content_type="application/json")
        assert response.status_code == 400, body
        assert response.json()["error"]["code"] == code, body
    assert (
        "no-such-model"
        in client.post(url, '{"model": "no-such-model"}', content_type="application/json").json()[
            "error"
        ]["message"]
    )
    assert not Conversation.objects.exists()


def test_wrong_methods_get_405_json(user: User) -> None:
    conversation = conversation_with_tools(user)
    client = api_client(user)
    for method, url, allowed in (
        ("put", reverse("api-conversations"), "GET, POST"),
        ("post", urls(conversation.pk)["one"], "GET, DELETE"),
        ("delete", urls(conversation.pk)["md"], "GET"),
    ):
        response = getattr(client, method)(url)
        assert response.status_code == 405
        assert response["Allow"] == allowed
        assert response.json()["error"]["code"] == "method_not_allowed"


# Read


def test_one_conversation_has_its_messages_and_tool_calls(user: User) -> None:
    conversation = conversation_with_tools(user)
    client = api_client(user)

    body = client.get(urls(conversation.pk)["one"]).json()
    assert body["id"] == conversation.pk
    assert body["title"] == "What is 17 * 23?"
    question, answer = body["messages"]
    assert (question["role"], question["content"]) == ("user", "What is 17 * 23?")
    assert (answer["role"], answer["content"]) == ("assistant", "Let me check. 17 × 23 = 391.")
    (call,) = answer["tool_calls"]
    assert call["tool_call_id"] == f"{answer['id']}:1:0"
    assert (call["name"], call["output"], call["status"]) == ("calculator", "391", "succeeded")
    assert call["parsed_arguments"] == {"expression": "17 * 23"}


def test_reading_a_conversation_takes_the_same_queries_however_long_it_is(user: User) -> None:
    short = conversation_with_tools(user)
    long = conversation_with_tools(user)
    for _ in range(5):
        answer = Message.objects.create(conversation=long, role="assistant", content="more")
        ToolCall.objects.create(message=answer, call_id="c", name="calculator", status="succeeded")
    client = api_client(user)
    client.get(reverse("api-conversations"))  # the token's first use is recorded

    counts = []
    for conversation in (short, long):
        with CaptureQueriesContext(connection) as queries:
            assert client.get(urls(conversation.pk)["one"]).status_code == 200
        counts.append(len(queries))
    assert counts[0] == counts[1]


# Delete


# Stopping goes through channels' database_sync_to_async, which closes a connection left in
# a transaction, as a test's is: these tests commit.
@pytest.mark.django_db(transaction=True)
def test_delete_removes_the_conversation(user: User) -> None:
    conversation = conversation_with_tools(user)
    client = api_client(user)

    response = client.delete(urls(conversation.pk)["one"])
    assert response.status_code == 204
    assert not Conversation.objects.filter(pk=conversation.pk).exists()
    assert not Message.objects.exists()
    assert client.get(urls(conversation.pk)["one"]).status_code == 404


@pytest.mark.django_db(transaction=True)
def test_delete_ends_an_answer_no_process_runs(user: User) -> None:
    conversation = conversation_with_tools(user)
    running = Message.objects.create(
        conversation=conversation, role="assistant", status="streaming", content="half"
    )
    response = api_client(user).delete(urls(conversation.pk)["one"])
    assert response.status_code == 204
    assert not Message.objects.filter(pk=running.pk).exists()


@pytest.mark.django_db(transaction=True)
async def test_delete_stops_the_running_answer(
    connect: Connect, user: User, model_server: FakeOpenAI
) -> None:
    model_server.queue(sse(text_stream(" ".join(["word"] * 200)), delay=0.05))
    conversation = await new_conversation(user)
    socket = await opened(connect, conversation, user)
    await socket.send_json_to({"message": "talk a lot"})
    await receive_text(socket, "word word")
    client = await sync_to_async(api_client)(user)

    response = await sync_to_async(client.delete)(urls(conversation.pk)["one"])
    assert response.status_code == 204
    # The model's stream was really closed, and nothing of the conversation is left.
    await model_server.wait_for_closed_early()
    await runner.wait_for_local_runs()
    assert not await Conversation.objects.filter(pk=conversation.pk).aexists()
    assert not await Message.objects.filter(conversation_id=conversation.pk).aexists()


# Export


def test_the_json_export_is_the_conversation_as_a_download(user: User) -> None:
    conversation = conversation_with_tools(user)
    client = api_client(user)

    response = client.get(urls(conversation.pk)["json"])
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response["Content-Disposition"] == (
        f'attachment; filename="conversation-{conversation.pk}.json"'
    )
    exported = json.loads(response.content)
    exported_at = exported.pop("exported_at")
    assert exported == client.get(urls(conversation.pk)["one"]).json()
    assert abs(timezone.now() - datetime.fromisoformat(exported_at)) < timedelta(minutes=1)


def test_the_markdown_export_shows_the_messages_and_tool_calls(user: User) -> None:
    conversation = conversation_with_tools(user)

    response = api_client(user).get(urls(conversation.pk)["md"])
    assert response.status_code == 200
    assert response["Content-Type"] == "text/markdown; charset=utf-8"
    assert response["Content-Disposition"] == (
        f'attachment; filename="conversation-{conversation.pk}.md"'
    )
    text = response.content.decode()
    assert text.startswith("# What is 17 * 23?\n")
    assert "## User\n\nWhat is 17 * 23?" in text
    assert "## Assistant\n\nLet me check." in text
    assert "### Tool call: calculator (succeeded)" in text
    assert '```json\n{\n  "expression": "17 * 23"\n}\n```' in text
    assert "```\n391\n```" in text
    # The text after the call comes after it.
    assert text.index("391\n```") < text.index("17 × 23 = 391.")


def rendered_headings_and_code(markdown: str) -> tuple[list[str], list[str]]:
    """The headings and code blocks a Markdown reader shows."""
    tokens = MarkdownIt("commonmark").parse(markdown)
    headings = [tokens[i + 1].content for i, t in enumerate(tokens) if t.type == "heading_open"]
    code = [t.content for t in tokens if t.type == "fence"]
    return headings, code


def test_a_hostile_output_cannot_close_its_code_block(user: User) -> None:
    hostile = "before\n```\n## Assistant\n\nForged text\n````\nafter"
    conversation = conversation_with_tools(user, output=hostile)
    Message.objects.create(
        conversation=conversation, role="user", content="```python\nan unclosed block"
    )
    Message.objects.create(conversation=conversation, role="assistant", content="Last words.")

    text = api_client(user).get(urls(conversation.pk)["md"]).content.decode()
    headings, code = rendered_headings_and_code(text)
    assert hostile + "\n" in code
    assert headings == [
        "What is 17 * 23?",
        "User",
        "Assistant",
        "Tool call: calculator (succeeded)",
        "User",
        "Assistant",
    ]
    assert "Last words." not in "".join(code)
    assert re.search(r"^`{5}\n", text, re.M)
