"""MCP servers' tools, end to end: offered as <server>__<tool>, asked about first, run over one
shared session, their progress streamed live (page and API), Stop and timeouts reaching the
server as cancellation, errors shown as errors, and a server that fails in any way costing
nothing but its own tools. Against real servers: mcp-server-time (PyPI),
@modelcontextprotocol/server-everything (npm) and an SDK-written one for the faults."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import Client
from prometheus_client import REGISTRY

from conversations import mcp_servers, runner
from conversations.mcp_servers import sessions
from conversations.models import Message
from tests.helpers.chat import (
    ApiConnect,
    Connect,
    answer_finished,
    api_opened,
    assistant_message,
    calls_of,
    finished,
    new_conversation,
    opened,
    rebuilt,
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
from tests.helpers.mcp import (
    everything_http,
    everything_stdio,
    faults_stdio,
    marked,
    needs_everything,
    servers_file,
    time_server,
)

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
async def configure(settings: Any, tmp_path: Path) -> AsyncIterator[Any]:
    """Point MCP_SERVERS_FILE at a file of these servers; they stop after the test."""

    def write(servers: dict[str, Any]) -> Path:
        path = servers_file(tmp_path, servers)
        settings.MCP_SERVERS_FILE = str(path)
        return path

    settings.CHAT_APPROVAL_TIMEOUT = 10
    yield write
    await mcp_servers.stop()


@pytest.fixture
def markers(tmp_path: Path) -> Path:
    folder = tmp_path / "markers"
    folder.mkdir()
    return folder


def call_of(name: str, arguments: dict[str, Any]) -> bytes:
    return sse(tool_calls_stream([(name, json.dumps(arguments))]))


async def test_a_third_party_stdio_server_is_offered_asks_first_and_answers(
    configure: Any, api_connect: ApiConnect, user: User, model_server: FakeOpenAI
) -> None:
    configure({"time": time_server()})
    model_server.queue(call_of("time__get_current_time", {"timezone": "Asia/Tokyo"}))
    model_server.queue(sse(text_stream("It is morning in Tokyo.")))
    conversation = await new_conversation(user)
    socket = await api_opened(api_connect, conversation, user)

    await socket.send({"type": "send", "text": "What time is it in Tokyo?"})
    frames = await socket.receive_until(
        lambda frame: frame["type"] == "tool.status" and frame["status"] == "awaiting_approval"
    )
    created = next(frame for frame in frames if frame["type"] == "tool.created")
    assert (created["name"], created["server"]) == ("time__get_current_time", "time")
    await socket.send({"type": "approve", "tool_call_id": created["tool_call_id"]})
    frames += await socket.receive_until(answer_finished)
    await runner.wait_for_local_runs()

    offered = {
        tool["function"]["name"]: tool["function"] for tool in model_server.requests[0]["tools"]
    }
    assert "calculator" in offered
    assert offered["time__get_current_time"]["parameters"]["required"] == ["timezone"]
    assert "time__convert_time" in offered
    [call] = await calls_of(await assistant_message(conversation))
    assert (call.server, call.status, call.decision, call.decided_by) == (
        "time",
        "succeeded",
        "approved",
        "alice",
    )
    assert call.structured_output["timezone"] == "Asia/Tokyo"
    assert '"timezone": "Asia/Tokyo"' in call.output
    # What the model got back is the server's text.
    assert model_server.requests[1]["messages"][-1]["content"] == call.output
    ended = [
        frame
        for frame in frames
        if frame["type"] == "tool.status" and frame["status"] == "succeeded"
    ]
    assert ended[0]["structured"]["timezone"] == "Asia/Tokyo"


async def test_an_error_result_is_a_failed_call_whose_text_the_model_reads(
    configure: Any, connect: Connect, user: User, model_server: FakeOpenAI
) -> None:
    configure({"time": time_server(requires_approval=False)})
    failed = {"server": "time", "status": "failed"}
    before = REGISTRY.get_sample_value("chat_mcp_calls_total", failed) or 0
    model_server.queue(call_of("time__get_current_time", {"timezone": "Mars/Olympus_Mons"}))
    model_server.queue(sse(text_stream("That is no time zone.")))
    conversation = await new_conversation(user)
    page = await opened(connect, conversation, user)

    await page.send_json_to({"message": "Time on Mars?"})
    frames = await receive_until(page, finished)
    await runner.wait_for_local_runs()

    [call] = await calls_of(await assistant_message(conversation))
    assert call.status == "failed"
    assert "Invalid timezone" in call.error
    assert model_server.requests[1]["messages"][-1]["content"] == call.output
    assert call.output.startswith("Error: ") and "Mars/Olympus_Mons" in call.output
    page_html = "".join(frames)
    assert 'class="tool-server"' in page_html and "Invalid timezone" in page_html
    assert (await assistant_message(conversation)).status == Message.Status.COMPLETE
    assert REGISTRY.get_sample_value("chat_mcp_calls_total", failed) == before + 1


async def test_the_responses_api_gets_the_same_tools_and_results(
    configure: Any, connect: Connect, user: User, model_server: FakeOpenAI
) -> None:
    configure({"time": time_server(requires_approval=False)})
    model_server.queue(
        sse(
            response_tool_calls_stream(
                [
                    (
                        "time__convert_time",
                        json.dumps(
                            {
                                "source_timezone": "UTC",
                                "time": "12:00",
                                "target_timezone": "Asia/Kolkata",
                            }
                        ),
                    )
                ]
            )
        )
    )
    model_server.queue(sse(response_text_stream("17:30 in Kolkata.")))
    conversation = await new_conversation(user, api_style="responses")
    page = await opened(connect, conversation, user)

    await page.send_json_to({"message": "Noon UTC in Kolkata?"})
    await receive_until(page, finished)
    await runner.wait_for_local_runs()

    offered = {tool["name"] for tool in model_server.requests[0]["tools"]}
    assert {"time__get_current_time", "time__convert_time"} <= offered
    [call] = await calls_of(await assistant_message(conversation))
    assert call.status == "succeeded" and "17:30" in call.output
    [output] = [
        item
        for item in model_server.requests[1]["input"]
        if item.get("type") == "function_call_output"
    ]
    assert output["output"] == call.output


@needs_everything
async def test_progress_streams_to_the_api_and_the_page(
    configure: Any, connect: Connect, api_connect: ApiConnect, user: User, model_server: FakeOpenAI
) -> None:
    configure({"everything": everything_stdio(requires_approval=False)})
    model_server.queue(
        call_of("everything__trigger-long-running-operation", {"duration": 2, "steps": 4})
    )
    model_server.queue(sse(text_stream("Done.")))
    conversation = await new_conversation(user)
    page = await opened(connect, conversation, user)
    socket = await api_opened(api_connect, conversation, user)

    await socket.send({"type": "send", "text": "Run the long operation"})
    frames = await socket.receive_until(answer_finished, timeout=30)
    page_frames = await receive_until(page, finished, timeout=30)
    await runner.wait_for_local_runs()

    progress = [
        (frame["progress"], frame["total"]) for frame in frames if frame["type"] == "tool.progress"
    ]
    # The server reports every 0.5 s: each report is its own event (a machine too busy to read
    # them apart may merge two, never reorder or repeat them).
    assert progress == sorted(set(progress)) and len(progress) >= 3
    assert set(progress) <= {(1, 4), (2, 4), (3, 4), (4, 4)}
    # The page's card showed the steps as a bar that moved while the call ran.
    bars = {
        value
        for frame in page_frames
        for value in re.findall(r'<progress max="100" value="(\d+)"', frame)
    }
    assert len(bars) >= 2 and bars <= {"25", "50", "75", "100"}
    [call] = await calls_of(await assistant_message(conversation))
    assert (call.status, call.progress_total) == ("succeeded", 4)
    assert (call.progress, 4) in {(p, t) for p, t in progress}
    assert "Long running operation completed" in call.output
    # A client rebuilding the answer from the events holds what the rows hold.
    mirror = rebuilt(frames, call.message_id)
    [mirrored] = mirror.calls.values()
    assert (mirrored.progress, mirrored.output) == (call.progress, call.output)


@needs_everything
async def test_images_structured_content_resource_links_and_an_error(
    configure: Any, connect: Connect, user: User, model_server: FakeOpenAI
) -> None:
    configure({"everything": everything_stdio(requires_approval=False)})
    model_server.queue(
        sse(
            tool_calls_stream(
                [
                    ("everything__get-tiny-image", "{}"),
                    ("everything__get-structured-content", json.dumps({"location": "Chicago"})),
                    ("everything__get-resource-links", json.dumps({"count": 2})),
                    ("everything__echo", json.dumps({"message": "<script>alert(1)</script>"})),
                    (
                        "everything__gzip-file-as-resource",
                        json.dumps({"name": "x", "data": "not a url", "outputType": "resource"}),
                    ),
                ]
            )
        )
    )
    model_server.queue(sse(text_stream("Here they are.")))
    conversation = await new_conversation(user)
    page = await opened(connect, conversation, user)

    await page.send_json_to({"message": "Show me everything"})
    frames = await receive_until(page, finished, timeout=30)
    await runner.wait_for_local_runs()

    image, structured, links, echo, error = await calls_of(await assistant_message(conversation))
    # The server's own error result: a failed call, its text what the model reads.
    assert error.status == "failed" and "Invalid URL" in error.error
    assert error.output.startswith("Error: ") and "Invalid URL" in error.output
    assert image.status == "succeeded" and "[image 1: image/png, " in image.output
    assert "shown to the user" in image.output
    [stored] = image.images
    assert stored["mime_type"] == "image/png" and stored["size"] > 100
    assert set(structured.structured_output) == {"temperature", "conditions", "humidity"}
    assert "[resource: " in links.output and "demo://resource/dynamic/" in links.output
    assert echo.output == "Echo: <script>alert(1)</script>"
    page_html = "".join(frames)
    assert "<script>alert(1)</script>" not in page_html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page_html


@needs_everything
async def test_a_streamable_http_server_streams_progress_and_is_reconnected_after_a_drop(
    configure: Any, api_connect: ApiConnect, user: User, model_server: FakeOpenAI
) -> None:
    with everything_http() as url:
        configure({"remote": {"url": url, "requires_approval": False}})
        model_server.queue(
            sse(
                tool_calls_stream(
                    [
                        (
                            "remote__trigger-long-running-operation",
                            json.dumps({"duration": 1, "steps": 2}),
                        ),
                        ("remote__get-sum", json.dumps({"a": 2, "b": 3})),
                    ]
                )
            )
        )
        model_server.queue(sse(text_stream("Done.")))
        conversation = await new_conversation(user)
        socket = await api_opened(api_connect, conversation, user)
        frames = await socket_answer(socket, "Run it remotely")

        progress = [
            (frame["progress"], frame["total"])
            for frame in frames
            if frame["type"] == "tool.progress"
        ]
        assert progress == sorted(set(progress)) and set(progress) <= {(1, 2), (2, 2)}
        assert progress, "the remote server's progress streamed"
        long_run, total = await calls_of(await assistant_message(conversation))
        assert (long_run.status, long_run.server) == ("succeeded", "remote")
        assert total.status == "succeeded" and "5" in total.output
        port = int(url.rsplit(":", 1)[1].split("/")[0])

    # The server went away: a call fails, honestly, and the server shows as down.
    server = mcp_servers.running().servers["remote"]  # type: ignore[union-attr]
    model_server.queue(call_of("remote__echo", {"message": "anyone?"}))
    model_server.queue(sse(text_stream("It is gone.")))
    await socket_answer(socket, "Echo")
    [call] = await calls_of(await assistant_message(conversation))
    assert call.status == "failed" and "'remote'" in call.error
    # Back on its port, it is reached again without a restart of the site.
    with everything_http(port):
        async with asyncio.timeout(40):
            while server.state != sessions.ServerState.UP:
                await asyncio.sleep(0.1)
        model_server.queue(call_of("remote__echo", {"message": "back"}))
        model_server.queue(sse(text_stream("It is back.")))
        await socket_answer(socket, "Echo again")
        [call] = await calls_of(await assistant_message(conversation))
        assert (call.status, call.output) == ("succeeded", "Echo: back")


async def socket_answer(socket: Any, text: str) -> list[dict[str, Any]]:
    await socket.send({"type": "send", "text": text})
    frames = await socket.receive_until(answer_finished, timeout=30)
    await runner.wait_for_local_runs()
    return frames


async def test_stop_during_a_progress_reporting_call_cancels_it_on_the_server(
    configure: Any, api_connect: ApiConnect, user: User, model_server: FakeOpenAI, markers: Path
) -> None:
    configure({"faults": faults_stdio(markers, requires_approval=False)})
    model_server.queue(call_of("faults__slow", {"seconds": 30}))
    conversation = await new_conversation(user)
    socket = await api_opened(api_connect, conversation, user)

    await socket.send({"type": "send", "text": "Work slowly"})
    await socket.receive_until(lambda frame: frame["type"] == "tool.progress")
    await socket.send({"type": "stop"})
    frames = await socket.receive_until(answer_finished)
    await runner.wait_for_local_runs()

    assert frames[-1]["status"] == "cancelled"
    [call] = await calls_of(await assistant_message(conversation))
    assert call.status == "cancelled" and call.progress is not None
    async with asyncio.timeout(10):
        while marked(markers, "slow") != ["started", "cancelled"]:
            await asyncio.sleep(0.05)
    # The session lives on for the next answer.
    model_server.queue(call_of("faults__echo", {"text": "still here"}))
    model_server.queue(sse(text_stream("Fine.")))
    await socket.send({"type": "send", "text": "Echo"})
    await socket.receive_until(answer_finished)
    await runner.wait_for_local_runs()
    [call] = await calls_of(await assistant_message(conversation))
    assert (call.status, call.output) == ("succeeded", "still here")


async def test_a_call_without_progress_times_out_and_is_cancelled_on_the_server(
    configure: Any, connect: Connect, user: User, model_server: FakeOpenAI, markers: Path
) -> None:
    configure({"faults": faults_stdio(markers, requires_approval=False, timeout=1)})
    model_server.queue(call_of("faults__quiet", {"seconds": 30}))
    model_server.queue(sse(text_stream("It took too long.")))
    conversation = await new_conversation(user)
    page = await opened(connect, conversation, user)

    await page.send_json_to({"message": "Be quiet"})
    await receive_until(page, finished, timeout=20)
    await runner.wait_for_local_runs()

    [call] = await calls_of(await assistant_message(conversation))
    assert (call.status, call.error) == ("failed", "the tool timed out after 1 s without progress")
    async with asyncio.timeout(10):
        while marked(markers, "quiet") != ["started", "cancelled"]:
            await asyncio.sleep(0.05)


async def test_progress_resets_the_timeout(
    configure: Any, connect: Connect, user: User, model_server: FakeOpenAI, markers: Path
) -> None:
    # 3 s of work with a 1 s timeout: each report every 0.1 s restarts it.
    configure({"faults": faults_stdio(markers, requires_approval=False, timeout=1)})
    model_server.queue(call_of("faults__slow", {"seconds": 3}))
    model_server.queue(sse(text_stream("Done.")))
    conversation = await new_conversation(user)
    page = await opened(connect, conversation, user)

    await page.send_json_to({"message": "Work"})
    await receive_until(page, finished, timeout=20)
    await runner.wait_for_local_runs()

    [call] = await calls_of(await assistant_message(conversation))
    assert (call.status, call.output) == ("succeeded", "worked 3 s")


async def test_a_flood_of_progress_is_merged(
    configure: Any, api_connect: ApiConnect, user: User, model_server: FakeOpenAI, markers: Path
) -> None:
    configure({"faults": faults_stdio(markers, requires_approval=False)})
    model_server.queue(call_of("faults__flood", {"count": 5000}))
    model_server.queue(sse(text_stream("Flooded.")))
    conversation = await new_conversation(user)
    socket = await api_opened(api_connect, conversation, user)

    await socket.send({"type": "send", "text": "Flood"})
    frames = await socket.receive_until(answer_finished, timeout=30)
    await runner.wait_for_local_runs()

    progress = [frame for frame in frames if frame["type"] == "tool.progress"]
    assert 1 <= len(progress) < 100
    [call] = await calls_of(await assistant_message(conversation))
    assert (call.status, call.output) == ("succeeded", "flooded 5000")


async def test_ten_megabytes_of_output_are_cut_with_a_note(
    configure: Any,
    settings: Any,
    connect: Connect,
    user: User,
    model_server: FakeOpenAI,
    markers: Path,
) -> None:
    configure({"faults": faults_stdio(markers, requires_approval=False)})
    settings.CHAT_TOOL_OUTPUT_LIMIT = 5000
    model_server.queue(call_of("faults__huge", {"megabytes": 10}))
    model_server.queue(sse(text_stream("That was a lot.")))
    conversation = await new_conversation(user)
    page = await opened(connect, conversation, user)

    await page.send_json_to({"message": "Everything at once"})
    await receive_until(page, finished, timeout=60)
    await runner.wait_for_local_runs()

    [call] = await calls_of(await assistant_message(conversation))
    note = "\n[The output was cut: 10,485,760 characters, of which the first 5,000 are shown.]"
    assert call.status == "succeeded" and call.output == "x" * 5000 + note
    assert call.structured_output is None
    assert model_server.requests[1]["messages"][-1]["content"] == call.output


async def test_a_server_that_crashes_mid_call_fails_the_call_and_is_restarted(
    configure: Any,
    connect: Connect,
    user: User,
    model_server: FakeOpenAI,
    markers: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    configure({"faults": faults_stdio(markers, requires_approval=False)})
    model_server.queue(
        sse(
            tool_calls_stream(
                [("faults__crash", "{}"), ("calculator", json.dumps({"expression": "6*7"}))]
            )
        )
    )
    model_server.queue(sse(text_stream("The server crashed.")))
    conversation = await new_conversation(user)
    page = await opened(connect, conversation, user)

    with caplog.at_level(logging.WARNING, logger="conversations.mcp"):
        await page.send_json_to({"message": "Crash it"})
        await receive_until(page, finished, timeout=20)
        await runner.wait_for_local_runs()
        crash, calculator = await calls_of(await assistant_message(conversation))
        assert (crash.status, crash.error) == (
            "failed",
            "the MCP server 'faults' closed the connection during the call",
        )
        assert (calculator.status, calculator.output) == ("succeeded", "42")
        assert (await assistant_message(conversation)).status == Message.Status.COMPLETE
        server = mcp_servers.running().servers["faults"]  # type: ignore[union-attr]
        async with asyncio.timeout(15):
            while server.state != sessions.ServerState.UP or server.restarts < 1:
                await asyncio.sleep(0.05)
    down = [record.getMessage() for record in caplog.records if "is down" in record.getMessage()]
    assert "MCP server faults is down: exited with code 3" in down[0]
    assert "about to crash on purpose" in down[0]


async def test_garbage_a_broken_schema_and_a_dead_server_cost_only_themselves(
    configure: Any,
    connect: Connect,
    user: User,
    model_server: FakeOpenAI,
    markers: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    settings: Any,
) -> None:
    settings.MCP_START_WAIT = 10
    configure(
        {
            "faults": faults_stdio(markers, requires_approval=False),
            "missing": {"command": str(tmp_path / "no-such-server")},
            "off": {"command": "never-started", "enabled": False},
        }
    )
    model_server.queue(sse(tool_calls_stream([("faults__garbage", "{}")])))
    model_server.queue(sse(text_stream("Answered.")))
    conversation = await new_conversation(user)
    page = await opened(connect, conversation, user)

    with caplog.at_level(logging.WARNING, logger="conversations.mcp"):
        await page.send_json_to({"message": "Go"})
        await receive_until(page, finished, timeout=20)
        await runner.wait_for_local_runs()

    offered = {tool["function"]["name"] for tool in model_server.requests[0]["tools"]}
    assert "faults__echo" in offered and "calculator" in offered
    assert "faults__broken_schema" not in offered
    assert not any(name.startswith(("missing__", "off__")) for name in offered)
    [call] = await calls_of(await assistant_message(conversation))
    assert (call.status, call.output) == ("succeeded", "answered after the garbage")
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "its tool 'broken_schema' has an input schema that is not valid JSON Schema" in logged
    assert "MCP server missing is down: exited with code 127" in logged
    assert "sent something unreadable" in logged
    servers = mcp_servers.running()
    assert servers is not None and set(servers.servers) == {"faults", "missing"}


async def test_a_server_that_hangs_on_start_is_left_out_after_the_wait(
    configure: Any,
    connect: Connect,
    user: User,
    model_server: FakeOpenAI,
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sessions, "START_TIMEOUT", 1.0)
    settings.MCP_START_WAIT = 0.5
    configure({"hangs": {"command": "sleep", "args": ["600"]}})
    model_server.queue(sse(text_stream("No tools from it.")))
    conversation = await new_conversation(user)
    page = await opened(connect, conversation, user)

    await page.send_json_to({"message": "Hello"})
    await receive_until(page, finished, timeout=20)
    await runner.wait_for_local_runs()

    offered = {tool["function"]["name"] for tool in model_server.requests[0]["tools"]}
    assert "calculator" in offered and not any(name.startswith("hangs__") for name in offered)
    server = mcp_servers.running().servers["hangs"]  # type: ignore[union-attr]
    async with asyncio.timeout(10):
        while server.state != sessions.ServerState.DOWN:
            await asyncio.sleep(0.05)
    assert server.last_error == "did not start (or answer) within 1 s"


async def test_only_the_allowed_tools_are_offered(
    configure: Any, connect: Connect, user: User, model_server: FakeOpenAI
) -> None:
    configure({"time": time_server(tools=["convert_time"])})
    model_server.queue(sse(text_stream("Hello.")))
    conversation = await new_conversation(user)
    page = await opened(connect, conversation, user)

    await page.send_json_to({"message": "Hi"})
    await receive_until(page, finished, timeout=20)
    await runner.wait_for_local_runs()

    offered = {tool["function"]["name"] for tool in model_server.requests[0]["tools"]}
    assert "time__convert_time" in offered and "time__get_current_time" not in offered


def test_a_file_that_cannot_be_used_stops_the_server_before_it_starts(
    settings: Any, tmp_path: Path
) -> None:
    path = servers_file(tmp_path, {"time": {"command": "x", "requires_approval": "yes"}})
    settings.MCP_SERVERS_FILE = str(path)
    with pytest.raises(SystemCheckError) as raised:
        call_command("check")
    assert (
        f"{path}: server 'time': key 'requires_approval': expected true or false, got \"yes\""
        in str(raised.value)
    )


async def test_a_client_that_drops_mid_progress_resumes_without_a_gap(
    configure: Any, api_connect: ApiConnect, user: User, model_server: FakeOpenAI, markers: Path
) -> None:
    configure({"faults": faults_stdio(markers, requires_approval=False)})
    model_server.queue(call_of("faults__slow", {"seconds": 3}))
    model_server.queue(sse(text_stream("Done slowly.")))
    conversation = await new_conversation(user)
    first = await api_opened(api_connect, conversation, user)

    await first.send({"type": "send", "text": "Work slowly"})
    before = await first.receive_until(lambda frame: frame["type"] == "tool.progress")
    await first.disconnect()
    await asyncio.sleep(0.5)  # progress goes on while no one listens
    second = await api_opened(api_connect, conversation, user)
    message_id = before[-1]["message_id"]
    await second.send({"type": "resume", "message_id": message_id, "after": before[-1]["seq"]})
    after = await second.receive_until(answer_finished, timeout=30)
    await runner.wait_for_local_runs()

    seqs = [frame["seq"] for frame in after if frame.get("message_id") == message_id]
    assert seqs == list(range(before[-1]["seq"] + 1, seqs[-1] + 1)), "no gap, no repeat"
    assert any(frame["type"] == "tool.progress" for frame in after)
    mirror = rebuilt(before + after, message_id)
    [call] = await calls_of(await assistant_message(conversation))
    assert (mirror.calls[(1, 0)].progress, mirror.calls[(1, 0)].output) == (
        call.progress,
        call.output,
    )
    assert mirror.content == "Done slowly."


async def test_the_admin_lists_each_server_and_each_calls_server(
    configure: Any,
    connect: Connect,
    user: User,
    model_server: FakeOpenAI,
    admin_client: Client,
    tmp_path: Path,
) -> None:
    configure(
        {
            "time": time_server(requires_approval=False),
            "missing": {"command": str(tmp_path / "no-such-server")},
            "off": {"url": "http://127.0.0.1:9/mcp", "enabled": False},
        }
    )
    model_server.queue(call_of("time__get_current_time", {"timezone": "UTC"}))
    model_server.queue(sse(text_stream("It is now.")))
    conversation = await new_conversation(user)
    page = await opened(connect, conversation, user)
    await page.send_json_to({"message": "Time?"})
    await receive_until(page, finished, timeout=20)
    await runner.wait_for_local_runs()
    missing = mcp_servers.running().servers["missing"]  # type: ignore[union-attr]
    async with asyncio.timeout(10):
        while missing.state != sessions.ServerState.DOWN:
            await asyncio.sleep(0.05)

    html = (
        await sync_to_async(admin_client.get)("/admin/conversations/toolcall/mcp-servers/")
    ).content.decode()
    found = re.findall(
        r'<tr class="mcp-server state-([a-z-]+)">\s*<td><strong>(\w+)</strong>', html
    )
    assert {name: state for state, name in found} == {
        "time": "up",
        "missing": "down",
        "off": "disabled",
    }
    assert "<code>time__get_current_time</code>, <code>time__convert_time</code>" in html
    assert "exited with code 127" in html
    listing = (
        await sync_to_async(admin_client.get)("/admin/conversations/toolcall/", {"server": "time"})
    ).content.decode()
    assert (
        "time__get_current_time" in listing
        and "/admin/conversations/toolcall/mcp-servers/" in listing
    )


@needs_everything
async def test_an_image_is_served_from_the_row_to_its_owner_only(
    configure: Any,
    connect: Connect,
    user: User,
    other_user: User,
    model_server: FakeOpenAI,
    client: Client,
) -> None:
    configure({"everything": everything_stdio(requires_approval=False)})
    model_server.queue(call_of("everything__get-tiny-image", {}))
    model_server.queue(sse(text_stream("The logo.")))
    conversation = await new_conversation(user)
    page = await opened(connect, conversation, user)

    await page.send_json_to({"message": "Show the logo"})
    frames = await receive_until(page, finished, timeout=30)
    await runner.wait_for_local_runs()

    [call] = await calls_of(await assistant_message(conversation))
    url = f"/tool-calls/{call.message_id}/1/0/images/0"
    shown = "".join(frames)
    assert f'<img src="{url}"' in shown
    assert "base64" not in shown and call.images[0]["data"][:40] not in shown
    await sync_to_async(client.force_login)(user)
    response = await sync_to_async(client.get)(url)
    assert response.status_code == 200 and response["Content-Type"] == "image/png"
    assert response.content.startswith(b"\x89PNG")
    assert response.content == base64.b64decode(call.images[0]["data"])
    assert response["X-Content-Type-Options"] == "nosniff"
    assert (await sync_to_async(client.get)(url.replace("images/0", "images/1"))).status_code == 404
    await sync_to_async(client.force_login)(other_user)
    assert (await sync_to_async(client.get)(url)).status_code == 404
    # The JSON export names the image but holds no data.
    await sync_to_async(client.force_login)(user)
    exported = (
        await sync_to_async(client.get)(f"/conversations/{conversation.pk}/export.json")
    ).content
    assert b'"mime_type": "image/png"' in exported or b'"mime_type":"image/png"' in exported
    assert call.images[0]["data"][:40].encode() not in exported


def test_images_that_are_not_what_they_say_or_too_large_are_described_not_shown() -> None:
    import mcp_types

    from conversations.mcp_servers.results import tool_result

    png = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 100).decode()
    script = base64.b64encode(b"<svg onload=alert(1)>").decode()
    result = tool_result(
        mcp_types.CallToolResult(
            content=[
                mcp_types.ImageContent(type="image", mime_type="image/png", data=png),
                mcp_types.ImageContent(type="image", mime_type="image/png", data=script),
                mcp_types.ImageContent(type="image", mime_type="image/svg+xml", data=script),
                mcp_types.ImageContent(type="image", mime_type="image/png", data=png * 20),
            ]
        ),
        image_limit=200,
    )
    assert [image["size"] for image in result.images] == [108]
    assert result.output.splitlines() == [
        "[image 1: image/png, 108 bytes, shown to the user]",
        "[image: image/png, 21 bytes, not shown: its bytes are not an image/png]",
        "[image: image/svg+xml, 21 bytes, not shown: "
        "only PNG, JPEG, GIF and WebP images are shown]",
        "[image: image/png, 2,160 bytes, not shown: larger than 200 bytes]",
    ]
