"""Tools that ask first, end to end: the page's Approve and Deny, the rows, the model's next
request, time-outs, Stop, and decisions from another page, user or process."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import pytest
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import User
from django.utils import timezone

from conversations import actions, history, refusals, runner
from conversations.live import hub as live
from conversations.live.draft import AnswerDraft
from conversations.models import Conversation, Message, ToolCall
from conversations.streaming.events import ToolCallReady
from conversations.streaming.loop import Decision
from conversations.streaming.responses import chat_messages_to_input
from conversations.toolbox import toolbox_for
from tests.helpers.chat import (
    Connect,
    assistant_message,
    calls_of,
    finished,
    new_conversation,
    opened,
    receive_until,
)
from tests.helpers.fake_openai import (
    FakeOpenAI,
    response_text_stream,
    response_tool_calls_stream,
    sse,
    text_stream,
    tool_calls_stream,
)

pytestmark = pytest.mark.django_db(transaction=True)

WAITING = 'data-status="awaiting_approval"'
TOOL_CALL = re.compile(r'name="tool_call" value="(\d+:\d+:\d+)"')


@pytest.fixture(autouse=True)
def short_approval_timeout(settings: Any) -> None:
    """A failing test's waiting call ends soon, not after the default five minutes."""
    settings.CHAT_APPROVAL_TIMEOUT = 5


def rename_call(title: str = "Trip to Kyoto") -> Any:
    return sse(tool_calls_stream([("rename_conversation", json.dumps({"title": title}))]))


async def ask_and_wait(page: WebsocketCommunicator, text: str = "Rename this") -> str:
    """Send a message whose answer calls a tool that asks first; the waiting call's id."""
    await page.send_json_to({"message": text})
    frames = await receive_until(page, lambda frame: WAITING in frame)
    [tool_call] = set(TOOL_CALL.findall(frames[-1]))
    assert "Waiting for your approval" in frames[-1]
    return tool_call


async def until_finished(page: WebsocketCommunicator) -> list[str]:
    frames = await receive_until(page, finished)
    await runner.wait_for_local_runs()
    return frames


async def test_an_approved_call_runs_and_every_page_shows_who_approved_it(
    connect: Connect, user: User, model_server: FakeOpenAI, settings: Any
) -> None:
    # Saved when it starts waiting, not at the next checkpoint.
    settings.CHAT_CHECKPOINT_INTERVAL = 5
    model_server.queue(rename_call())
    model_server.queue(sse(text_stream("Renamed.")))
    conversation = await new_conversation(user)
    page = await opened(connect, conversation, user)
    other_tab = await opened(connect, conversation, user)

    tool_call = await ask_and_wait(page)

    await receive_until(other_tab, lambda frame: WAITING in frame)
    async with asyncio.timeout(2):
        while (await ToolCall.objects.aget()).status != ToolCall.Status.AWAITING_APPROVAL:
            await asyncio.sleep(0.02)
    message = await assistant_message(conversation)
    assert tool_call == f"{message.pk}:1:0"

    await page.send_json_to({"action": "approve", "tool_call": tool_call})
    frames = await until_finished(page)
    others = await receive_until(other_tab, finished)

    [call] = await calls_of(await assistant_message(conversation))
    assert (call.status, call.output) == (
        "succeeded",
        json.dumps({"conversation_id": conversation.pk, "title": "Trip to Kyoto"}),
    )
    assert (call.decision, call.decided_by, call.decision_reason) == ("approved", "alice", "")
    assert call.decided_at is not None and call.started_at is not None
    assert call.decided_at <= call.started_at
    await conversation.arefresh_from_db()
    assert conversation.title == "Trip to Kyoto"
    for shown in (frames[-1], others[-1]):
        assert "Approved by alice" in shown
        assert 'name="tool_call"' not in shown
    assert model_server.requests[1]["messages"][-1]["content"] == call.output


