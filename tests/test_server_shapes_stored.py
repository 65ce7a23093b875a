"""Each server's stream shape through the chat socket: the answer and tool calls as stored.

The shapes, and what each one stores (`stored`), are files in tests/data/server_shapes/.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User

from conversations.models import Message
from tests.helpers.chat import (
    Connect,
    assistant_message,
    calls_of,
    new_conversation,
    opened,
    send_and_wait,
)
from tests.helpers.fake_openai import FakeOpenAI, sse, text_stream
from tests.helpers.server_shapes import SHAPES

QUESTION = "What is 2+2, and what time is it in Tokyo?"
FOLLOW_UP = "Done."


def output_is(output: str, expected: dict[str, Any]) -> bool:
    """Whether a call's stored output is the one `expected`: `output` exactly, or one that starts
    with `output_starts_with` or contains `output_contains`."""
    if "output" in expected:
        return bool(output == expected["output"])
    if "output_starts_with" in expected:
        return output.startswith(expected["output_starts_with"])
    return bool(expected["output_contains"] in output)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("shape", list(SHAPES))
async def test_each_shape_is_stored_as_the_user_sees_it(
    shape: str, connect: Connect, user: User, model_server: FakeOpenAI
) -> None:
    expected = SHAPES[shape].stored
    model_server.queue(SHAPES[shape].script())
    if expected["calls"]:
        model_server.queue(sse(text_stream(FOLLOW_UP)))
    conversation = await new_conversation(user)
    socket = await opened(connect, conversation, user)

    frames = await send_and_wait(socket, QUESTION)

    message = await assistant_message(conversation)
    assert (message.status, message.error) == (Message.Status.COMPLETE, "")
    assert message.content == expected["text"] + (FOLLOW_UP if expected["calls"] else "")
    assert message.reasoning == expected["reasoning"]
    for tag in ("<tool_call>", "<think>"):
        assert tag not in message.content
        assert tag not in frames[-1] and tag.replace("<", "&lt;") not in frames[-1]
    rows = await calls_of(message)
    assert [(row.name, row.parsed_arguments, row.status) for row in rows] == [
        (call["name"], call["parsed_arguments"], call["status"]) for call in expected["calls"]
    ]
    for row, call in zip(rows, expected["calls"], strict=True):
        assert output_is(row.output, call), (row.name, row.output)
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
                "content": expected["text"] or None,
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
