"""The JSON API's socket: every command and event, bad input and isolation (docs/api.md)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from conversations import runner, services
from conversations.api.consumers import COMMANDS
from conversations.api.protocol import message_state
from conversations.live.events import EVENT_TYPES
from conversations.models import Conversation, Message, ToolCall
from tests.helpers.chat import (
    COMMAND,
    EVENT,
    SCHEMA,
    ApiConnect,
    ApiSocket,
    answer_finished,
    api_opened,
    api_send_and_wait,
    assistant_message,
    finished,
    new_conversation,
    opened,
    rebuilt,
    receive_until,
    send_and_wait,
    stored_state,
)
from tests.helpers.fake_openai import (
    FakeOpenAI,
    error,
    response_text_stream,
    response_tool_calls_stream,
    sse,
    text_stream,
    tool_calls_stream,
)

pytestmark = pytest.mark.django_db(transaction=True)

LONG = " ".join(["word"] * 200)


def of_type(frames: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [frame for frame in frames if frame["type"] == kind]


async def test_ready_names_the_conversation_and_its_latest_answer(
    api_connect: ApiConnect, user: User, model_server: FakeOpenAI
) -> None:
    conversation = await new_conversation(user, title="Sums", model="fake-model")
    socket = await api_connect(conversation, user)

    ready = await socket.connect()

    assert socket.subprotocol == "chat.v1"
    assert ready["seq"] is None and ready["answer"] is None
    assert ready["conversation"]["id"] == conversation.pk
    assert (ready["conversation"]["title"], ready["conversation"]["model"]) == (
        "Sums",
        "fake-model",
    )
    model_server.queue(sse(text_stream("Hi.")))
    frames = await api_send_and_wait(socket, "hello")
    again = await api_opened(api_connect, conversation, user)
    assert again.received[0]["answer"] == {
        "message_id": frames[0]["message_id"],
        "status": "complete",
        "seq": frames[-1]["seq"],
    }


async def test_without_the_subprotocol_offered_none_is_chosen(
    api_connect: ApiConnect, user: User
) -> None:
    conversation = await new_conversation(user)
    socket = await api_connect(conversation, user, subprotocols=[])
    await socket.connect()
    assert socket.subprotocol is None


async def test_a_refused_token_gets_unauthorized_and_4401(
    api_connect: ApiConnect, user: User
) -> None:
    conversation = await new_conversation(user)
    socket = await api_connect(conversation, user, auth_error="That token is not valid.")

    refused = await socket.connect()

    assert refused == {
        "type": "error",
        "seq": None,
        "code": "unauthorized",
        "message": "That token is not valid.",
    }
    assert await socket.closed_with() == 4401


async def test_someone_elses_conversation_is_not_found_like_a_missing_one(
    api_connect: ApiConnect, user: User, other_user: User
) -> None:
    theirs = await new_conversation(other_user)
    for target in (theirs, theirs.pk + 1000):
        socket = await api_connect(target, user)
        refused = await socket.connect()
        assert (refused["type"], refused["code"]) == ("error", "not_found")
        assert await socket.closed_with() == 4404


async def test_send_streams_text_usage_and_a_complete_finish(
    api_connect: ApiConnect, user: User, model_server: FakeOpenAI
) -> None:
    answer = "Seventeen times twenty-three is three hundred and ninety-one."
    model_server.queue(sse(text_stream(answer, usage=(12, 9)), delay=0.02))
    conversation = await new_conversation(user)
    socket = await api_opened(api_connect, conversation, user)

    frames = await api_send_and_wait(socket, "What is 17*23?", id=1)

    created = frames[0]
    assert created["type"] == "message.created"
    message_id = created["message_id"]
    assert created["seq"] == 0
    assert created["user_message"]["content"] == "What is 17*23?"
    assert created["message"]["status"] == "streaming" and created["message"]["role"] == "assistant"
    assert all(frame["message_id"] == message_id for frame in frames)
    assert [frame["seq"] for frame in frames[1:]] == list(range(1, len(frames)))
    assert of_type(frames, "step")[0]["step"] == 1
    assert "".join(frame["text"] for frame in of_type(frames, "text.delta")) == answer
    assert len(of_type(frames, "text.delta")) >= 3
    [usage] = of_type(frames, "usage")
    assert (usage["input_tokens"], usage["output_tokens"], usage["total_tokens"]) == (12, 9, 21)
    assert frames[-1]["type"] == "message.finished"
    assert (frames[-1]["status"], frames[-1]["error"]) == ("complete", "")
    assert rebuilt(frames, message_id).seq == frames[-1]["seq"]
    assert message_state(rebuilt(frames, message_id)) == await stored_state(message_id)
    user_message = await Message.objects.aget(pk=created["user_message"]["id"])
    assert (user_message.role, user_message.content) == ("user", "What is 17*23?")


async def test_tool_calls_stream_with_their_arguments_and_statuses(
    api_connect: ApiConnect, user: User, model_server: FakeOpenAI
) -> None:
    model_server.queue(
        sse(
            tool_calls_stream(
                [
                    ("calculator", json.dumps({"expression": "17*23"})),
                    ("current_time", json.dumps({"timezone": "Asia/Tokyo"})),
                ]
            ),
            delay=0.01,
        )
    )
    model_server.queue(sse(text_stream("391, and it is night in Tokyo.")))
    conversation = await new_conversation(user)
    socket = await api_opened(api_connect, conversation, user)

    frames = await api_send_and_wait(socket, "17*23, and the time in Tokyo?")

    message_id = frames[0]["message_id"]
    created = of_type(frames, "tool.created")
    assert [(f["name"], f["tool_call_id"]) for f in created] == [
        ("calculator", f"{message_id}:1:0"),
        ("current_time", f"{message_id}:1:1"),
    ]
    calculator = [f for f in frames if f.get("tool_call_id") == f"{message_id}:1:0"]
    arguments = of_type(calculator, "tool.arguments")
    assert len(arguments) >= 2
    assert "".join(f["delta"] for f in arguments) == json.dumps({"expression": "17*23"})
    assert arguments[-1]["parsed"] == {"expression": "17*23"}
    statuses = [f["status"] for f in of_type(calculator, "tool.status")]
    assert statuses == ["pending", "running", "succeeded"]
    assert of_type(calculator, "tool.status")[-1]["output"] == "391"
    assert [f["step"] for f in of_type(frames, "step")] == [1, 2]
    assert frames[-1]["status"] == "complete"
    state = await stored_state(message_id)
    assert message_state(rebuilt(frames, message_id)) == state
    assert [call["tool_call_id"] for call in state["tool_calls"]] == [
        f"{message_id}:1:0",
        f"{message_id}:1:1",
    ]


async def test_reasoning_streams_apart_on_the_api_style_the_send_chose(
    api_connect: ApiConnect, user: User, model_server: FakeOpenAI
) -> None:
    model_server.queue(
        sse(
            response_tool_calls_stream(
                [("calculator", json.dumps({"expression": "2+2"}))],
                reasoning=["Add them up."],
            )
        )
    )
    model_server.queue(sse(response_text_stream("Four.")))
    conversation = await new_conversation(user, model="fake-model")
    socket = await api_opened(api_connect, conversation, user)

    frames = await api_send_and_wait(socket, "2+2?", api_style="responses", model="fake-model")

    assert "".join(f["text"] for f in of_type(frames, "reasoning.delta")) == "Add them up."
    answer = await assistant_message(conversation)
    assert (answer.api_style, answer.reasoning, answer.content) == (
        "responses",
        "Add them up.",
        "Four.",
    )
    assert "input" in model_server.requests[0], "a Responses request"
    await conversation.arefresh_from_db()
    assert conversation.api_style == "responses"


async def test_a_failed_answer_finishes_failed_with_the_reason(
    api_connect: ApiConnect, user: User, model_server: FakeOpenAI
) -> None:
    model_server.queue(error(400, "This model does not exist."))
    conversation = await new_conversation(user)
    socket = await api_opened(api_connect, conversation, user)

    frames = await api_send_and_wait(socket, "hello")

    assert frames[-1]["type"] == "message.finished"
    assert frames[-1]["status"] == "failed"
    assert "does not exist" in frames[-1]["error"]


async def test_a_retried_model_call_says_so(
    api_connect: ApiConnect, user: User, model_server: FakeOpenAI, settings: Any
) -> None:
    settings.LLM_MAX_RETRIES = 1
    model_server.queue(error(429, "Slow down.", headers={"Retry-After": "0.1"}))
    model_server.queue(sse(text_stream("Made it.")))
    conversation = await new_conversation(user)
    socket = await api_opened(api_connect, conversation, user)

    frames = await api_send_and_wait(socket, "hello")

    [retrying] = of_type(frames, "retrying")
    assert (retrying["attempt"], retrying["attempts"]) == (2, 2)
    assert "Slow down." in retrying["reason"] and retrying["delay"] == pytest.approx(0.1)
    assert frames[-1]["status"] == "complete"
    assert message_state(rebuilt(frames, frames[0]["message_id"])) == await stored_state(
        frames[0]["message_id"]
    )


async def test_an_answer_waiting_for_the_local_model_is_queued(
    api_connect: ApiConnect, user: User, fake_openai: FakeOpenAI, settings: Any
) -> None:
    settings.LLM_BACKEND = "local"
    settings.LOCAL_LLM_PORT = int(fake_openai.base_url.rsplit(":", 1)[1].split("/")[0])
    settings.LLM_MAX_RETRIES = 0
    settings.CHAT_CHECKPOINT_INTERVAL = 0.05
    fake_openai.queue(sse(text_stream(" ".join(["first"] * 30)), delay=0.05))
    fake_openai.queue(sse(text_stream("second answer")))
    one, two = await new_conversation(user), await new_conversation(user)
    first = await api_opened(api_connect, one, user)
    second = await api_opened(api_connect, two, user)

    await first.send({"type": "send", "text": "go first"})
    await first.receive_until(lambda frame: frame["type"] == "text.delta")
    frames = await api_send_and_wait(second, "go second")

    statuses = [frame["status"] for frame in of_type(frames, "message.status")]
    assert statuses == ["queued", "streaming"]
    assert frames[-1]["status"] == "complete"
    await first.receive_until(answer_finished)


async def test_stop_from_another_client_ends_both_streams_cancelled(
    api_connect: ApiConnect, user: User, model_server: FakeOpenAI
) -> None:
    model_server.queue(sse(text_stream(LONG), delay=0.03))
    conversation = await new_conversation(user)
    sender = await api_opened(api_connect, conversation, user)
    watcher = await api_opened(api_connect, conversation, user)

    await sender.send({"type": "send", "text": "talk a lot"})
    seen = await watcher.receive_until(lambda frame: frame["type"] == "text.delta")
    await watcher.send({"type": "stop", "id": "halt"})
    seen += await watcher.receive_until(answer_finished)
    sent = await sender.receive_until(answer_finished)
    await runner.wait_for_local_runs()

    assert seen[0]["type"] == "message.created" and seen[0]["user_message"]["content"] == (
        "talk a lot"
    )
    assert (seen[-1]["type"], seen[-1]["status"]) == ("message.finished", "cancelled")
    assert (sent[-1]["type"], sent[-1]["status"]) == ("message.finished", "cancelled")
    message_id = sent[0]["message_id"]
    stored = await stored_state(message_id)
    assert stored["status"] == "cancelled" and stored["content"].startswith("word")
    assert message_state(rebuilt(sent, message_id)) == stored
    assert message_state(rebuilt(seen, message_id)) == stored
    await model_server.wait_for_closed_early()


async def orphan(conversation: Conversation, *, beat_ago: float) -> Message:
    """An answer whose process died `beat_ago` seconds after its last save."""
    await Message.objects.acreate(conversation=conversation, role="user", content="go on")
    message = await Message.objects.acreate(
        conversation=conversation,
        role="assistant",
        content="half an ans",
        status=Message.Status.STREAMING,
        model="fake-model",
        seq=7,
        heartbeat_at=timezone.now() - timedelta(seconds=beat_ago),
    )
    await ToolCall.objects.acreate(
        message=message, call_id="c1", name="calculator", status=ToolCall.Status.RUNNING
    )
    return message


async def test_an_answer_whose_process_died_ends_interrupted_for_its_followers(
    api_connect: ApiConnect, user: User, settings: Any
) -> None:
    conversation = await new_conversation(user)
    message = await orphan(conversation, beat_ago=0)
    socket = await api_opened(api_connect, conversation, user)
    assert socket.received[0]["answer"] == {
        "message_id": message.pk,
        "status": "streaming",
        "seq": 7,
    }
    # The client has more than the rows: events its run sent and never saved.
    await socket.send({"type": "resume", "message_id": message.pk, "after": 9})
    assert await socket.nothing_before_pong() == []

    # Its process dies: no save for longer than CHAT_RUN_STALE_AFTER; the next connect sweeps.
    long_ago = timezone.now() - timedelta(seconds=settings.CHAT_RUN_STALE_AFTER + 1)
    await Message.objects.filter(pk=message.pk).aupdate(heartbeat_at=long_ago)
    await api_opened(api_connect, conversation, user)
    [ended] = await socket.receive_until(answer_finished)

    assert ended["type"] == "snapshot" and ended["seq"] > 9
    assert ended["message"]["status"] == "interrupted"
    assert ended["message"]["content"] == "half an ans"
    assert ended["message"]["tool_calls"][0]["status"] == "cancelled"
    assert ended["message"]["tool_calls"][0]["tool_call_id"] == f"{message.pk}:1:0"
    await message.arefresh_from_db()
    assert message.seq == 7 + services.ENDED_SEQ_STEP == ended["seq"]
    # Resumed later from what it had, a client gets the ended state too.
    later = await api_opened(api_connect, conversation, user)
    await later.send({"type": "resume", "after": 9})
    snapshot = await later.receive()
    assert (snapshot["type"], snapshot["seq"]) == ("snapshot", message.seq)
    assert snapshot["message"] == await stored_state(message.pk)


async def test_stop_ends_an_answer_no_process_runs_cancelled(
    api_connect: ApiConnect, user: User
) -> None:
    conversation = await new_conversation(user)
    message = await orphan(conversation, beat_ago=0)
    socket = await api_opened(api_connect, conversation, user)
    await socket.send({"type": "resume", "after": 7})

    await socket.send({"type": "stop"})
    [ended] = await socket.receive_until(answer_finished)

    assert ended["type"] == "snapshot" and ended["message"]["status"] == "cancelled"
    assert ended["message"] == await stored_state(message.pk)


async def test_a_second_client_sees_the_new_turn_and_its_stream(
    api_connect: ApiConnect, user: User, model_server: FakeOpenAI
) -> None:
    model_server.queue(sse(text_stream("One, two, three, four."), delay=0.02))
    conversation = await new_conversation(user)
    sender = await api_opened(api_connect, conversation, user)
    watcher = await api_opened(api_connect, conversation, user)

    sent = await api_send_and_wait(sender, "count")
    seen = await watcher.receive_until(answer_finished)

    assert seen[0]["type"] == "message.created"
    assert seen[0]["user_message"] == sent[0]["user_message"]
    assert seen[0]["message_id"] == sent[0]["message_id"]
    assert message_state(rebuilt(seen, seen[0]["message_id"])) == await stored_state(
        seen[0]["message_id"]
    )
    # No echo of its own turn for the sender.
    assert len(of_type(sent, "message.created")) == 1
    assert await sender.nothing_before_pong() == []


async def test_a_turn_from_the_page_reaches_api_clients(
    api_connect: ApiConnect, connect: Any, user: User, model_server: FakeOpenAI
) -> None:
    model_server.queue(sse(text_stream("From the page.")))
    conversation = await new_conversation(user)
    client = await api_opened(api_connect, conversation, user)
    page = await opened(connect, conversation, user)

    await send_and_wait(page, "hello from the page")
    frames = await client.receive_until(answer_finished)

    assert frames[0]["type"] == "message.created"
    assert frames[0]["user_message"]["content"] == "hello from the page"
    assert "".join(f["text"] for f in of_type(frames, "text.delta")) == "From the page."
    assert message_state(rebuilt(frames, frames[0]["message_id"])) == await stored_state(
        frames[0]["message_id"]
    )


async def test_a_turn_from_an_api_client_reaches_the_page(
    api_connect: ApiConnect, connect: Any, user: User, model_server: FakeOpenAI
) -> None:
    model_server.queue(sse(text_stream("From the API.")))
    conversation = await new_conversation(user)
    page = await opened(connect, conversation, user)
    client = await api_opened(api_connect, conversation, user)

    sent = await api_send_and_wait(client, "hello from a program")
    frames = await receive_until(page, finished)

    assert "hello from a program" in frames[0]
    assert f'id="message-{sent[0]["message_id"]}"' in frames[0]
    assert "From the API." in frames[-1]


def test_every_whole_example_in_the_docs_matches_the_schema() -> None:
    examples = []
    for line in (Path(__file__).parents[1] / "docs" / "api.md").read_text().splitlines():
        line = line.strip().removeprefix("← ").removeprefix("→ ")
        if line.startswith("{") and line.endswith("}") and '"..."' not in line:
            examples.append(json.loads(line))
    assert len(examples) >= 20
    for example in examples:
        validator = COMMAND if example["type"] in COMMANDS else EVENT
        validator.validate(example)


async def test_ping_gets_pong_with_the_command_id(api_connect: ApiConnect, user: User) -> None:
    conversation = await new_conversation(user)
    socket = await api_opened(api_connect, conversation, user)

    assert await socket.command({"type": "ping", "id": 5}) == {
        "type": "pong",
        "seq": None,
        "command_id": 5,
    }
    assert await socket.command({"type": "ping"}) == {"type": "pong", "seq": None}


@pytest.mark.parametrize(
    ("frame", "code", "says"),
    [
        ("this is not json", "invalid_json", "not JSON"),
        ("[1, 2]", "invalid_json", "not a JSON object"),
        (json.dumps({"type": "send", "text": "x" * 70_000}), "too_large", "64 KiB"),
        (json.dumps({"text": "hi"}), "unknown_command", "`type`"),
        (json.dumps({"type": "dance", "id": "d1"}), "unknown_command", "'dance'"),
        (json.dumps({"type": "send"}), "invalid_command", "`text`"),
        (json.dumps({"type": "send", "text": 5}), "invalid_command", "`text` must be a string"),
        (json.dumps({"type": "send", "text": "hi", "model": 3}), "invalid_command", "`model`"),
        (json.dumps({"type": "resume", "after": "5"}), "invalid_command", "`after`"),
        (json.dumps({"type": "resume", "after": -1}), "invalid_command", "`after`"),
        (json.dumps({"type": "resume", "after": True}), "invalid_command", "`after`"),
        (
            json.dumps({"type": "resume", "after": 0, "message_id": "1"}),
            "invalid_command",
            "`message_id`",
        ),
        (json.dumps({"type": "approve"}), "invalid_command", "`tool_call_id`"),
        (json.dumps({"type": "deny", "tool_call_id": 1}), "invalid_command", "`tool_call_id`"),
        (
            json.dumps({"type": "deny", "tool_call_id": "1:1:0", "reason": "x" * 1001}),
            "invalid_command",
            "`reason` may be 1000 characters at most",
        ),
        (json.dumps({"type": "ping", "id": [1]}), "invalid_command", "`id`"),
        (json.dumps({"type": "send", "text": "   "}), "invalid_input", "Type a message first"),
        (json.dumps({"type": "send", "text": "x" * 20_001}), "invalid_input", "20,000"),
        (json.dumps({"type": "send", "text": "hi", "model": "gpt-9"}), "invalid_input", "gpt-9"),
        (json.dumps({"type": "send", "text": "hi", "api_style": "nope"}), "invalid_input", "nope"),
    ],
)
async def test_bad_input_gets_a_clear_error_stores_nothing_and_keeps_the_socket(
    api_connect: ApiConnect, user: User, model_server: FakeOpenAI, frame: str, code: str, says: str
) -> None:
    conversation = await new_conversation(user, model="fake-model")
    socket = await api_opened(api_connect, conversation, user)
    try:
        parsed = json.loads(frame)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and code != "too_large":
        await socket.send(parsed, valid=code == "invalid_input" and "api_style" not in parsed)
    else:
        await socket.send_raw(frame)

    refused = await socket.receive()

    assert (refused["type"], refused["code"]) == ("error", code)
    assert says in refused["message"]
    if isinstance(parsed, dict) and isinstance(parsed.get("id"), str):
        assert refused["command_id"] == parsed["id"]
    assert await socket.nothing_before_pong() == []
    assert await Message.objects.acount() == 0
    await conversation.arefresh_from_db()
    assert (conversation.model, conversation.api_style) == ("fake-model", "chat_completions")


async def test_a_binary_frame_is_refused(api_connect: ApiConnect, user: User) -> None:
    conversation = await new_conversation(user)
    socket = await api_opened(api_connect, conversation, user)

    await socket.send_raw(data=b'{"type": "ping"}')

    assert (await socket.receive())["code"] == "invalid_json"
    assert await socket.nothing_before_pong() == []


async def test_a_send_while_an_answer_runs_is_busy(
    api_connect: ApiConnect, user: User, model_server: FakeOpenAI
) -> None:
    model_server.queue(sse(text_stream(LONG), delay=0.03))
    conversation = await new_conversation(user)
    socket = await api_opened(api_connect, conversation, user)
    await socket.send({"type": "send", "text": "talk a lot"})
    await socket.receive_until(lambda frame: frame["type"] == "text.delta")

    await socket.send({"type": "send", "text": "and this?", "id": "second"})
    frames = await socket.receive_until(lambda frame: frame["type"] == "error")

    assert (frames[-1]["code"], frames[-1]["command_id"]) == ("busy", "second")
    assert await Message.objects.acount() == 2
    await socket.send({"type": "stop"})
    await socket.receive_until(answer_finished)


async def test_too_many_messages_are_rate_limited(
    api_connect: ApiConnect, user: User, model_server: FakeOpenAI, settings: Any
) -> None:
    settings.CHAT_MESSAGES_PER_MINUTE = 1
    model_server.queue(sse(text_stream("One.")))
    conversation = await new_conversation(user)
    socket = await api_opened(api_connect, conversation, user)
    await api_send_and_wait(socket, "one")

    refused = await socket.command({"type": "send", "text": "two"})

    assert refused["code"] == "rate_limited" and "try again in" in refused["message"]
    assert await Message.objects.acount() == 2


async def test_resume_finds_no_answer_outside_this_conversation(
    api_connect: ApiConnect, user: User, other_user: User, model_server: FakeOpenAI
) -> None:
    model_server.queue(sse(text_stream("Theirs.")))
    theirs = await new_conversation(other_user)
    their_socket = await api_opened(api_connect, theirs, other_user)
    their_frames = await api_send_and_wait(their_socket, "secret")
    conversation = await new_conversation(user)
    socket = await api_opened(api_connect, conversation, user)

    nothing_yet = await socket.command({"type": "resume", "after": 0})
    theirs_refused = await socket.command(
        {"type": "resume", "after": 0, "message_id": their_frames[0]["message_id"], "id": 3}
    )
    a_user_message = await socket.command(
        {"type": "resume", "after": 0, "message_id": their_frames[0]["user_message"]["id"]}
    )

    for refused in (nothing_yet, theirs_refused, a_user_message):
        assert (refused["type"], refused["code"]) == ("error", "not_found")
    assert theirs_refused["command_id"] == 3
    assert await socket.nothing_before_pong() == []


async def test_approve_of_someone_elses_tool_call_is_not_waiting(
    api_connect: ApiConnect, user: User, other_user: User
) -> None:
    theirs = await new_conversation(other_user)
    their_answer = await Message.objects.acreate(
        conversation=theirs, role="assistant", status=Message.Status.STREAMING
    )
    await ToolCall.objects.acreate(
        message=their_answer,
        call_id="c1",
        name="rename_conversation",
        status=ToolCall.Status.AWAITING_APPROVAL,
    )
    conversation = await new_conversation(user)
    socket = await api_opened(api_connect, conversation, user)

    for kind in ("approve", "deny"):
        refused = await socket.command(
            {"type": kind, "tool_call_id": f"{their_answer.pk}:1:0", "id": kind}
        )
        assert (refused["code"], refused["command_id"]) == ("not_waiting", kind)
    unknown = await socket.command({"type": "approve", "tool_call_id": "999:1:0"})
    assert unknown["code"] == "not_waiting"
    assert (await ToolCall.objects.aget()).status == ToolCall.Status.AWAITING_APPROVAL


async def waiting_call(
    api_connect: ApiConnect, user: User, model_server: FakeOpenAI, settings: Any
) -> tuple[ApiSocket, ApiSocket, str]:
    """Two clients of a conversation whose answer waits for a decision on a tool call."""
    # A test that fails while the call waits would otherwise wait the default 300 s at teardown.
    settings.CHAT_APPROVAL_TIMEOUT = 10
    model_server.queue(
        sse(tool_calls_stream([("rename_conversation", json.dumps({"title": "Renamed"}))]))
    )
    model_server.queue(sse(text_stream("Done.")))
    conversation = await new_conversation(user)
    deciding = await api_opened(api_connect, conversation, user)
    watching = await api_opened(api_connect, conversation, user)
    await deciding.send({"type": "send", "text": "rename this"})
    frames = await deciding.receive_until(
        lambda frame: frame.get("status") == "awaiting_approval", timeout=5
    )
    return deciding, watching, frames[-1]["tool_call_id"]


async def test_approve_runs_the_waiting_call_and_every_client_sees_it(
    api_connect: ApiConnect, user: User, model_server: FakeOpenAI, settings: Any
) -> None:
    deciding, watching, call = await waiting_call(api_connect, user, model_server, settings)

    await deciding.send({"type": "approve", "tool_call_id": call})
    frames = await watching.receive_until(answer_finished)

    decided = [f for f in of_type(frames, "tool.status") if f["decision"]]
    assert decided[0]["decision"] == "approved" and decided[0]["decided_by"] == "alice"
    assert [f["status"] for f in of_type(frames, "tool.status")][-2:] == ["running", "succeeded"]
    await deciding.send({"type": "approve", "tool_call_id": call, "id": "again"})
    frames = await deciding.receive_until(lambda frame: frame["type"] == "error")
    assert (frames[-1]["code"], frames[-1]["command_id"]) == ("not_waiting", "again")


async def test_deny_tells_the_model_why(
    api_connect: ApiConnect, user: User, model_server: FakeOpenAI, settings: Any
) -> None:
    deciding, watching, call = await waiting_call(api_connect, user, model_server, settings)

    await deciding.send({"type": "deny", "tool_call_id": call, "reason": "Keep the name."})
    frames = await watching.receive_until(answer_finished)

    [denied] = [f for f in of_type(frames, "tool.status") if f["status"] == "denied"]
    assert (denied["decision"], denied["reason"]) == ("denied", "Keep the name.")
    assert frames[-1]["status"] == "complete"
    told = model_server.requests[-1]["messages"][-1]
    assert told["role"] == "tool" and "Keep the name." in told["content"]


def test_the_consumer_and_the_schema_declare_the_same_wire_form() -> None:
    # The consumer's COMMANDS and docs/api-schema.json each name every command and its fields.
    defs = SCHEMA["$defs"]
    declared = {name.removeprefix("command.") for name in defs if name.startswith("command.")}
    assert declared == set(COMMANDS)
    for name, fields in COMMANDS.items():
        shape = defs[f"command.{name}"]
        assert set(shape["properties"]) - {"type", "id"} == set(fields), name
        required = {field for field, (_, needed) in fields.items() if needed}
        assert set(shape.get("required", [])) - {"type"} == required, name
    # Every event of an answer has its shape there too, under its wire type.
    assert {f"event.{kind}" for kind in EVENT_TYPES} <= set(defs)