async def test_a_denial_from_another_page_reaches_the_model_with_its_reason(
    connect: Connect, user: User, model_server: FakeOpenAI
) -> None:
    model_server.queue(rename_call())
    model_server.queue(sse(text_stream("All right, I left it.")))
    conversation = await new_conversation(user, title="Keep me")
    page = await opened(connect, conversation, user)
    other_tab = await opened(connect, conversation, user)

    tool_call = await ask_and_wait(page)
    await receive_until(other_tab, lambda frame: WAITING in frame)
    await other_tab.send_json_to(
        {"action": "deny", "tool_call": tool_call, "reason": "I like <b>this</b> title."}
    )
    frames = await until_finished(page)

    [call] = await calls_of(await assistant_message(conversation))
    assert (call.status, call.decision, call.decided_by) == ("denied", "denied", "alice")
    assert call.decision_reason == "I like <b>this</b> title."
    assert call.decided_at is not None and call.started_at is None
    denial = "The user denied this tool call: I like <b>this</b> title."
    assert call.output == denial
    follow_up = model_server.requests[1]["messages"]
    assert follow_up[-2]["tool_calls"][0]["function"]["name"] == "rename_conversation"
    assert follow_up[-1] == {"role": "tool", "tool_call_id": call.call_id, "content": denial}
    await conversation.arefresh_from_db()
    assert conversation.title == "Keep me"
    assert "Denied by alice: I like &lt;b&gt;this&lt;/b&gt; title." in frames[-1]
    assert "<b>this</b>" not in frames[-1]


async def test_no_decision_in_time_denies_the_call_as_timed_out(
    connect: Connect, user: User, model_server: FakeOpenAI, settings: Any
) -> None:
    settings.CHAT_APPROVAL_TIMEOUT = 0.3
    model_server.queue(rename_call())
    model_server.queue(sse(text_stream("Nobody answered.")))
    conversation = await new_conversation(user)
    page = await opened(connect, conversation, user)

    tool_call = await ask_and_wait(page)
    frames = await until_finished(page)

    [call] = await calls_of(await assistant_message(conversation))
    assert (call.status, call.decision, call.decided_by) == ("denied", "timed_out", "")
    assert "no one approved it within 0.3 s" in call.output
    assert model_server.requests[1]["messages"][-1]["content"] == call.output
    assert "no one approved it in time" in frames[-1]
    # Too late now.
    await page.send_json_to({"action": "approve", "tool_call": tool_call})
    [error] = await receive_until(page, lambda frame: 'id="chat-error"' in frame)
    assert f"Tool call {tool_call} is not waiting for a decision" in error


async def test_the_first_decision_wins(
    connect: Connect, user: User, model_server: FakeOpenAI
) -> None:
    model_server.queue(rename_call())
    model_server.queue(sse(text_stream("Renamed."), delay=0.2))
    conversation = await new_conversation(user)
    page = await opened(connect, conversation, user)

    tool_call = await ask_and_wait(page)
    await actions.tool_call_decide(
        conversation_id=conversation.pk,
        tool_call_id=tool_call,
        approved=True,
        reason="",
        decided_by="alice",
    )
    with pytest.raises(refusals.NotWaiting, match="not waiting for a decision"):
        await actions.tool_call_decide(
            conversation_id=conversation.pk,
            tool_call_id=tool_call,
            approved=False,
            reason="changed my mind",
            decided_by="alice",
        )
    await until_finished(page)

    [call] = await calls_of(await assistant_message(conversation))
    assert (call.status, call.decision) == ("succeeded", "approved")


