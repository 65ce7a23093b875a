"""Bounded waits seen through the chat: retries shown, a silent server failing in time, and a
hanging model list that delays nothing."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from conversations import llm
from conversations.models import Conversation
from tests.helpers.chat import (
    Connect,
    assistant_message,
    new_conversation,
    opened,
    receive_until,
    send_and_wait,
)
from tests.helpers.fake_openai import FakeOpenAI, SilentServer, error, sse, text_stream

pytestmark = pytest.mark.django_db(transaction=True)

RETRY_LINE = re.compile(r'<p id="message-\d+-retry" class="retrying" role="status">([^<]*)</p>')


def retry_lines(frames: list[str]) -> list[str]:
    """What the answer's retry line says, frame by frame ("" while it is empty)."""
    return [line for frame in frames for line in RETRY_LINE.findall(frame)]


def waits_shown(frames: list[str]) -> list[str]:
    return [line for line in retry_lines(frames) if line]


async def test_a_rate_limited_call_shows_the_wait_then_answers(
    connect: Connect, user: User, model_server: FakeOpenAI, settings: Any
) -> None:
    settings.LLM_MAX_RETRIES = 2
    model_server.queue(error(429, "Rate limit reached.", headers={"Retry-After": "1"}))
    model_server.queue(sse(text_stream("Hello after the wait.")))
    chat = await opened(connect, await new_conversation(user, model="fake-model"), user)

    frames = await send_and_wait(chat, "hi")

    assert waits_shown(frames) == [
        "The model server answered 429: Rate limit reached. Retrying in 1 s (try 2 of 3)."
    ]
    # The line empties once the answer goes on.
    assert retry_lines(frames)[-1] == ""
    answer = await assistant_message(await Conversation.objects.aget(owner=user))
    assert (answer.status, answer.content, answer.error) == (
        "complete",
        "Hello after the wait.",
        "",
    )
    assert len(model_server.requests) == 2


async def test_a_server_that_never_answers_fails_clearly_within_the_limits(
    connect: Connect,
    user: User,
    model_server: FakeOpenAI,
    silent_server: SilentServer,
    settings: Any,
) -> None:
    settings.OPENAI_BASE_URL = silent_server.base_url
    settings.LLM_MAX_RETRIES = 1
    settings.LLM_FIRST_EVENT_TIMEOUT = 0.5
    chat = await opened(connect, await new_conversation(user, model="fake-model"), user)

    started = time.monotonic()
    frames = await send_and_wait(chat, "hi")
    took = time.monotonic() - started

    assert waits_shown(frames) == [
        "The model server did not start answering within 0.5 s. Retrying in 1 s (try 2 of 2)."
    ]
    answer = await assistant_message(await Conversation.objects.aget(owner=user))
    assert answer.status == "failed"
    assert answer.error == "The model server did not start answering within 0.5 s. (tried 2 times)"
    assert answer.error in frames[-1]
    # Two tries of 0.5 s and a backoff of at most 0.5 s.
    assert took < 6


async def test_a_hanging_model_list_delays_no_page_message_or_socket(
    connect: Connect, user: User, model_server: FakeOpenAI
) -> None:
    model_server.models_hang = 10
    model_server.queue(sse(text_stream("Hi.")))
    conversation = await new_conversation(user, model="fake-model")
    client = Client()
    await sync_to_async(client.force_login)(user)
    page_url = reverse("conversation-detail", args=[conversation.pk])

    started = time.monotonic()
    page = await sync_to_async(client.get)(page_url)
    page_took = time.monotonic() - started
    assert page.status_code == 200 and '<option value="fake-model" selected>' in page.text
    async with asyncio.timeout(5):
        while not model_server.model_list_requests:
            await asyncio.sleep(0.02)

    # Another page, another socket's snapshot, a ping and a message, while /v1/models hangs.
    started = time.monotonic()
    again = await sync_to_async(client.get)(page_url)
    chat = await opened(connect, conversation, user)
    await chat.send_json_to({"action": "ping"})
    await receive_until(chat, lambda frame: 'id="pong"' in frame, timeout=5)
    await chat.send_json_to({"message": "hi"})
    await receive_until(chat, lambda frame: 'id="composer-ack"' in frame, timeout=5)
    took = time.monotonic() - started

    assert again.status_code == 200
    # One fetch, still hanging: nothing waited for it or asked again.
    assert model_server.model_list_requests == 1
    assert page_took < 1.5 and took < 1.5
    await receive_until(chat, lambda frame: "Hi." in frame)


def test_listed_models_are_offered_once_fetched(
    user: User, model_server: FakeOpenAI, settings: Any
) -> None:
    model_server.models = ["fake-model", "listed-model"]
    conversation = Conversation.objects.create(owner=user, model="fake-model")
    client = Client()
    client.force_login(user)
    url = reverse("conversation-detail", args=[conversation.pk])

    client.get(url)
    endpoint = llm.endpoint()
    assert endpoint is not None
    llm.wait_for_model_list(endpoint, timeout=5)

    assert '<option value="listed-model">' in client.get(url).text
    assert model_server.model_list_requests == 1


async def test_retrying_is_not_shown_once_the_answer_ends(
    connect: Connect, user: User, model_server: FakeOpenAI, settings: Any
) -> None:
    settings.LLM_MAX_RETRIES = 1
    model_server.queue(error(503, "Overloaded."))
    model_server.queue(error(503, "Still overloaded."))
    chat = await opened(connect, await new_conversation(user, model="fake-model"), user)

    frames = await send_and_wait(chat, "hi")

    assert waits_shown(frames)[0].startswith("The model server answered 503: Overloaded.")
    assert "Retrying" not in frames[-1]
    answer = await assistant_message(await Conversation.objects.aget(owner=user))
    assert answer.error == "The model server answered 503: Still overloaded. (tried 2 times)"
