"""The chat socket against the real ASGI app, the runner and the loopback model server."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import pytest
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import User

from conversations import runner
from conversations.models import Conversation, Message, ToolCall
from tests.conftest import Connect
from tests.fake_openai import FakeOpenAI, error, sse, text_stream, tool_calls_stream

pytestmark = pytest.mark.django_db(transaction=True)


async def new_conversation(user: User) -> Conversation:
    return await Conversation.objects.acreate(owner=user)


async def opened(connect: Connect, conversation: Conversation, user: User) -> WebsocketCommunicator:
    """A connected chat socket whose snapshot frame has been read."""
    socket = await connect(conversation, user)
    connected, _ = await socket.connect()
    assert connected
    await socket.receive_from()
    return socket


async def receive_until(
    socket: WebsocketCommunicator, predicate: Any, timeout: float = 10
) -> list[str]:
    """Frames received until one satisfies `predicate` (a test failure if none does in time)."""
    frames: list[str] = []
    async with asyncio.timeout(timeout):
        while True:
            frame = await socket.receive_from(timeout=timeout)
            frames.append(frame)
            if predicate(frame):
                return frames


def finished(frame: str) -> bool:
    return 'data-status="streaming"' not in frame and "message role-assistant" in frame


async def send_and_wait(socket: WebsocketCommunicator, text: str) -> list[str]:
    """Send a message and receive frames until its answer is finished."""
    await socket.send_json_to({"message": text})
    frames = await receive_until(socket, lambda f: 'hx-swap-oob="beforeend"' in f)
    answer_id = re.findall(r'id="(message-\d+)" class="message role-assistant', frames[-1])[0]
    # Late frames of an earlier answer may still be queued; wait for this answer's end.
    frames += await receive_until(socket, lambda f: f'id="{answer_id}"' in f and finished(f))
    await runner.wait_for_local_runs()
    return frames


async def assistant_message(conversation: Conversation) -> Message:
    return await Message.objects.filter(
        conversation=conversation, role=Message.Role.ASSISTANT
    ).alatest("created_at")


async def calls_of(message: Message) -> list[ToolCall]:
    return [call async for call in message.tool_calls.order_by("step", "index")]


async def test_text_streams_in_several_frames_and_is_stored(
    connect: Connect, user: User, model_server: FakeOpenAI
) -> None:
    answer = "Seventeen times twenty-three is three hundred and ninety-one, I believe."
    model_server.queue(sse(text_stream(answer, usage=(12, 9)), delay=0.03))
    conversation = await new_conversation(user)
    socket = await opened(connect, conversation, user)

    frames = await send_and_wait(socket, "What is 17*23?")

    streamed = [f for f in frames if 'data-status="streaming"' in f and "role-assistant" in f]
    assert len(streamed) >= 3, "the answer should arrive in several frames"
    assert "Seventeen" in frames[-1] and "ninety-one" in frames[-1]
    message = await assistant_message(conversation)
    assert message.status == Message.Status.COMPLETE
    assert message.content == answer
    assert (message.input_tokens, message.output_tokens) == (12, 9)
    user_message = await Message.objects.aget(conversation=conversation, role="user")
    assert user_message.content == "What is 17*23?"
    await conversation.arefresh_from_db()
    assert conversation.title == "What is 17*23?"
    assert any('<h1 id="conversation-title">What is 17*23?</h1>' in f for f in frames)
    assert conversation.model == "fake-model"
    sent = model_server.requests[0]
    assert sent["model"] == "fake-model"
    assert sent["messages"][-1] == {"role": "user", "content": "What is 17*23?"}
    assert {tool["function"]["name"] for tool in sent["tools"]} == {
        "calculator",
        "current_time",
        "search_conversations",
    }


async def test_two_parallel_tool_calls_run_and_the_answer_follows(
    connect: Connect, user: User, model_server: FakeOpenAI
) -> None:
    model_server.queue(
        sse(
            tool_calls_stream(
                [
                    ("calculator", json.dumps({"expression": "17*23"})),
                    ("current_time", json.dumps({"timezone": "Asia/Tokyo"})),
                ],
                interleave=True,
            ),
            delay=0.02,
        )
    )
    model_server.queue(sse(text_stream("17*23 is 391, and Tokyo is on JST."), delay=0.01))
    conversation = await new_conversation(user)
    socket = await opened(connect, conversation, user)

    frames = await send_and_wait(socket, "what is 17*23 and what time is it in Tokyo?")

    message = await assistant_message(conversation)
    assert message.status == Message.Status.COMPLETE
    assert message.content == "17*23 is 391, and Tokyo is on JST."
    calculator, clock = await calls_of(message)
    assert (calculator.name, calculator.status) == ("calculator", ToolCall.Status.SUCCEEDED)
    assert calculator.parsed_arguments == {"expression": "17*23"}
    assert calculator.output == "391"
    assert calculator.started_at and calculator.finished_at
    assert (clock.name, clock.status) == ("current_time", ToolCall.Status.SUCCEEDED)
    assert "+09:00" in clock.output
    # The cards were shown while running and then with their results.
    assert any('class="tool-card status-' in f for f in frames[:-1])
    assert 'data-status="succeeded"' in frames[-1] and "391" in frames[-1]
    # The second request paired each call with its output, as Chat Completions requires.
    follow_up = model_server.requests[1]["messages"]
    assistant_turn = follow_up[-3]
    assert [c["function"]["name"] for c in assistant_turn["tool_calls"]] == [
        "calculator",
        "current_time",
    ]
    outputs = {m["tool_call_id"]: m["content"] for m in follow_up[-2:]}
    assert outputs[calculator.call_id] == "391"
    assert "+09:00" in outputs[clock.call_id]


async def test_arguments_show_while_they_stream(
    connect: Connect, user: User, model_server: FakeOpenAI
) -> None:
    arguments = json.dumps({"expression": "1234 * 5678 + 91011 - 1213 * 1415"})
    model_server.queue(sse(tool_calls_stream([("calculator", arguments)]), delay=0.08))
    model_server.queue(sse(text_stream("Done.")))
    conversation = await new_conversation(user)
    socket = await opened(connect, conversation, user)

    frames = await send_and_wait(socket, "compute it")

    streaming_cards = [f for f in frames if 'class="tool-card status-streaming"' in f]
    assert streaming_cards, "the card should appear before its arguments are complete"
    assert any("<dt>expression</dt>" in f for f in streaming_cards)


async def test_step_cap_ends_the_loop_and_says_so(
    connect: Connect, user: User, model_server: FakeOpenAI, settings: Any
) -> None:
    settings.LLM_MAX_STEPS = 2
    for _ in range(2):
        model_server.queue(
            sse(tool_calls_stream([("calculator", json.dumps({"expression": "1+1"}))]))
        )
    conversation = await new_conversation(user)
    socket = await opened(connect, conversation, user)

    frames = await send_and_wait(socket, "loop forever")

    message = await assistant_message(conversation)
    assert len(model_server.requests) == 2
    assert message.steps == 2
    assert "step limit" in message.error
    assert "step limit" in frames[-1]
    assert [call.status for call in await calls_of(message)] == ["succeeded", "succeeded"]


async def test_upstream_500_fails_the_message_and_the_socket_stays_usable(
    connect: Connect, user: User, model_server: FakeOpenAI
) -> None:
    model_server.queue(error(500, "The engine is overloaded"))
    model_server.queue(sse(text_stream("Back again.")))
    conversation = await new_conversation(user)
    socket = await opened(connect, conversation, user)

    frames = await send_and_wait(socket, "hello?")

    message = await assistant_message(conversation)
    assert message.status == Message.Status.FAILED
    assert "500" in message.error and "overloaded" in message.error
    assert "overloaded" in frames[-1]

    await send_and_wait(socket, "and now?")
    message = await assistant_message(conversation)
    assert (message.status, message.content) == (Message.Status.COMPLETE, "Back again.")


async def test_stream_cut_midway_keeps_the_partial_text(
    connect: Connect, user: User, model_server: FakeOpenAI
) -> None:
    model_server.queue(sse(text_stream("one two three four five six seven"), cut_after=4))
    conversation = await new_conversation(user)
    socket = await opened(connect, conversation, user)

    await send_and_wait(socket, "count")

    message = await assistant_message(conversation)
    assert message.status == Message.Status.FAILED
    assert message.content.startswith("one")
    assert "seven" not in message.content
    assert message.error


async def test_stop_closes_the_upstream_request_and_keeps_the_text(
    connect: Connect, user: User, model_server: FakeOpenAI
) -> None:
    model_server.queue(sse(text_stream(" ".join(["word"] * 200)), delay=0.05))
    conversation = await new_conversation(user)
    socket = await opened(connect, conversation, user)

    await socket.send_json_to({"message": "talk a lot"})
    await receive_until(socket, lambda f: "word word" in f)
    await socket.send_json_to({"action": "stop"})
    await receive_until(socket, finished)
    await runner.wait_for_local_runs()

    message = await assistant_message(conversation)
    assert message.status == Message.Status.CANCELLED
    assert message.content.startswith("word word")
    assert message.content.count("word") < 200
    await model_server.wait_for_closed_early()


async def test_stop_from_another_tab_stops_the_run(
    connect: Connect, user: User, model_server: FakeOpenAI
) -> None:
    model_server.queue(sse(text_stream(" ".join(["word"] * 200)), delay=0.05))
    conversation = await new_conversation(user)
    first = await opened(connect, conversation, user)
    second = await opened(connect, conversation, user)

    await first.send_json_to({"message": "talk a lot"})
    await receive_until(second, lambda f: "word word" in f)
    await second.send_json_to({"action": "stop"})
    await receive_until(first, finished)
    await runner.wait_for_local_runs()

    message = await assistant_message(conversation)
    assert message.status == Message.Status.CANCELLED


@pytest.mark.parametrize(
    ("frame", "shown"),
    [
        (json.dumps({"message": "   "}), "Type a message first."),
        (json.dumps({"message": "x" * 20_001}), "the limit is 20,000"),
        ("this is not json", "not JSON"),
        (json.dumps(["a", "list"]), "not a JSON object"),
        (json.dumps({"message": 42}), "must be text"),
    ],
)
async def test_bad_frames_get_a_clear_error_and_store_nothing(
    connect: Connect, user: User, model_server: FakeOpenAI, frame: str, shown: str
) -> None:
    conversation = await new_conversation(user)
    socket = await opened(connect, conversation, user)

    await socket.send_to(text_data=frame)
    reply = await socket.receive_from()

    assert 'id="chat-error"' in reply and shown in reply
    assert await Message.objects.filter(conversation=conversation).acount() == 0
    # Still usable afterwards.
    model_server.queue(sse(text_stream("Fine.")))
    await send_and_wait(socket, "a real question")
    assert (await assistant_message(conversation)).content == "Fine."


async def test_a_second_message_while_answering_is_refused(
    connect: Connect, user: User, model_server: FakeOpenAI
) -> None:
    model_server.queue(sse(text_stream(" ".join(["word"] * 40)), delay=0.05))
    conversation = await new_conversation(user)
    socket = await opened(connect, conversation, user)

    await socket.send_json_to({"message": "first"})
    await receive_until(socket, lambda f: "word" in f)
    await socket.send_json_to({"message": "second"})
    frames = await receive_until(socket, lambda f: 'id="chat-error"' in f)

    assert "still being written" in frames[-1]
    await receive_until(socket, finished)
    assert await Message.objects.filter(conversation=conversation, role="user").acount() == 1


async def test_someone_elses_conversation_is_closed_like_a_missing_one(
    connect: Connect, user: User, other_user: User
) -> None:
    conversation = await new_conversation(other_user)
    missing = Conversation(pk=conversation.pk + 1000)

    for target in (conversation, missing):
        socket = await connect(target, user)
        connected, code = await socket.connect()
        assert (connected, code) == (False, 4404)


async def test_anonymous_and_foreign_origin_sockets_are_refused(
    connect: Connect, user: User
) -> None:
    conversation = await new_conversation(user)

    anonymous = await connect(conversation, None)
    assert (await anonymous.connect())[0] is False
    foreign = await connect(conversation, user, origin=b"http://evil.example")
    assert (await foreign.connect())[0] is False


async def test_reconnecting_gets_everything_so_far(
    connect: Connect, user: User, model_server: FakeOpenAI
) -> None:
    model_server.queue(sse(text_stream(" ".join(f"w{i}" for i in range(60))), delay=0.03))
    conversation = await new_conversation(user)
    socket = await opened(connect, conversation, user)
    await socket.send_json_to({"message": "go"})
    await receive_until(socket, lambda f: "w5 " in f)
    await socket.disconnect()  # the tab closes; the run goes on

    await asyncio.sleep(0.5)
    again = await connect(conversation, user)
    await again.connect()
    snapshot = await again.receive_from()
    assert "w0 w1 w2 w3 w4 w5" in snapshot
    await receive_until(again, finished)
    await runner.wait_for_local_runs()
    message = await assistant_message(conversation)
    assert message.status == Message.Status.COMPLETE
    assert message.content.endswith("w59")


async def test_a_stop_flag_set_by_another_process_stops_the_run(
    connect: Connect, user: User, model_server: FakeOpenAI
) -> None:
    model_server.queue(sse(text_stream(" ".join(["word"] * 200)), delay=0.05))
    conversation = await new_conversation(user)
    socket = await opened(connect, conversation, user)

    await socket.send_json_to({"message": "talk a lot"})
    await receive_until(socket, lambda f: "word word" in f)
    # What services.stop_request does in a Daphne process that does not run this answer.
    await Message.objects.filter(conversation=conversation, role="assistant").aupdate(
        stop_requested=True
    )
    await receive_until(socket, finished)
    await runner.wait_for_local_runs()

    message = await assistant_message(conversation)
    assert message.status == Message.Status.CANCELLED
    assert 0 < message.content.count("word") < 200


async def test_deleting_a_conversation_mid_answer_ends_the_run_quietly(
    connect: Connect, user: User, model_server: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    from asgiref.sync import sync_to_async

    from conversations import services

    model_server.queue(sse(text_stream(" ".join(["word"] * 200)), delay=0.05))
    conversation = await new_conversation(user)
    socket = await opened(connect, conversation, user)
    await socket.send_json_to({"message": "talk a lot"})
    await receive_until(socket, lambda f: "word word" in f)

    await sync_to_async(services.conversation_delete)(conversation=conversation)
    await runner.wait_for_local_runs()

    assert await Message.objects.acount() == 0
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]
    await model_server.wait_for_closed_early()


async def test_answers_from_the_local_model_wait_their_turn(
    connect: Connect, user: User, fake_openai: FakeOpenAI, settings: Any
) -> None:
    # The loopback server stands in for llama.cpp's server at the local model's address.
    settings.LLM_BACKEND = "local"
    settings.LOCAL_LLM_PORT = int(fake_openai.base_url.rsplit(":", 1)[1].split("/")[0])
    settings.LLM_MAX_RETRIES = 0
    settings.CHAT_CHECKPOINT_INTERVAL = 0.05
    fake_openai.queue(sse(text_stream(" ".join(["first"] * 30)), delay=0.05))
    fake_openai.queue(sse(text_stream("second answer")))
    one, two = await new_conversation(user), await new_conversation(user)
    first = await opened(connect, one, user)
    second = await opened(connect, two, user)

    await first.send_json_to({"message": "go first"})
    await receive_until(first, lambda f: "first first" in f)
    await second.send_json_to({"message": "go second"})
    queued = await receive_until(second, lambda f: 'data-status="queued"' in f)
    assert "Queued" in queued[-1]
    await receive_until(second, lambda f: 'data-status="streaming"' in f)
    # By the time the second answer starts, the first one is finished.
    first_answer = await assistant_message(one)
    assert first_answer.status == Message.Status.COMPLETE
    await receive_until(second, finished)
    await runner.wait_for_local_runs()

    second_answer = await assistant_message(two)
    assert (second_answer.status, second_answer.content) == ("complete", "second answer")
    assert second_answer.model == "SmolLM2-135M-Instruct"
    assert fake_openai.requests[1]["model"] == "SmolLM2-135M-Instruct"
    assert fake_openai.requests[0]["max_tokens"] == 512


async def test_ping_is_answered(connect: Connect, user: User) -> None:
    conversation = await new_conversation(user)
    socket = await opened(connect, conversation, user)
    await socket.send_json_to({"action": "ping"})
    assert await socket.receive_from() == '<template id="pong"></template>'


async def test_an_unreachable_local_model_says_how_to_start_it(
    connect: Connect, user: User, settings: Any
) -> None:
    import socket as sockets

    with sockets.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        unused_port = probe.getsockname()[1]
    settings.LLM_BACKEND = "local"
    settings.LOCAL_LLM_PORT = unused_port
    settings.LLM_MAX_RETRIES = 0
    conversation = await new_conversation(user)
    socket = await opened(connect, conversation, user)

    frames = await send_and_wait(socket, "hello?")

    message = await assistant_message(conversation)
    assert message.status == Message.Status.FAILED
    assert message.error.startswith("Could not reach the model server")
    assert "make run" in message.error and "make run" in frames[-1]
