"""The embedded local model: llama.cpp's server on loopback, started as `make run` starts it."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User

from conversations import local_model, runner
from conversations.models import Conversation, Message
from tests.helpers.chat import Connect, appended_text

ROOT = Path(__file__).resolve().parent.parent
CRASHING_SERVER = Path(__file__).resolve().parent / "helpers" / "crashing_model_server.py"

pytestmark = pytest.mark.local_model


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def local_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    port = free_port()
    log = Path(tmp_path_factory.mktemp("local-model")) / "server.log"
    server = local_model.start_server(port=port, log_path=log)
    try:
        yield port
    finally:
        local_model.stop_server(server)


@pytest.fixture
def local_settings(local_server: int, settings: Any) -> None:
    settings.LLM_BACKEND = "local"
    settings.LOCAL_LLM_PORT = local_server
    settings.CHAT_CHECKPOINT_INTERVAL = 0.05


async def open_chat(connect: Connect, user: User) -> Any:
    conversation = await Conversation.objects.acreate(owner=user)
    chat = await connect(conversation, user)
    assert (await chat.connect())[0]
    await chat.receive_from()
    return conversation, chat


async def frames_until_done(chat: Any, timeout: float = 120) -> list[str]:
    frames: list[str] = []
    async with asyncio.timeout(timeout):
        while True:
            frames.append(await chat.receive_from(timeout=timeout))
            if 'class="message role-assistant status-complete"' in frames[-1]:
                return frames
            assert "status-failed" not in frames[-1], frames[-1]


@pytest.mark.django_db(transaction=True)
async def test_the_local_model_streams_an_answer_that_is_stored(
    connect: Connect, user: User, local_settings: None, settings: Any
) -> None:
    settings.LLM_MAX_TOKENS = 16
    conversation, chat = await open_chat(connect, user)

    await chat.send_json_to({"message": "Say hello in one short sentence."})
    frames = await frames_until_done(chat)
    await runner.wait_for_local_runs()

    answer = await Message.objects.aget(conversation=conversation, role="assistant")
    assert answer.status == Message.Status.COMPLETE
    assert answer.content.strip()
    assert answer.model == "SmolLM2-135M-Instruct"
    streamed = appended_text(frames, answer.pk)
    assert len(streamed) >= 2, "the answer should arrive in several frames"
    # Text that came with the end is shown in the finished message instead.
    assert answer.content.startswith("".join(streamed))
    assert 'class="model">SmolLM2-135M-Instruct<' in frames[-1]


@pytest.mark.django_db(transaction=True)
async def test_other_sockets_stay_responsive_while_the_local_model_writes(
    connect: Connect, user: User, other_user: User, local_settings: None, settings: Any
) -> None:
    settings.LLM_MAX_TOKENS = 96
    conversation, chat = await open_chat(connect, user)
    _, bystander = await open_chat(connect, other_user)

    await chat.send_json_to({"message": "Tell me a long story about a lighthouse keeper."})
    async with asyncio.timeout(60):
        while not await Message.objects.filter(
            conversation=conversation, status=Message.Status.STREAMING
        ).aexists():
            await asyncio.sleep(0.02)
    latencies = []
    for _ in range(5):
        started = time.perf_counter()
        await bystander.send_json_to({"action": "ping"})
        assert await bystander.receive_from() == '<template id="pong"></template>'
        latencies.append(time.perf_counter() - started)
    still_writing = await Message.objects.filter(
        conversation=conversation, status=Message.Status.STREAMING
    ).aexists()
    await frames_until_done(chat)
    await runner.wait_for_local_runs()

    print(f"ping round trips while generating: {[f'{x * 1000:.1f} ms' for x in latencies]}")
    assert still_writing, "the pings should have been answered while the model was writing"
    assert statistics.median(latencies) < 0.1


def test_missing_weights_give_one_clear_message(settings: Any) -> None:
    settings.LOCAL_LLM_MODEL_PATH = "/nonexistent/model.gguf"
    with pytest.raises(local_model.LocalModelError, match="LOCAL_LLM_MODEL_PATH points at"):
        local_model.server_command()


def test_a_server_that_cannot_start_gives_one_clear_message(tmp_path: Path, settings: Any) -> None:
    not_a_model = tmp_path / "broken.gguf"
    not_a_model.write_bytes(b"this is not a gguf file")
    settings.LOCAL_LLM_MODEL_PATH = str(not_a_model)
    with pytest.raises(local_model.LocalModelError, match="exited at start"):
        local_model.start_server(port=free_port(), log_path=tmp_path / "log")


def test_serve_reports_a_startup_failure_without_a_traceback(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    env = {
        **os.environ,
        "SECRET_KEY": "x",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "LOCAL_LLM_MODEL_PATH": "/nonexistent/model.gguf",
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "serve", "--port", str(free_port())],
        cwd=Path(__file__).resolve().parent.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "LOCAL_LLM_MODEL_PATH points at /nonexistent/model.gguf" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_server_ignores_our_port_and_model_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "8766")
    monkeypatch.setenv("model", "/elsewhere.gguf")
    monkeypatch.setenv("SECRET_KEY", "kept")
    environment = local_model.server_environment()
    assert "PORT" not in environment and "model" not in environment
    assert environment["SECRET_KEY"] == "kept"


def crashing_server(port: int, *, crash_on: int) -> list[str]:
    return [sys.executable, str(CRASHING_SERVER), "--port", str(port), "--crash-on", str(crash_on)]


async def answer_of(conversation: Conversation, *, timeout: float = 60) -> Message:
    """The conversation's latest answer, once it has finished."""
    async with asyncio.timeout(timeout):
        while True:
            answer = await Message.objects.filter(
                conversation=conversation, role="assistant"
            ).alatest("created_at")
            if not answer.in_progress:
                return answer
            await asyncio.sleep(0.05)


