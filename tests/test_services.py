"""Services: the history sent back to the model, stale runs, and the search tool's isolation."""

from __future__ import annotations

import json
import threading
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.db import connection, connections
from django.utils import timezone

from conversations import history, refusals, services
from conversations.models import Conversation, Message, ToolCall
from conversations.toolbox import toolbox_for

pytestmark = pytest.mark.django_db


def test_history_pairs_every_tool_call_with_its_output(user: User) -> None:
    conversation = Conversation.objects.create(owner=user)
    Message.objects.create(conversation=conversation, role="user", content="17*23 and Tokyo?")
    answer = Message.objects.create(
        conversation=conversation,
        role="assistant",
        content="Let me check. It is 391 and late in Tokyo.",
    )
    for index, (name, args, output) in enumerate(
        [("calculator", '{"expression": "17*23"}', "391"), ("current_time", "{}", "Error: x")]
    ):
        ToolCall.objects.create(
            message=answer,
            step=1,
            index=index,
            call_id=f"call_{index}",
            name=name,
            arguments=args,
            text_offset=len("Let me check. "),
            status=ToolCall.Status.SUCCEEDED if index == 0 else ToolCall.Status.FAILED,
            output=output,
        )
    # A call that never ran (the run was stopped) has no output and is not sent back.
    ToolCall.objects.create(
        message=answer,
        step=2,
        index=0,
        call_id="call_x",
        name="calculator",
        status=ToolCall.Status.CANCELLED,
        text_offset=len(answer.content),
    )
    follow_up = Message.objects.create(conversation=conversation, role="user", content="thanks")

    sent = history.provider_history(conversation=conversation, before=follow_up)

    assert sent[0]["role"] == "system"
    assert sent[1:] == [
        {"role": "user", "content": "17*23 and Tokyo?"},
        {
            "role": "assistant",
            "content": "Let me check. ",
            "tool_calls": [
                {
                    "id": "call_0",
                    "type": "function",
                    "function": {"name": "calculator", "arguments": '{"expression": "17*23"}'},
                },
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "current_time", "arguments": "{}"},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_0", "content": "391"},
        {"role": "tool", "tool_call_id": "call_1", "content": "Error: x"},
        {"role": "assistant", "content": "It is 391 and late in Tokyo."},
    ]


def test_a_run_whose_process_died_is_marked_interrupted(user: User) -> None:
    conversation = Conversation.objects.create(owner=user)
    stale = Message.objects.create(
        conversation=conversation,
        role="assistant",
        content="half an ans",
        status=Message.Status.STREAMING,
        heartbeat_at=timezone.now() - timedelta(minutes=5),
    )
    ToolCall.objects.create(message=stale, call_id="c", name="calculator", status="running")
    fresh_conversation = Conversation.objects.create(owner=user)
    fresh = Message.objects.create(
        conversation=fresh_conversation,
        role="assistant",
        status=Message.Status.STREAMING,
        heartbeat_at=timezone.now(),
    )

    ended = services.runs_end(status=Message.Status.INTERRUPTED, error="died", stale=True)
    # A second sweeper (another process) finds nothing left to end.
    assert services.runs_end(status=Message.Status.INTERRUPTED, stale=True) == []

    assert [message.pk for message in ended] == [stale.pk]
    stale.refresh_from_db()
    fresh.refresh_from_db()
    assert stale.status == Message.Status.INTERRUPTED
    assert stale.content == "half an ans"
    assert stale.tool_calls.get().status == ToolCall.Status.CANCELLED
    assert fresh.status == Message.Status.STREAMING


@pytest.mark.django_db(transaction=True)
async def test_search_conversations_finds_only_my_own_messages(
    user: User, other_user: User
) -> None:
    mine = await Conversation.objects.acreate(owner=user, title="Holiday plans")
    theirs = await Conversation.objects.acreate(owner=other_user, title="Bob's plans")
    await Message.objects.acreate(conversation=mine, role="user", content="Trip to Kyoto in May")
    await Message.objects.acreate(conversation=theirs, role="user", content="Kyoto secrets")

    result = await toolbox_for(user_id=user.pk, conversation_id=0).run(
        "search_conversations", json.dumps({"query": "kyoto"})
    )

    assert result.ok
    found = json.loads(result.output)
    assert [hit["excerpt"] for hit in found] == ["Trip to Kyoto in May"]
    assert found[0]["conversation"] == "Holiday plans"
    assert found[0]["conversation_id"] == mine.pk


async def test_search_conversations_rejects_an_empty_query(user: User) -> None:
    result = await toolbox_for(user_id=user.pk, conversation_id=0).run(
        "search_conversations", '{"query": ""}'
    )
    assert not result.ok
    assert "invalid arguments" in result.output


def test_message_text_checks() -> None:
    assert services.check_message_text("  hi  ") == "hi"
    for bad in ("", "   ", None, 5, "x" * 20_001):
        with pytest.raises(refusals.InvalidInput):
            services.check_message_text(bad)


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="concurrent presses need a server database (SQLite's in-memory test database "
    "cannot be written by threads at once)",
)
def test_ten_new_conversation_presses_at_once_make_one_conversation(user: User) -> None:
    start = threading.Barrier(10)
    opened: list[int] = []

    def press_new() -> None:
        start.wait()
        try:
            opened.append(services.conversation_create(owner=user, reuse_empty=True).pk)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=press_new) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert Conversation.objects.filter(owner=user).count() == 1
    assert set(opened) == {Conversation.objects.get(owner=user).pk}
