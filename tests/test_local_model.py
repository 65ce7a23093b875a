"""The embedded local model: llama.cpp's server on loopback, started as `make run` starts it."""

from __future__ import annotations

import asyncio
import socket
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User

from conversations import local_model, runner
from conversations.models import Conversation, Message
from tests.conftest import Connect

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
    streamed = [f for f in frames if 'data-status="streaming"' in f and "role-assistant" in f]
    assert len(streamed) >= 2, "the answer should arrive in several frames"
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
