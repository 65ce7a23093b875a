"""Each server's stream shape through the chat socket: the answer and tool calls as stored."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pytest
from django.contrib.auth.models import User

from conversations.models import Message, ToolCall
from tests.helpers.chat import (
    Connect,
    assistant_message,
    calls_of,
    new_conversation,
    opened,
    send_and_wait,
)
from tests.helpers.fake_openai import FakeOpenAI, sse, text_stream
from tests.test_server_shapes import SHAPES

QUESTION = "What is 2+2, and what time is it in Tokyo?"
FOLLOW_UP = "Done."


@dataclass(frozen=True)
class StoredCall:
    """A ToolCall row: `output` is a pattern the whole output must match."""

    name: str
    parsed_arguments: dict[str, Any] | None
    output: str
    status: ToolCall.Status = ToolCall.Status.SUCCEEDED


def calculated(expression: str, result: str) -> StoredCall:
    return StoredCall("calculator", {"expression": expression}, re.escape(result))


def rejected(name: str, parsed_arguments: dict[str, Any] | None, reason: str) -> StoredCall:
    return StoredCall(
        name, parsed_arguments, rf"Error: {re.escape(reason)}.*", ToolCall.Status.FAILED
    )


TOKYO_TIME = StoredCall("current_time", {"timezone": "Asia/Tokyo"}, r".*\+09:00.*")
NOT_JSON = "arguments are not valid JSON"


@dataclass(frozen=True)
class Stored:
    """What the shape's step leaves: its text (before the follow-up), reasoning and calls."""

    text: str
    reasoning: str = ""
    calls: tuple[StoredCall, ...] = ()


STORED = {
    "openai_parallel_calls_interleaved": Stored(
        "",
        calls=(
            calculated("2+2", "4"),
            TOKYO_TIME,
            rejected("calculator", {"x": 1}, "invalid arguments"),
        ),
    ),
    "azure_filter_results_and_chunks_without_choices": Stored("Bonjour !"),
    "ollama_whole_calls_without_index": Stored("", calls=(calculated("2+2", "4"), TOKYO_TIME)),
    "ollama_index_zero_for_every_call": Stored(
        "I'll work out both.", calls=(calculated("6*7", "42"), calculated("2**10", "1024"))
    ),
    "ollama_reasoning_field": Stored("Hello!", reasoning="Okay, the user greets me."),
    "vllm_calls_without_ids": Stored(
        "", reasoning="Two tools are needed.", calls=(calculated("2+2", "4"), TOKYO_TIME)
    ),
    "index_zero_and_ids_only_on_first_fragments": Stored(
        "", calls=(calculated("2+2", "4"), TOKYO_TIME)
    ),
    "neither_ids_nor_indexes": Stored(
        "", calls=(calculated("2+2", "4"), TOKYO_TIME, calculated("3*3", "9"))
    ),
    "llama_cpp_tool_calls_in_the_text": Stored(
        "Let me check both.\n", calls=(calculated("2+2", "4"), TOKYO_TIME)
    ),
    "llama_cpp_think_block_and_malformed_tags": Stored(
        "Sure.\nI cannot call tools here.",
        reasoning="The user wants arithmetic.\n",
        # The partial-JSON reading of the broken body, as its card shows it.
        calls=(
            rejected(
                "calculator", {"name": "calculator", "arguments": {"expression": "2+2"}}, NOT_JSON
            ),
        ),
    ),
    "plain_json_body_with_calls": Stored(
        "Let me calculate.", reasoning="Simple sum.", calls=(calculated("2+2", "4"), TOKYO_TIME)
    ),
    "plain_json_body_with_text_only": Stored("Paris."),
    "deepseek_reasoning_content": Stored("Hi there.", reasoning="Hmm, a greeting."),
    "openrouter_reasoning_with_details": Stored("42", reasoning="Short answer."),
    "invalid_json_arguments": Stored(
        "", calls=(rejected("calculator", {"expression": "2+2"}, NOT_JSON),)
    ),
}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("shape", list(SHAPES))
async def test_each_shape_is_stored_as_the_user_sees_it(
    shape: str, connect: Connect, user: User, model_server: FakeOpenAI
) -> None:
    expected = STORED[shape]
    model_server.queue(SHAPES[shape]())
    if expected.calls:
        model_server.queue(sse(text_stream(FOLLOW_UP)))
    conversation = await new_conversation(user)
    socket = await opened(connect, conversation, user)

    frames = await send_and_wait(socket, QUESTION)

    message = await assistant_message(conversation)
    assert (message.status, message.error) == (Message.Status.COMPLETE, "")
    assert message.content == expected.text + (FOLLOW_UP if expected.calls else "")
    assert message.reasoning == expected.reasoning
    for tag in ("<tool_call>", "<think>"):
        assert tag not in message.content
        assert tag not in frames[-1] and tag.replace("<", "&lt;") not in frames[-1]
    rows = await calls_of(message)
    assert [(row.name, row.parsed_arguments, row.status) for row in rows] == [
        (call.name, call.parsed_arguments, call.status) for call in expected.calls
    ]
    for row, call in zip(rows, expected.calls, strict=True):
        assert re.fullmatch(call.output, row.output, re.DOTALL), (row.name, row.output)
        assert row.step == 1 and row.finished_at is not None
    assert len({row.call_id for row in rows}) == len(rows) and all(row.call_id for row in rows)

    assert len(model_server.requests) == (2 if rows else 1)
    if rows:
        # The follow-up replays the step: the calls under their ids, then each one's output.
        sent = model_server.requests[1]["messages"]
        assert sent[-len(rows) - 2 :] == [
            {"role": "user", "content": QUESTION},
            {
                "role": "assistant",
                "content": expected.text or None,
                "tool_calls": [
                    {
                        "id": row.call_id,
                        "type": "function",
                        "function": {"name": row.name, "arguments": row.arguments},
                    }
                    for row in rows
                ],
            },
            *({"role": "tool", "tool_call_id": row.call_id, "content": row.output} for row in rows),
        ]