async def test_someone_elses_conversation_cannot_decide_on_a_call(
    connect: Connect, user: User, other_user: User, model_server: FakeOpenAI, settings: Any
) -> None:
    settings.CHAT_APPROVAL_TIMEOUT = 3
    model_server.queue(rename_call())
    model_server.queue(sse(text_stream("Nobody answered.")))
    conversation = await new_conversation(user)
    page = await opened(connect, conversation, user)
    bobs = await new_conversation(other_user)
    bobs_page = await opened(connect, bobs, other_user)

    tool_call = await ask_and_wait(page)
    await bobs_page.send_json_to({"action": "approve", "tool_call": tool_call})
    [error] = await receive_until(bobs_page, lambda frame: 'id="chat-error"' in frame)
    assert f"Tool call {tool_call} is not waiting for a decision" in error
    for unknown in ("99999:1:0", f"{tool_call[:-1]}7", "not an id"):
        with pytest.raises(refusals.NotWaiting):
            await actions.tool_call_decide(
                conversation_id=conversation.pk,
                tool_call_id=unknown,
                approved=True,
                reason="",
                decided_by="alice",
            )
    await page.send_json_to({"action": "deny", "tool_call": tool_call})
    await until_finished(page)

    [call] = await calls_of(await assistant_message(conversation))
    assert (call.decision, call.decided_by) == ("denied", "alice")
    assert call.output == "The user denied this tool call."


async def test_stop_while_a_call_waits_cancels_the_answer(
    connect: Connect, user: User, model_server: FakeOpenAI
) -> None:
    model_server.queue(rename_call())
    conversation = await new_conversation(user)
    page = await opened(connect, conversation, user)

    tool_call = await ask_and_wait(page)
    await page.send_json_to({"action": "stop"})
    await until_finished(page)

    message = await assistant_message(conversation)
    assert message.status == Message.Status.CANCELLED
    [call] = await calls_of(message)
    assert (call.status, call.decision) == ("cancelled", "")
    assert len(model_server.requests) == 1
    with pytest.raises(refusals.NotWaiting):
        await actions.tool_call_decide(
            conversation_id=conversation.pk,
            tool_call_id=tool_call,
            approved=True,
            reason="",
            decided_by="alice",
        )


async def test_a_malformed_decision_is_a_chat_error(
    connect: Connect, user: User, model_server: FakeOpenAI
) -> None:
    conversation = await new_conversation(user)
    page = await opened(connect, conversation, user)
    for frame in (
        {"action": "approve"},
        {"action": "deny", "tool_call": 5},
        {"action": "deny", "tool_call": "1:1:0", "reason": 7},
        {"action": "deny", "tool_call": "1:1:0", "reason": "x" * 1001},
    ):
        await page.send_json_to(frame)
        [error] = await receive_until(page, lambda f: 'id="chat-error"' in f)
        assert re.search(r'id="chat-error"[^>]*>\S', error), frame


async def test_a_decision_reaches_an_answer_run_by_another_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(live, "STOP_REPLY", 0.3)
    elsewhere = live.Hub()
    run = await elsewhere.start_run(5, AnswerDraft(message_id=9, created_at=timezone.now()))
    call = ToolCallReady(0, "call_0", "rename_conversation", "{}")
    waiting = asyncio.create_task(run.decide(1, 0, call))
    await asyncio.sleep(0)
    here = live.Hub()
    decision = Decision(approved=False, by="alice", reason="no")

    # Another conversation's, a call that does not wait, an answer no process runs.
    assert not await here.decide(6, 9, 1, 0, decision)
    assert not await here.decide(5, 9, 1, 1, decision)
    assert not await here.decide(5, 10, 1, 0, decision)
    assert not waiting.done()
    assert await here.decide(5, 9, 1, 0, decision)
    assert await asyncio.wait_for(waiting, 2) == decision
    assert not await here.decide(5, 9, 1, 0, decision)
    run.close()