async def frames_until(chat: Any, text: str, timeout: float = 60) -> list[str]:
    """Frames received until one shows `text`."""
    frames: list[str] = []
    async with asyncio.timeout(timeout):
        while text not in (frames[-1] if frames else ""):
            frames.append(await chat.receive_from(timeout=timeout))
    return frames


@pytest.fixture
async def supervised(
    tmp_path: Path, settings: Any, request: pytest.FixtureRequest
) -> AsyncIterator[local_model.Supervisor]:
    """A supervised model server, as `manage.py serve` runs it; the fake one crashes when told.

    Parametrize indirectly with {"crash_on": N, "max_crashes": M} for the fake, or leave it
    out for the real llama.cpp server.
    """
    options = getattr(request, "param", None) or {}
    port = free_port()
    settings.LLM_BACKEND = "local"
    settings.LOCAL_LLM_PORT = port
    settings.LLM_MAX_RETRIES = 0
    settings.CHAT_CHECKPOINT_INTERVAL = 0.05
    command = None
    if "crash_on" in options:
        crash_on = options["crash_on"]
        command = lambda: crashing_server(port, crash_on=crash_on)  # noqa: E731
    supervisor = local_model.Supervisor(
        port=port,
        log_path=tmp_path / "local-model.log",
        command=command,
        backoff=(0.2,),
        max_crashes=options.get("max_crashes", 3),
    )
    await asyncio.to_thread(supervisor.start)
    local_model.set_supervisor(supervisor)
    try:
        yield supervisor
    finally:
        local_model.set_supervisor(None)
        await asyncio.to_thread(supervisor.stop)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("kill_with", [signal.SIGKILL, signal.SIGSEGV], ids=["SIGKILL", "SIGSEGV"])
