"""Real server processes for tests: Daphne serving the project, as `make run` does."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


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