async def test_denied_calls_are_paired_with_their_denial_in_the_history(
    user: User, model_server: FakeOpenAI
) -> None:
    conversation = await new_conversation(user)
    await Message.objects.acreate(conversation=conversation, role="user", content="Rename it")
    answer = await Message.objects.acreate(
        conversation=conversation, role="assistant", content="I did not.", status="complete"
    )
    denial = "The user denied this tool call: no"
    await ToolCall.objects.acreate(
        message=answer,
        call_id="call_1",
        name="rename_conversation",
        arguments='{"title": "X"}',
        status=ToolCall.Status.DENIED,
        output=denial,
        decision=ToolCall.Decision.DENIED,
        decided_by="alice",
    )
    latest = await Message.objects.acreate(conversation=conversation, role="user", content="Ok")

    sent = await history.aprovider_history(conversation=conversation, before=latest)

    # Everything before the latest message: the call, its denial, then the answer's text.
    assert sent[-3]["tool_calls"][0]["id"] == "call_1"
    assert sent[-2] == {"role": "tool", "tool_call_id": "call_1", "content": denial}
    assert sent[-1] == {"role": "assistant", "content": "I did not."}
    _, items = chat_messages_to_input(sent)
    assert [item.get("type") for item in items[-3:-1]] == ["function_call", "function_call_output"]
    assert items[-2] == {"type": "function_call_output", "call_id": "call_1", "output": denial}


async def test_a_responses_answer_sends_the_denial_as_the_calls_output(
    connect: Connect, user: User, model_server: FakeOpenAI, settings: Any
) -> None:
    settings.LLM_RESPONSES_STORE = False
    model_server.queue(
        sse(response_tool_calls_stream([("rename_conversation", '{"title": "New"}')]))
    )
    model_server.queue(sse(response_text_stream("Left as it is.")))
    conversation = await Conversation.objects.acreate(
        owner=user, model="fake-model", api_style="responses"
    )
    page = await opened(connect, conversation, user)

    tool_call = await ask_and_wait(page)
    await page.send_json_to({"action": "deny", "tool_call": tool_call, "reason": "No."})
    await until_finished(page)

    [call] = await calls_of(await assistant_message(conversation))
    last = model_server.requests[1]["input"][-1]
    assert last == {
        "type": "function_call_output",
        "call_id": call.call_id,
        "output": "The user denied this tool call: No.",
    }


async def test_the_conversation_tools_touch_only_the_users_own_conversations(
    user: User, other_user: User
) -> None:
    mine = await new_conversation(user, title="Mine")
    other_mine = await new_conversation(user, title="Old")
    theirs = await new_conversation(other_user, title="Bob's")
    tools = toolbox_for(user_id=user.pk, conversation_id=mine.pk)
    assert tools.needs_approval("rename_conversation", '{"title": "A"}')
    assert tools.needs_approval("delete_conversation", json.dumps({"conversation_id": 1}))
    assert not tools.needs_approval("search_conversations", '{"query": "a"}')

    renamed = await tools.run("rename_conversation", '{"title": "  New   name "}')
    elsewhere = await tools.run(
        "rename_conversation", json.dumps({"title": "Older", "conversation_id": other_mine.pk})
    )
    not_mine = await tools.run(
        "rename_conversation", json.dumps({"title": "Mine now", "conversation_id": theirs.pk})
    )
    itself = await tools.run("delete_conversation", json.dumps({"conversation_id": mine.pk}))
    not_mine_either = await tools.run(
        "delete_conversation", json.dumps({"conversation_id": theirs.pk})
    )
    deleted = await tools.run("delete_conversation", json.dumps({"conversation_id": other_mine.pk}))

    assert renamed.ok and json.loads(renamed.output)["title"] == "New name"
    assert elsewhere.ok
    assert not not_mine.ok and f"no conversation {theirs.pk} of yours" in not_mine.output
    assert not itself.ok and "the conversation you are answering in" in itself.output
    assert not not_mine_either.ok and f"no conversation {theirs.pk}" in not_mine_either.output
    assert deleted.ok and json.loads(deleted.output) == {
        "deleted": other_mine.pk,
        "title": "Older",
    }
    assert [c.title async for c in Conversation.objects.order_by("pk")] == ["New name", "Bob's"]
