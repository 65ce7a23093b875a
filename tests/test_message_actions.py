"""Message actions over the page socket: regenerate, retry, continue and edit supersede what they
replace, keep it in the database, and send the model only the current branch."""

from __future__ import annotations

import re
from typing import Any

import pytest
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth.models import User
from django.utils import timezone

from conversations import runner, services
from conversations.models import Conversation, Message
from tests.helpers.chat import (
    Connect,
    finished,
    new_conversation,
    opened,
    receive_until,
    send_and_wait,
)
from tests.helpers.fake_openai import (
    FakeOpenAI,
    error,
    response_incomplete,
    response_text_stream,
    sse,
    text_stream,
)

pytestmark = pytest.mark.django_db(transaction=True)

WHOLE_LIST = '<div id="messages" class="messages"'
SYSTEM = {"role": "system", "content": settings.LLM_SYSTEM_PROMPT}


async def act_and_wait(socket: WebsocketCommunicator, frame: dict[str, Any]) -> list[str]:
    """Send a message action; the frames until the whole list is shown again and its new answer
    is finished."""
    await socket.send_json_to(frame)
    frames = await receive_until(socket, lambda f: WHOLE_LIST in f)
    answer = int(re.findall(r'id="message-(\d+)" class="message role-assistant', frames[-1])[-1])

    def ended(frame: str) -> bool:
        shown = frame.split(f'id="message-{answer}"')
        return len(shown) > 1 and finished(f'id="message-{answer}"{shown[-1]}')

    if not ended(frames[-1]):
        frames += await receive_until(socket, ended)
    await runner.wait_for_local_runs()
    return frames


async def refused(socket: WebsocketCommunicator, frame: dict[str, Any]) -> str:
    """Send a frame the server refuses; the error line it shows."""
    await socket.send_json_to(frame)
    # The last answer's token total may still be on its way: nothing else comes first.
    frames = await receive_until(socket, lambda f: 'id="chat-error"' in f)
    assert all('id="conversation-usage"' in f for f in frames[:-1]), frames
    return frames[-1]


async def rows(conversation: Conversation) -> list[tuple[str, str, bool]]:
    """(role, content, superseded) of every message, oldest first."""
    return [
        (message.role, message.content, message.superseded_at is not None)
        async for message in conversation.messages.order_by("created_at", "id")
    ]


async def chat(connect: Connect, user: User, api_style: str = "chat_completions") -> Any:
    conversation = await new_conversation(user, model="fake-model", api_style=api_style)
    return conversation, await opened(connect, conversation, user)


async def test_regenerate_replaces_the_answer_and_the_model_sees_only_the_question(
    connect: Connect, user: User, model_server: FakeOpenAI
) -> None:
    model_server.queue(sse(text_stream("First answer")))
    model_server.queue(sse(text_stream("Second answer")))
    conversation, socket = await chat(connect, user)
    await send_and_wait(socket, "Hi")

    frames = await act_and_wait(socket, {"action": "regenerate"})

    assert await rows(conversation) == [
        ("user", "Hi", False),
        ("assistant", "First answer", True),
        ("assistant", "Second answer", False),
    ]
    whole = next(frame for frame in frames if WHOLE_LIST in frame)
    assert "First answer" not in whole and ">Hi<" in whole
    assert model_server.requests[1]["messages"] == [SYSTEM, {"role": "user", "content": "Hi"}]
    shown = await services.amessage_list(conversation=conversation)
    assert [message.content for message in shown] == ["Hi", "Second answer"]


async def test_every_open_page_of_the_conversation_shows_the_new_branch(
    connect: Connect, user: User, model_server: FakeOpenAI
) -> None:
    model_server.queue(sse(text_stream("Old answer")))
    model_server.queue(sse(text_stream("New answer")))
    conversation, socket = await chat(connect, user)
    await send_and_wait(socket, "Hi")
    other_tab = await opened(connect, conversation, user)

    await act_and_wait(socket, {"action": "regenerate"})
    frames = await receive_until(other_tab, lambda f: WHOLE_LIST in f)

    assert "Old answer" not in frames[-1] and ">Hi<" in frames[-1]
    rest = await receive_until(other_tab, lambda f: "New answer" in f and finished(f))
    assert "Old answer" not in "".join(rest)


