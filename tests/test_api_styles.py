"""Both API styles through the socket: Responses turns, continuation, switching styles."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from conversations import llm
from conversations.models import Conversation, Message, ToolCall
from tests.helpers.chat import Connect, send_and_wait
from tests.helpers.fake_openai import (
    ErrorResponse,
    FakeOpenAI,
    response_error_event,
    response_incomplete,
    response_text_stream,
    response_tool_calls_stream,
    sse,
    text_stream,
    tool_calls_stream,
)

pytestmark = pytest.mark.django_db(transaction=True)

# A <details> without the open attribute.
REASONING_SHOWN_COLLAPSED = (
    r'<details class="reasoning" id="message-\d+-reasoning">\s*<summary>Reasoning'
)


async def open_chat(connect: Connect, user: User, api_style: str) -> Any:
    conversation = await Conversation.objects.acreate(
        owner=user, model="fake-model", api_style=api_style
    )
    chat = await connect(conversation, user)
    assert (await chat.connect())[0]
    await chat.receive_from()
    return conversation, chat


async def answers(conversation: Conversation) -> list[Message]:
    return [
        message async for message in conversation.messages.filter(role="assistant").order_by("id")
    ]


async def test_a_responses_turn_with_parallel_calls_then_a_continuation(
    connect: Connect, user: User, model_server: FakeOpenAI, settings: Any
) -> None:
    settings.LLM_RESPONSES_STORE = True
    model_server.queue(
        sse(
            response_tool_calls_stream(
                [
                    ("calculator", json.dumps({"expression": "17*23"})),
                    ("current_time", json.dumps({"timezone": "Asia/Tokyo"})),
                ],
                reasoning=["Two things to look up."],
            )
        )
    )
    model_server.queue(sse(response_text_stream("391, and it is night in Tokyo.")))
    model_server.queue(sse(response_text_stream("You asked about 17*23.")))
    conversation, chat = await open_chat(connect, user, "responses")

    frames = await send_and_wait(chat, "what is 17*23 and what time is it in Tokyo?")

    [answer] = await answers(conversation)
    assert (answer.status, answer.content) == ("complete", "391, and it is night in Tokyo.")
    assert answer.api_style == "responses"
    assert answer.reasoning == "Two things to look up."
    assert re.search(REASONING_SHOWN_COLLAPSED, frames[-1])
    calls = [call async for call in answer.tool_calls.order_by("index")]
    assert (calls[0].name, calls[0].status, calls[0].output) == ("calculator", "succeeded", "391")
    assert calls[1].status == ToolCall.Status.SUCCEEDED and "+09:00" in calls[1].output
    first, second = model_server.requests[:2]
    assert first["stream"] is True and first["store"] is True
    assert {tool["name"] for tool in first["tools"]} >= {"calculator", "current_time"}
    assert first["input"][-1] == {
        "role": "user",
        "content": "what is 17*23 and what time is it in Tokyo?",
    }
    # The tool results go back together, continuing the stored response.
    assert second["previous_response_id"].startswith("resp_")
    assert [item["type"] for item in second["input"]] == ["function_call_output"] * 2
    assert {item["call_id"] for item in second["input"]} == {c.call_id for c in calls}
    assert answer.response_id and answer.response_id != second["previous_response_id"]

    await send_and_wait(chat, "what did I ask?")

    third = model_server.requests[2]
    assert third["previous_response_id"] == answer.response_id
    assert third["input"] == [{"role": "user", "content": "what did I ask?"}]
    assert (await answers(conversation))[-1].content == "You asked about 17*23."


async def test_without_stored_responses_the_whole_input_is_replayed(
    connect: Connect, user: User, model_server: FakeOpenAI, settings: Any
) -> None:
    settings.LLM_RESPONSES_STORE = False
    model_server.queue(
        sse(
            response_tool_calls_stream(
                [("calculator", json.dumps({"expression": "2**10"}))],
                reasoning=["Use the calculator."],
                encrypted_reasoning=True,
            )
        )
    )
    model_server.queue(sse(response_text_stream("1024")))
    conversation, chat = await open_chat(connect, user, "responses")

    await send_and_wait(chat, "2 to the 10th?")

    first, second = model_server.requests
    assert first["store"] is False and "previous_response_id" not in second
    assert first["include"] == ["reasoning.encrypted_content"]
    kinds = [item.get("type", item.get("role")) for item in second["input"]]
    assert kinds == ["user", "reasoning", "function_call", "function_call_output"]
    assert second["input"][-1]["output"] == "1024"
    assert (await answers(conversation))[0].content == "1024"


async def test_another_server_gets_the_whole_history_unless_told_it_stores_responses(
    connect: Connect, user: User, model_server: FakeOpenAI
) -> None:
    # LiteLLM's proxy, say: it answers with response ids, but without its database it cannot
    # continue from them, so the history must be replayed.
    model_server.queue(sse(response_text_stream("Nice to meet you, Ada.")))
    model_server.queue(sse(response_text_stream("You are Ada.")))
    conversation, chat = await open_chat(connect, user, "responses")

    await send_and_wait(chat, "I am Ada.")
    await send_and_wait(chat, "Who am I?")

    first, second = model_server.requests
    assert first["store"] is False and second["store"] is False
    assert "previous_response_id" not in second
    assert [(item["role"], item["content"]) for item in second["input"]] == [
        ("user", "I am Ada."),
        ("assistant", "Nice to meet you, Ada."),
        ("user", "Who am I?"),
    ]
    assert (await answers(conversation))[-1].content == "You are Ada."


@pytest.mark.parametrize(
    ("base_url", "setting", "stored"),
    [
        (None, None, True),
        ("https://api.openai.com/v1", None, True),
        ("http://127.0.0.1:4000/v1", None, False),
        ("https://litellm.example.com/v1", None, False),
        ("http://127.0.0.1:4000/v1", True, True),
        (None, False, False),
    ],
)
def test_responses_are_stored_by_default_only_on_openais_own_endpoint(
    base_url: str | None, setting: bool | None, stored: bool, settings: Any
) -> None:
    settings.LLM_RESPONSES_STORE = setting
    configured = llm.Endpoint("m", base_url, "key", local=False, max_tokens=None)
    assert llm.responses_store(configured) is stored


async def test_a_responses_error_event_and_an_incomplete_answer_are_shown(
    connect: Connect, user: User, model_server: FakeOpenAI
) -> None:
    model_server.queue(sse(response_error_event("Rate limit reached", code="rate_limit")))
    model_server.queue(sse(response_incomplete("A very long sto")))
    conversation, chat = await open_chat(connect, user, "responses")

    failed_frames = await send_and_wait(chat, "hi")
    cut_frames = await send_and_wait(chat, "tell me a long story")

    failed, cut = await answers(conversation)
    assert failed.status == "failed" and "Rate limit reached" in failed.error
    assert "Rate limit reached" in failed_frames[-1]
    assert (cut.status, cut.content) == ("complete", "A very long sto")
    assert cut.error == "The answer was cut off at the token limit."
    assert "cut off at the token limit" in cut_frames[-1]


async def test_an_incomplete_response_closed_as_completed_is_shown_cut_off(
    connect: Connect, user: User, model_server: FakeOpenAI
) -> None:
    script = response_incomplete("A very long sto", event="response.completed")
    model_server.queue(sse(script))
    conversation, chat = await open_chat(connect, user, "responses")

    frames = await send_and_wait(chat, "tell me a long story")

    [cut] = await answers(conversation)
    assert (cut.status, cut.content) == ("complete", "A very long sto")
    assert cut.error == "The answer was cut off at the token limit."
    assert "cut off at the token limit" in frames[-1]


async def test_a_server_without_the_responses_api_suggests_chat_completions(
    connect: Connect, user: User, model_server: FakeOpenAI
) -> None:
    model_server.queue(ErrorResponse(404, {"detail": "Not Found"}))
    conversation, chat = await open_chat(connect, user, "responses")

    frames = await send_and_wait(chat, "hi")

    [failed] = await answers(conversation)
    assert failed.status == "failed"
    assert "switch the conversation to Chat Completions" in failed.error
    assert "switch the conversation to Chat Completions" in frames[-1]


async def test_one_conversation_switches_between_the_two_api_styles(
    connect: Connect, user: User, model_server: FakeOpenAI
) -> None:
    # Turn 1, Chat Completions, with a tool call.
    model_server.queue(sse(tool_calls_stream([("calculator", json.dumps({"expression": "6*7"}))])))
    model_server.queue(sse(text_stream("It is 42.")))
    # Turn 2, Responses: no stored response to continue, so everything is replayed.
    model_server.queue(sse(response_text_stream("Still 42.")))
    # Turn 3, Chat Completions again: the Responses answer is part of the history.
    model_server.queue(sse(text_stream("Yes, 42.")))
    conversation, chat = await open_chat(connect, user, "chat_completions")

    await send_and_wait(chat, "6*7?")
    first_answer = (await answers(conversation))[0]
    await Conversation.objects.filter(pk=conversation.pk).aupdate(api_style="responses")
    await send_and_wait(chat, "sure?")
    await Conversation.objects.filter(pk=conversation.pk).aupdate(api_style="chat_completions")
    await send_and_wait(chat, "really?")

    responses_request = model_server.requests[2]
    assert "previous_response_id" not in responses_request
    [call] = [c async for c in first_answer.tool_calls.all()]
    assert responses_request["input"] == [
        {"role": "user", "content": "6*7?"},
        {
            "type": "function_call",
            "call_id": call.call_id,
            "name": "calculator",
            "arguments": '{"expression": "6*7"}',
        },
        {"type": "function_call_output", "call_id": call.call_id, "output": "42"},
        {"role": "assistant", "content": "It is 42."},
        {"role": "user", "content": "sure?"},
    ]
    assert responses_request["instructions"]
    last_request = model_server.requests[3]["messages"]
    assert last_request[-2:] == [
        {"role": "assistant", "content": "Still 42."},
        {"role": "user", "content": "really?"},
    ]
    assert [m.api_style for m in await answers(conversation)] == [
        "chat_completions",
        "responses",
        "chat_completions",
    ]


async def test_chat_completions_reasoning_is_kept_out_of_the_answer(
    connect: Connect, user: User, model_server: FakeOpenAI
) -> None:
    from tests.helpers.fake_openai import Completion

    completion = Completion()
    chunks = [
        completion.chunk({"role": "assistant", "content": ""}),
        completion.chunk({"content": "<think>The user wants"}),
        completion.chunk({"content": " a greeting.</think>Hello!"}),
        completion.chunk({}, finish_reason="stop"),
    ]
    model_server.queue(sse(chunks))
    conversation, chat = await open_chat(connect, user, "chat_completions")

    frames = await send_and_wait(chat, "hi")

    [answer] = await answers(conversation)
    assert (answer.content, answer.reasoning) == ("Hello!", "The user wants a greeting.")
    streamed = "".join(frames)
    assert "&lt;think" not in streamed and "<think>" not in streamed
    assert re.search(REASONING_SHOWN_COLLAPSED, frames[-1])


def test_the_page_offers_configured_and_listed_models_and_remembers_the_choice(
    user: User, model_server: FakeOpenAI, settings: Any
) -> None:
    settings.LLM_MODELS = ["gpt-4.1", "fake-model"]
    conversation = Conversation.objects.create(owner=user, model="fake-model")
    client = Client()
    client.force_login(user)
    page = client.get(reverse("conversation-detail", args=[conversation.pk])).content.decode()
    # fake-model from LLM_MODEL, gpt-4.1 from LLM_MODELS; the loopback server lists fake-model.
    assert '<option value="fake-model" selected>' in page
    assert '<option value="gpt-4.1">' in page
    assert '<option value="responses">Responses</option>' in page

    client.post(
        reverse("conversation-configure", args=[conversation.pk]),
        {"model": "gpt-4.1", "api_style": "responses"},
    )
    conversation.refresh_from_db()
    assert (conversation.model, conversation.api_style) == ("gpt-4.1", "responses")

    response = client.post(
        reverse("conversation-configure", args=[conversation.pk]),
        {"model": "not-offered", "api_style": "responses"},
        follow=True,
    )
    assert "is not one of the models on offer" in response.content.decode()
    conversation.refresh_from_db()
    assert conversation.model == "gpt-4.1"


def test_someone_elses_conversation_cannot_be_configured(
    user: User, other_user: User, model_server: FakeOpenAI
) -> None:
    theirs = Conversation.objects.create(owner=other_user, model="fake-model")
    client = Client()
    client.force_login(user)
    response = client.post(
        reverse("conversation-configure", args=[theirs.pk]),
        {"model": "fake-model", "api_style": "responses"},
    )
    assert response.status_code == 404
    theirs.refresh_from_db()
    assert theirs.api_style == "chat_completions"


def test_usage_is_summed_on_the_page_and_in_the_admin(user: User, admin_client: Client) -> None:
    conversation = Conversation.objects.create(owner=user, model="fake-model")
    for tokens in ((10, 5), (20, 7)):
        Message.objects.create(
            conversation=conversation,
            role="assistant",
            content="x",
            input_tokens=tokens[0],
            output_tokens=tokens[1],
            total_tokens=sum(tokens),
        )
    client = Client()
    client.force_login(user)
    page = client.get(reverse("conversation-detail", args=[conversation.pk])).content.decode()
    assert "42 tokens so far (30 in / 12 out)" in page
    changelist = admin_client.get(reverse("admin:conversations_conversation_changelist"))
    assert '<td class="field-tokens">42</td>' in changelist.content.decode()
