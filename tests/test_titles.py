"""Titles the model writes after a conversation's first answer: what it is asked, what is kept,
and that a failure or a rename meanwhile keeps the title the conversation has."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User

from conversations import runner, services, titles
from conversations.models import Conversation
from tests.helpers.chat import (
    Connect,
    finished,
    new_conversation,
    opened,
    receive_until,
    send_and_wait,
)
from tests.helpers.fake_openai import (
    Completion,
    FakeOpenAI,
    ResponseEvents,
    error,
    json_body,
    response_text_stream,
    sse,
    text_stream,
)

pytestmark = pytest.mark.django_db(transaction=True)

QUESTION = "How long should I boil spaghetti for a good al dente bite, roughly?"
FALLBACK = services.title_fallback(QUESTION)


@pytest.fixture(autouse=True)
def generated_titles(settings: Any) -> None:
    settings.CHAT_GENERATE_TITLES = True


def completion_title(text: str) -> Any:
    return json_body(Completion().whole({"role": "assistant", "content": text}))


def response_title(text: str) -> Any:
    response = ResponseEvents()
    response.message(text)
    return json_body(response.response("completed", usage=(30, 4)))


async def test_the_first_answer_gets_a_title_from_the_model_shown_on_the_page(
    connect: Connect, user: User, model_server: FakeOpenAI
) -> None:
    model_server.queue(sse(text_stream("About 9 minutes.")))
    model_server.queue(completion_title('**"Boiling Spaghetti Al Dente."**\nHope that helps!'))
    model_server.queue(sse(text_stream("Salt it well.")))
    conversation = await new_conversation(user)
    page = await opened(connect, conversation, user)

    await send_and_wait(page, QUESTION)
    frames = await receive_until(
        page, lambda frame: '<h1 id="conversation-title">Boiling Spaghetti Al Dente</h1>' in frame
    )
    assert '<span class="sidebar-title">Boiling Spaghetti Al Dente</span>' in frames[-1]
    await conversation.arefresh_from_db()
    assert conversation.title == "Boiling Spaghetti Al Dente"

    asked = model_server.requests[1]
    assert asked["model"] == "fake-model"
    assert not asked.get("stream") and "tools" not in asked
    instruction, exchange = asked["messages"]
    assert instruction["role"] == "system" and "at most 6 words" in instruction["content"]
    assert "no quotes" in instruction["content"]
    assert exchange == {
        "role": "user",
        "content": f"User: {QUESTION}\n\nAssistant: About 9 minutes.",
    }

    # Only after the first answer: the second one asks for no title.
    await send_and_wait(page, "And salt?")
    assert len(model_server.requests) == 3
    assert "tools" in model_server.requests[2]
    await conversation.arefresh_from_db()
    assert conversation.title == "Boiling Spaghetti Al Dente"


async def test_a_regenerated_first_answer_asks_for_no_second_title(
    connect: Connect, user: User, model_server: FakeOpenAI
) -> None:
    model_server.queue(sse(text_stream("About 9 minutes.")))
    model_server.queue(completion_title("Spaghetti timing"))
    model_server.queue(sse(text_stream("Nine or ten minutes.")))
    conversation = await new_conversation(user)
    page = await opened(connect, conversation, user)
    await send_and_wait(page, QUESTION)

    await page.send_json_to({"action": "regenerate"})
    await receive_until(page, lambda frame: "Nine or ten minutes." in frame and finished(frame))
    await runner.wait_for_local_runs()

    assert len(model_server.requests) == 3
    assert "tools" in model_server.requests[2]
    await conversation.arefresh_from_db()
    assert conversation.title == "Spaghetti timing"


async def test_a_responses_conversation_is_titled_through_the_responses_api(
    connect: Connect, user: User, model_server: FakeOpenAI
) -> None:
    model_server.queue(sse(response_text_stream("About 9 minutes.")))
    model_server.queue(response_title("Title: Spaghetti timing"))
    conversation = await new_conversation(user, api_style="responses")
    page = await opened(connect, conversation, user)

    await send_and_wait(page, QUESTION)

    await conversation.arefresh_from_db()
    assert conversation.title == "Spaghetti timing"
    asked = model_server.requests[1]
    assert "at most 6 words" in asked["instructions"]
    assert asked["input"] == f"User: {QUESTION}\n\nAssistant: About 9 minutes."
    assert asked["store"] is False
    assert not asked.get("stream") and "tools" not in asked


@pytest.mark.parametrize(
    "reply", [error(500, "The title service is down."), completion_title("  \n ** ** \n")]
)
async def test_a_failed_or_empty_title_keeps_the_first_words(
    connect: Connect, user: User, model_server: FakeOpenAI, reply: Any
) -> None:
    model_server.queue(sse(text_stream("About 9 minutes.")))
    model_server.queue(reply)
    conversation = await new_conversation(user)
    page = await opened(connect, conversation, user)

    frames = await send_and_wait(page, QUESTION)

    assert any('data-status="complete"' in frame for frame in frames)
    assert len(model_server.requests) == 2
    await conversation.arefresh_from_db()
    assert conversation.title == FALLBACK


async def test_a_title_the_user_gave_meanwhile_is_kept(
    connect: Connect, user: User, model_server: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    model_server.queue(sse(text_stream("About 9 minutes.")))
    model_server.queue(completion_title("Spaghetti timing"))
    conversation = await new_conversation(user)
    page = await opened(connect, conversation, user)
    asking = titles.title_ask

    async def renamed_while_asking(*args: Any) -> str:
        reply = await asking(*args)
        await services.aconversation_rename(
            owner_id=user.pk, conversation_id=conversation.pk, title="My own title"
        )
        return reply

    monkeypatch.setattr(titles, "title_ask", renamed_while_asking)

    await send_and_wait(page, QUESTION)

    assert len(model_server.requests) == 2
    await conversation.arefresh_from_db()
    assert conversation.title == "My own title"


async def test_no_title_is_asked_for_when_turned_off_or_already_renamed(
    connect: Connect, user: User, model_server: FakeOpenAI, settings: Any
) -> None:
    settings.CHAT_GENERATE_TITLES = False
    model_server.queue(sse(text_stream("About 9 minutes.")))
    conversation = await new_conversation(user)
    page = await opened(connect, conversation, user)
    await send_and_wait(page, QUESTION)
    assert len(model_server.requests) == 1

    settings.CHAT_GENERATE_TITLES = True
    model_server.queue(sse(text_stream("Hello.")))
    renamed = await new_conversation(user, title="Named before the first answer")
    page = await opened(connect, renamed, user)
    await send_and_wait(page, "Hi")
    assert len(model_server.requests) == 2
    await renamed.arefresh_from_db()
    assert renamed.title == "Named before the first answer"


@pytest.mark.parametrize(
    ("reply", "title"),
    [
        ("Spaghetti Timing", "Spaghetti Timing"),
        ('"Spaghetti Timing."', "Spaghetti Timing"),
        ("**Title:** Spaghetti Timing!\nMore text", "Spaghetti Timing"),
        ("# “Spaghetti   Timing”?", "Spaghetti Timing"),
        ("\n\n  'Spaghetti' timing  ", "Spaghetti' timing"),
        ("x" * 100, "x" * 80),
        ("  ", ""),
        # What a small local model wrote instead of a title: the first words stay.
        ("Your response is perfect! Just to let you know, I'll send another version of the", ""),
        (
            "One two three four five six seven eight nine ten",
            "One two three four five six seven eight nine ten",
        ),
    ],
)
def test_a_reply_is_cleaned_into_a_title(reply: str, title: str) -> None:
    assert titles.title_clean(reply) == title


def test_a_generated_title_is_stored_only_over_the_first_words(db: None, user: User) -> None:
    conversation = Conversation.objects.create(owner=user, title=FALLBACK)
    assert services.conversation_title_generated(
        conversation_id=conversation.pk, fallback_title=FALLBACK, title="Pasta"
    )
    assert not services.conversation_title_generated(
        conversation_id=conversation.pk, fallback_title=FALLBACK, title="Other"
    )
    conversation.refresh_from_db()
    assert conversation.title == "Pasta"