async def test_editing_a_message_supersedes_it_and_everything_after_it(
    connect: Connect, user: User, model_server: FakeOpenAI
) -> None:
    for text in ("Answer one", "Answer two", "Answer to the edit"):
        model_server.queue(sse(text_stream(text)))
    conversation, socket = await chat(connect, user)
    await send_and_wait(socket, "Question one")
    await send_and_wait(socket, "Question two")
    first = await conversation.messages.aget(content="Question one")

    frames = await act_and_wait(
        socket, {"action": "edit", "message": str(first.pk), "text": "  Edited question  "}
    )

    assert await rows(conversation) == [
        ("user", "Question one", True),
        ("assistant", "Answer one", True),
        ("user", "Question two", True),
        ("assistant", "Answer two", True),
        ("user", "Edited question", False),
        ("assistant", "Answer to the edit", False),
    ]
    assert model_server.requests[-1]["messages"] == [
        SYSTEM,
        {"role": "user", "content": "Edited question"},
    ]
    whole = next(frame for frame in frames if WHOLE_LIST in frame)
    assert "Question two" not in whole and "Answer one" not in whole


async def test_retry_after_a_failed_answer(
    connect: Connect, user: User, model_server: FakeOpenAI
) -> None:
    model_server.queue(error(500, "The model server fell over."))
    model_server.queue(sse(text_stream("It worked this time")))
    conversation, socket = await chat(connect, user)
    await send_and_wait(socket, "Hi")
    failed = await conversation.messages.aget(role="assistant")
    assert failed.status == Message.Status.FAILED

    await act_and_wait(socket, {"action": "retry"})

    await failed.arefresh_from_db()
    assert failed.superseded_at is not None and failed.status == Message.Status.FAILED
    assert (await rows(conversation))[-1] == ("assistant", "It worked this time", False)
    assert model_server.requests[1]["messages"] == [SYSTEM, {"role": "user", "content": "Hi"}]


async def test_continue_after_an_answer_cut_off_at_the_token_limit(
    connect: Connect, user: User, model_server: FakeOpenAI
) -> None:
    model_server.queue(sse(text_stream("The first half", finish_reason="length")))
    model_server.queue(sse(text_stream(" and the rest.")))
    conversation, socket = await chat(connect, user)
    await send_and_wait(socket, "Tell me a long story")
    cut = await conversation.messages.aget(role="assistant")
    assert services.answer_cut_off(cut)

    await act_and_wait(socket, {"action": "continue"})

    assert await rows(conversation) == [
        ("user", "Tell me a long story", False),
        ("assistant", "The first half", False),
        ("user", services.CONTINUE_TEXT, False),
        ("assistant", " and the rest.", False),
    ]
    assert model_server.requests[1]["messages"] == [
        SYSTEM,
        {"role": "user", "content": "Tell me a long story"},
        {"role": "assistant", "content": "The first half"},
        {"role": "user", "content": services.CONTINUE_TEXT},
    ]


async def test_responses_continue_from_the_last_current_answer(
    connect: Connect, user: User, model_server: FakeOpenAI, settings: Any
) -> None:
    settings.LLM_RESPONSES_STORE = True
    for text in ("One", "Two", "Two again", "Edited"):
        model_server.queue(sse(response_text_stream(text)))
    conversation, socket = await chat(connect, user, "responses")
    await send_and_wait(socket, "First")
    await send_and_wait(socket, "Second")
    first_answer = await conversation.messages.aget(content="One")

    await act_and_wait(socket, {"action": "regenerate"})
    regenerated = model_server.requests[-1]
    second = await conversation.messages.aget(content="Second")
    await act_and_wait(socket, {"action": "edit", "message": second.pk, "text": "Other"})
    edited = model_server.requests[-1]

    # Both continue from the first answer's stored response, with only the new question.
    assert regenerated["previous_response_id"] == first_answer.response_id
    assert [item["content"] for item in regenerated["input"]] == ["Second"]
    assert edited["previous_response_id"] == first_answer.response_id
    assert [item["content"] for item in edited["input"]] == ["Other"]


async def test_responses_without_stored_responses_replay_the_current_branch_only(
    connect: Connect, user: User, model_server: FakeOpenAI, settings: Any
) -> None:
    settings.LLM_RESPONSES_STORE = False
    model_server.queue(sse(response_incomplete("Cut", reason="max_output_tokens")))
    for text in ("Replaced", "Kept"):
        model_server.queue(sse(response_text_stream(text)))
    conversation, socket = await chat(connect, user, "responses")
    await send_and_wait(socket, "Hi")

    await act_and_wait(socket, {"action": "continue"})
    await act_and_wait(socket, {"action": "regenerate"})

    request = model_server.requests[-1]
    assert "previous_response_id" not in request
    said = [(item["role"], item["content"]) for item in request["input"]]
    assert said == [("user", "Hi"), ("assistant", "Cut"), ("user", services.CONTINUE_TEXT)]
    assert (await rows(conversation))[-2:] == [
        ("assistant", "Replaced", True),
        ("assistant", "Kept", False),
    ]


