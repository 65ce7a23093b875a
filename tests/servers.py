"""Real server processes for tests: Daphne serving the project, as `make run` does."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
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