async def test_a_model_killed_mid_answer_fails_it_says_why_and_comes_back(
    connect: Connect,
    user: User,
    supervised: local_model.Supervisor,
    settings: Any,
    kill_with: signal.Signals,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings.LLM_MAX_TOKENS = 300
    conversation, chat = await open_chat(connect, user)
    waiting, waiting_chat = await open_chat(connect, user)

    await chat.send_json_to({"message": "Tell me a long story about a lighthouse keeper."})
    async with asyncio.timeout(30):
        while not await Message.objects.filter(
            conversation=conversation, role="assistant", content__gt=""
        ).aexists():
            await asyncio.sleep(0.02)
    await waiting_chat.send_json_to({"message": "Say hello."})
    await frames_until(waiting_chat, "Queued")
    assert supervised.process is not None
    os.kill(supervised.process.pid, kill_with)
    killed_at = time.monotonic()

    frames = await frames_until(chat, "status-failed")
    crashed = await answer_of(conversation)
    assert crashed.status == Message.Status.FAILED
    assert crashed.error == (
        f"The local model crashed (signal {kill_with.name}) while writing this answer and is "
        "restarting: send your message again in a few seconds."
    )
    assert crashed.content, "the text written before the crash is kept"
    assert crashed.error in frames[-1]
    # The answer that was queued goes on once the server is back.
    queued = await answer_of(waiting)
    back_after = time.monotonic() - killed_at
    assert queued.status == Message.Status.COMPLETE, queued.error
    assert queued.content.strip()
    assert supervised.generation == 2 and supervised.state == local_model.ServerState.UP
    # One clear log line for the crash, with the server's last words.
    crash_logs = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(crash_logs) == 1
    assert crash_logs[0].startswith(f"The local model server died (signal {kill_with.name})")
    assert "restarting it in" in crash_logs[0] and "  | " in crash_logs[0]
    print(f"killed with {kill_with.name}: the queued answer completed {back_after:.1f} s later")

    await chat.send_json_to({"message": "Say hello again."})
    await frames_until(chat, "status-complete")
    assert (await answer_of(conversation)).status == Message.Status.COMPLETE


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("supervised", [{"crash_on": 2, "max_crashes": 2}], indirect=True)
async def test_a_model_that_keeps_crashing_is_given_up_and_answers_say_how_to_fix_it(
    connect: Connect, user: User, supervised: local_model.Supervisor
) -> None:
    # Each run of the fake server passes its self-test, then crashes on the first answer.
    conversation, chat = await open_chat(connect, user)

    await chat.send_json_to({"message": "one"})
    await frames_until(chat, "status-failed")
    first = await answer_of(conversation)
    assert first.error.startswith("The local model crashed (signal SIGSEGV) while writing")
    assert "make run" not in first.error

    async with asyncio.timeout(10):
        while supervised.state != local_model.ServerState.UP or supervised.generation < 2:
            await asyncio.sleep(0.05)
    await chat.send_json_to({"message": "two"})
    await frames_until(chat, "status-failed")
    second = await answer_of(conversation)
    assert supervised.state == local_model.ServerState.GAVE_UP
    given_up = (
        "The local model crashed 2 times within 60 s (last: signal SIGSEGV), so it is no longer "
        "restarted."
    )
    assert second.error.startswith(given_up)

    await chat.send_json_to({"message": "three"})
    frames = await frames_until(chat, "status-failed")
    third = await answer_of(conversation)
    assert third.error.startswith(given_up)
    assert "portable flags" in third.error and "OPENAI_BASE_URL" in third.error
    assert "OPENAI_BASE_URL" in frames[-1]


def test_the_startup_self_test_reports_a_crash_with_the_fix(tmp_path: Path, settings: Any) -> None:
    port = free_port()
    supervisor = local_model.Supervisor(
        port=port,
        log_path=tmp_path / "local-model.log",
        command=lambda: crashing_server(port, crash_on=1),
    )
    with pytest.raises(local_model.LocalModelError) as raised:
        supervisor.start()

    message = str(raised.value)
    assert message.startswith(
        "The local model crashed (signal SIGSEGV) on its first answer, the startup self-test."
    )
    assert "portable flags" in message and "OPENAI_BASE_URL" in message
    assert "about to run a kernel this CPU cannot" in message, "the log's last lines are shown"
    assert supervisor.process is not None and supervisor.process.poll() is not None


def test_serve_stops_with_one_message_when_the_model_crashes_at_start(tmp_path: Path) -> None:
    port = free_port()
    # `manage.py serve` as `make run` starts it, its model server swapped for the crashing one.
    launch = (
        "import sys; from conversations import local_model; "
        f"local_model.server_command = lambda port=None: {crashing_server(port, crash_on=1)!r}; "
        "from django.core.management import execute_from_command_line; "
        "execute_from_command_line(['manage.py', 'serve', '--port', sys.argv[1]])"
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "chatsite.settings",
        "SECRET_KEY": "x",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "LOCAL_LLM_PORT": str(port),
    }
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", launch, str(free_port())],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 1
    assert "The local model crashed (signal SIGSEGV) on its first answer" in result.stderr
    assert result.stderr.count("crashed") == 1, "one message, not a loop of them"
    assert "Traceback" not in result.stderr
    assert "Serving on" not in result.stdout, "Daphne never started"
    assert time.monotonic() - started < 30


def test_a_port_already_taken_gives_one_clear_message(tmp_path: Path) -> None:
    # What a model server left running by a killed `make run` does to the next one: without the
    # check, the new server fails to bind and the old one answers the self-test in its place.
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(local_model.LocalModelError, match=f"Port {port} .* already in use"):
            local_model.start_server(port=port, log_path=tmp_path / "log")
    assert not (tmp_path / "log").exists(), "no server was started"


def test_the_model_server_ends_with_a_parent_killed_with_sigkill(tmp_path: Path) -> None:
    """The local model server is started through with_parent.py, as a child that ends with it."""
    port = free_port()
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import os, subprocess, sys, time; "
            "child = subprocess.Popen([sys.executable, sys.argv[1], str(os.getpid()), "
            "'http.server', '--bind', '127.0.0.1', sys.argv[2]]); "
            "print(child.pid, flush=True); time.sleep(600)",
            str(Path(local_model.__file__).with_name("with_parent.py")),
            str(port),
        ],
        stdout=subprocess.PIPE,
    )
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    deadline = time.monotonic() + 20
    while not local_model.port_taken(port):
        assert time.monotonic() < deadline, "the child never listened"
        time.sleep(0.1)

    parent.kill()
    parent.wait()

    deadline = time.monotonic() + 10
    while local_model.port_taken(port):
        assert time.monotonic() < deadline, f"the child ({child}) outlived its parent"
        time.sleep(0.1)
