"""The chat socket against the real ASGI app, the runner and the loopback model server."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from django.contrib.auth.models import User

from conversations import runner
from conversations.models import Conversation, Message, ToolCall
from tests.helpers.chat import (
    Connect,
    answer_id,
    appended_text,
    assistant_message,
    calls_of,
    finished,
    new_conversation,
    opened,
    receive_text,
    receive_until,
    send_and_wait,
    shown_text,
)
from tests.helpers.fake_openai import FakeOpenAI, error, sse, text_stream, tool_calls_stream

pytestmark = pytest.mark.django_db(transaction=True)


async def test_text_streams_in_several_frames_and_is_stored(
    connect: Connect, user: User, model_server: FakeOpenAI
) -> None:
    answer = "Seventeen times twenty-three is three hundred and ninety-one, I believe."
    model_server.queue(sse(text_stream(answer, usage=(12, 9)), delay=0.03))
    conversation = await new_conversation(user)
    socket = await opened(connect, conversation, user)

    frames = await send_and_wait(socket, "What is 17*23?")

    streamed = appended_text(frames, answer_id(frames[:2]))
    assert len(streamed) >= 3, "the answer should arrive in several frames"
    # Each piece of text is sent once, in order; any that came with the end of the answer is
    # shown in the finished message instead.
    assert answer.startswith("".join(streamed))
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
        "rename_conversation",
        "delete_conversation",
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

    def first(text: str) -> int:
        return next(number for number, frame in enumerate(frames) if text in frame)

    # The card appears, then its arguments fill in, before the call is complete.
    assert first('class="tool-card status-streaming"') < first("<dt>expression</dt>")
    assert first("<dt>expression</dt>") < first('class="tool-card status-pending"')


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
    await receive_text(socket, "word word")
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
    await receive_text(second, "word word")
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
        (json.dumps({"action": "dance", "message": "hi"}), "Unknown action"),
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
    await receive_text(socket, "word")
    await socket.send_json_to({"message": "second"})
    frames = await receive_until(socket, lambda f: 'id="chat-error"' in f)

    assert "still being written" in frames[-1]
    # The page empties this error once no answer runs; other errors stay until the next send.
    assert 'data-clears="answer-end"' in frames[-1]
    await receive_until(socket, finished)
    assert await Message.objects.filter(conversation=conversation, role="user").acount() == 1


async def test_an_accepted_message_is_acknowledged_without_a_new_form(
    connect: Connect, user: User, model_server: FakeOpenAI
) -> None:
    model_server.queue(sse(text_stream("Hello.")))
    conversation = await new_conversation(user)
    socket = await opened(connect, conversation, user)

    await socket.send_json_to({"message": "x" * 20_001})
    refused = await socket.receive_from()
    await socket.send_json_to({"message": "hi"})
    [ack] = await receive_until(socket, lambda f: 'id="composer-ack"' in f)

    assert "data-clears" not in refused
    # The form stays as the user left it; the error line is emptied.
    assert 'id="composer"' not in ack
    assert '<template id="composer-ack" hx-swap-oob="true"></template>' in ack
    assert '<p id="chat-error" class="chat-error" role="alert"></p>' in ack
    await receive_until(socket, finished)


async def test_someone_elses_conversation_is_closed_like_a_missing_one(
    connect: Connect, user: User, other_user: User
) -> None:
    conversation = await new_conversation(other_user)
    missing = Conversation(pk=conversation.pk + 1000)

    # Accepted, then closed with 4404: a page can tell its user (a refused handshake is only
    # 1006 to it, and htmx would reconnect for ever). Signed out, it is the same.
    for target, who in ((conversation, user), (missing, user), (conversation, None)):
        socket = await connect(target, who)
        connected, _ = await socket.connect()
        closed = await socket.receive_output()
        assert connected
        assert (closed["type"], closed["code"]) == ("websocket.close", 4404)


async def test_foreign_origin_sockets_are_refused(connect: Connect, user: User) -> None:
    conversation = await new_conversation(user)

    foreign = await connect(conversation, user, origin=b"http://evil.example")
    assert (await foreign.connect())[0] is False


async def test_reconnecting_gets_everything_so_far(
    connect: Connect, user: User, model_server: FakeOpenAI
) -> None:
    model_server.queue(sse(text_stream(" ".join(f"w{i}" for i in range(60))), delay=0.03))
    conversation = await new_conversation(user)
    socket = await opened(connect, conversation, user)
    await socket.send_json_to({"message": "go"})
    await receive_text(socket, "w5 ")
    await socket.disconnect()  # the tab closes; the run goes on

    await asyncio.sleep(0.5)
    again = await connect(conversation, user)
    await again.connect()
    snapshot = await again.receive_from()
    message = await assistant_message(conversation)
    before = shown_text(snapshot, message.pk)
    assert before.startswith("w0 w1 w2 w3 w4 w5")
    frames = await receive_until(again, finished)
    await runner.wait_for_local_runs()
    message = await assistant_message(conversation)
    assert message.status == Message.Status.COMPLETE
    assert message.content.endswith("w59")
    # What the page showed at once, then what it appended: every word once, in order.
    assert message.content.startswith(before + "".join(appended_text(frames, message.pk)))
    assert message.content.endswith("w59") and message.content.count("w59") == 1


async def test_a_stop_flag_set_by_another_process_stops_the_run(
    connect: Connect, user: User, model_server: FakeOpenAI
) -> None:
    model_server.queue(sse(text_stream(" ".join(["word"] * 200)), delay=0.05))
    conversation = await new_conversation(user)
    socket = await opened(connect, conversation, user)

    await socket.send_json_to({"message": "talk a lot"})
    await receive_text(socket, "word word")
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
    await receive_text(socket, "word word")

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
    await receive_text(first, "first first")
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


async def test_html_in_the_answer_arguments_and_question_is_shown_as_text(
    connect: Connect, user: User, model_server: FakeOpenAI
) -> None:
    payload = "</div><img src=x onerror=alert(1)><script>alert(2)</script>"
    model_server.queue(
        sse(
            tool_calls_stream([("calculator", json.dumps({"expression": payload}))], pieces=5),
            delay=0.01,
        )
    )
    model_server.queue(sse(text_stream(f"It says {payload} and more.", pieces=7), delay=0.01))
    conversation = await new_conversation(user)
    socket = await opened(connect, conversation, user)

    frames = await send_and_wait(socket, f"What is {payload}?")

    everything = "".join(frames)
    assert "<img" not in everything and "<script" not in everything
    assert "&lt;img src=x onerror=alert(1)&gt;" in everything, "shown, as text"
    message = await assistant_message(conversation)
    assert payload in message.content, "and stored as the model wrote it"
