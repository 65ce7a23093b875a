"""Real server processes for tests: Daphne serving the project, as `make run` does, and the
environment they run in."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.helpers.fake_openai import FakeOpenAI

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def migrate(env: dict[str, str]) -> None:
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput"],
        cwd=ROOT,
        env={**os.environ, **env},
        check=True,
        capture_output=True,
    )


def shared_database_url() -> str:
    """The test database (PostgreSQL), which the server processes share with the test."""
    from django.db import connection

    db = connection.settings_dict
    return f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


def site_env(fake_openai: FakeOpenAI, database: Path | str, **settings: str) -> dict[str, str]:
    """The environment of a site's processes whose model is the loopback server `fake_openai`:
    its database (a SQLite file, or a URL), then `settings` added or replaced."""
    return {
        "DATABASE_URL": database if isinstance(database, str) else f"sqlite:///{database}",
        "OPENAI_BASE_URL": fake_openai.base_url,
        "OPENAI_API_KEY": "test-key",
        "LLM_MODEL": "fake-model",
        "LLM_MAX_RETRIES": "0",
        **settings,
    }


def shared_server_env(fake_openai: FakeOpenAI) -> dict[str, str]:
    """Settings of a server process on the tests' database and Redis, its model `fake_openai`."""
    from django.conf import settings

    return site_env(
        fake_openai,
        shared_database_url(),
        # The test's own, which signed the session cookies the pages send.
        SECRET_KEY=settings.SECRET_KEY,
        REDIS_URL=os.environ["REDIS_URL"],
        REDIS_PREFIX=settings.REDIS_PREFIX,
        # The tests' own processes sweep only when asked; these sweep as production does.
        CHAT_SWEEP_INTERVAL="2",
    )


def manage_shell(env: dict[str, str], code: str) -> str:
    """Run Python in `manage.py shell` with `env`; the last line it printed."""
    ran = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=ROOT,
        env={**os.environ, **env},
        check=True,
        capture_output=True,
        text=True,
    )
    # The last line: django-axes announces itself on the first.
    return ran.stdout.splitlines()[-1]


@contextlib.contextmanager
def daphne(env: dict[str, str], *, log: Path | None = None, serve: bool = False) -> Iterator[str]:
    """Daphne serving the project with `env` added to the environment; its base URL.

    With `serve`, started as `make run` does, through `manage.py serve`.
    """
    with daphne_process(env, log=log, serve=serve) as (url, _):
        yield url


@contextlib.contextmanager
def daphne_process(
    env: dict[str, str], *, log: Path | None = None, serve: bool = False
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Daphne as `daphne` (or `manage.py serve`) starts it; its base URL and its process."""
    port = free_port()
    executable = shutil.which("daphne", path=str(Path(sys.executable).parent))
    assert executable, "daphne is installed with the project"
    output = log.open("wb") if log else subprocess.DEVNULL
    command = (
        [sys.executable, "manage.py", "serve", "--port", str(port)]
        if serve
        else [executable, "-b", "127.0.0.1", "-p", str(port), "chatsite.asgi:application"]
    )
    server = subprocess.Popen(
        command,
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=output,
        stderr=subprocess.STDOUT if log else subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert server.poll() is None, f"Daphne exited with {server.returncode}"
                assert time.monotonic() < deadline, "Daphne did not start"
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}", server
    finally:
        server.terminate()
        server.wait(timeout=10)
        if log:
            output.close()  # type: ignore[union-attr]


class CuttableProxy:
    """A TCP proxy in front of a server whose WebSocket connections can be dropped, and new
    connections refused, as a network that goes away does."""

    def __init__(self, target: str) -> None:
        host, port = target.removeprefix("http://").split(":")
        self.target = (host, int(port))
        self.refusing = False
        self.websockets: list[socket.socket] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self.accept, daemon=True).start()

    def cut(self) -> None:
        """Drop every open WebSocket connection without a closing handshake."""
        for connection in self.websockets:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        self.websockets.clear()

    def close(self) -> None:
        self.cut()
        self.listener.close()

    def accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self.listener.accept()
                threading.Thread(target=self.connect, args=(client,), daemon=True).start()

    def connect(self, client: socket.socket) -> None:
        if self.refusing:
            client.close()
            return
        upstream = socket.create_connection(self.target)
        first = client.recv(65536)
        if first.startswith(b"GET /ws/"):
            self.websockets += [client, upstream]
        upstream.sendall(first)
        threading.Thread(target=self.pump, args=(upstream, client), daemon=True).start()
        self.pump(client, upstream)
        client.close()
        upstream.close()

    @staticmethod
    def pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)


@contextlib.contextmanager
def cuttable_proxy(target: str) -> Iterator[CuttableProxy]:
    proxy = CuttableProxy(target)
    try:
        yield proxy
    finally:
        proxy.close()


def consecutive_free_ports(count: int) -> int:
    """The first of `count` consecutive ports nothing listens on, below the ephemeral range (an
    outgoing connection of any process on the machine may take a port in it before a server
    started on it binds)."""
    try:
        ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except OSError:
        ephemeral = 32768
    for _ in range(200):
        first = random.randrange(10000, ephemeral - count)
        try:
            with contextlib.ExitStack() as probes:
                for port in range(first, first + count):
                    probe = probes.enter_context(socket.socket())
                    probe.bind(("127.0.0.1", port))
        except OSError:
            continue
        return first
    raise RuntimeError(f"no {count} consecutive free ports")


def accepts(port: int) -> bool:
    """Whether something accepts connections on the port."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def children(pid: int) -> list[int]:
    """The process ids of a process's children (Linux)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(child) for child in text.split()]


def alive(pid: int) -> bool:
    """Whether the process runs (a zombie does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def worker_pids(parent: int) -> dict[int, int]:
    """The workers of a `manage.py serve --workers N` by port: port -> pid."""
    found = {}
    for pid in children(parent):
        try:
            arguments = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"--worker-of" in arguments and alive(pid):
            found[int(arguments[arguments.index(b"--port") + 1])] = pid
    return found


@dataclass
class Workers:
    """A running `manage.py serve --workers N`: its process, its workers' ports and its log."""

    process: subprocess.Popen[bytes]
    ports: list[int]
    log: Path

    @property
    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{port}" for port in self.ports]

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what} within {timeout:g} s"
        time.sleep(0.1)


@contextlib.contextmanager
def serve_workers(env: dict[str, str], *, workers: int, log: Path) -> Iterator[Workers]:
    """`manage.py serve --workers N` with `env` added to the environment, once every worker
    accepts connections and the parent has seen each one ready (it supervises them from then
    on: a worker killed before is a failed start); SIGTERM (drain and stop) at the end, SIGKILL
    if it does not exit."""
    first = consecutive_free_ports(workers)
    ports = list(range(first, first + workers))
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "manage.py", "serve", "--workers", str(workers), "--port", str(first)],
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        served = Workers(process, ports, log)
        pids: list[int] = []
        try:
            wait_until(
                lambda: (
                    process.poll() is not None
                    or (
                        all(accepts(port) for port in ports)
                        and served.output().count(" is serving.") >= workers
                    )
                ),
                90,
                "the workers accept connections",
            )
            assert process.poll() is None, f"exited ({process.returncode}):\n{served.output()}"
            yield served
        finally:
            pids = list(worker_pids(process.pid).values())
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=90)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            for pid in pids:
                if alive(pid):
                    os.kill(pid, signal.SIGKILL)