@pytest.mark.parametrize(
    ("frame", "shown"),
    [
        ({"action": "retry"}, "Only an answer that failed"),
        ({"action": "continue"}, "Only an answer cut off"),
        ({"action": "edit", "message": "1", "text": "   "}, "Type a message first."),
        ({"action": "edit", "message": "1", "text": "x" * 20_001}, "the limit is 20,000"),
        ({"action": "edit", "message": "999999", "text": "Hello"}, "not one of this conversation"),
        ({"action": "edit", "message": "user", "text": "Hello"}, "Say which message"),
        ({"action": "edit", "message": [1], "text": "Hello"}, "Say which message"),
        ({"action": "edit", "text": "Hello"}, "Say which message"),
        ({"action": "edit", "message": "1", "text": 5}, "must be text"),
    ],
)
async def test_actions_that_do_not_apply_store_nothing(
    connect: Connect, user: User, model_server: FakeOpenAI, frame: dict[str, Any], shown: str
) -> None:
    model_server.queue(sse(text_stream("An answer")))
    conversation, socket = await chat(connect, user)
    await send_and_wait(socket, "Hi")
    before = await rows(conversation)

    reply = await refused(socket, frame)

    assert shown in reply
    assert await rows(conversation) == before
    assert len(model_server.requests) == 1


async def test_nothing_to_regenerate_in_an_empty_conversation(
    connect: Connect, user: User, model_server: FakeOpenAI
) -> None:
    conversation, socket = await chat(connect, user)

    for action in ("regenerate", "retry", "continue"):
        await refused(socket, {"action": action})

    assert await conversation.messages.acount() == 0


async def test_a_message_of_another_conversation_cannot_be_edited(
    connect: Connect, user: User, other_user: User, model_server: FakeOpenAI
) -> None:
    model_server.queue(sse(text_stream("An answer")))
    theirs = await new_conversation(other_user)
    their_message = await theirs.messages.acreate(role="user", content="Private")
    _, socket = await chat(connect, user)
    await send_and_wait(socket, "Hi")

    reply = await refused(
        socket, {"action": "edit", "message": str(their_message.pk), "text": "Mine now"}
    )

    assert "not one of this conversation" in reply
    await their_message.arefresh_from_db()
    assert their_message.content == "Private" and their_message.superseded_at is None
    assert await Message.objects.acount() == 3


async def test_actions_wait_while_an_answer_is_written(
    connect: Connect, user: User, model_server: FakeOpenAI
) -> None:
    model_server.queue(sse(text_stream("An answer")))
    conversation, socket = await chat(connect, user)
    await send_and_wait(socket, "Hi")
    question = await conversation.messages.aget(role="user")
    # Another answer being written (by a live process: its heartbeat is fresh).
    await conversation.messages.acreate(
        role="assistant", status=Message.Status.STREAMING, heartbeat_at=timezone.now()
    )
    before = await rows(conversation)

    for frame in (
        {"action": "regenerate"},
        {"action": "retry"},
        {"action": "continue"},
        {"action": "edit", "message": question.pk, "text": "Changed"},
    ):
        reply = await refused(socket, frame)
        assert "still being written" in reply

    assert await rows(conversation) == before


async def test_a_superseded_message_cannot_be_edited_again(
    connect: Connect, user: User, model_server: FakeOpenAI
) -> None:
    model_server.queue(sse(text_stream("One")))
    model_server.queue(sse(text_stream("Two")))
    conversation, socket = await chat(connect, user)
    await send_and_wait(socket, "Hi")
    question = await conversation.messages.aget(role="user")
    await act_and_wait(socket, {"action": "edit", "message": question.pk, "text": "Hello"})
    before = await rows(conversation)

    reply = await refused(socket, {"action": "edit", "message": question.pk, "text": "Again"})

    assert "not one of this conversation" in reply
    assert await rows(conversation) == before


async def test_actions_count_against_the_messages_per_minute_unless_refused(
    connect: Connect, user: User, model_server: FakeOpenAI, settings: Any
) -> None:
    settings.CHAT_MESSAGES_PER_MINUTE = 2
    model_server.queue(sse(text_stream("One")))
    model_server.queue(sse(text_stream("Two")))
    conversation, socket = await chat(connect, user)
    await send_and_wait(socket, "Hi")
    await refused(socket, {"action": "retry"})  # a complete answer: not counted
    await act_and_wait(socket, {"action": "regenerate"})
    before = await rows(conversation)

    reply = await refused(socket, {"action": "regenerate"})

    assert "2 messages in the last minute" in reply
    assert await rows(conversation) == before
