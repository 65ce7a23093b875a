"""MCP servers for the tests: the third-party ones the project installs (mcp-server-time from
PyPI, @modelcontextprotocol/server-everything from npm, `make mcp-servers`) and the SDK-written
fault server (tests/helpers/mcp_faults.py), as MCP_SERVERS_FILE entries."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
TIME_SERVER = Path(sys.executable).parent / "mcp-server-time"
EVERYTHING = ROOT / "tests" / "mcp_servers" / "node_modules" / ".bin" / "mcp-server-everything"

needs_everything = pytest.mark.skipif(
    not EVERYTHING.exists(),
    reason="@modelcontextprotocol/server-everything is not installed (make mcp-servers)",
)


def time_server(**options: Any) -> dict[str, Any]:
    return {"command": str(TIME_SERVER), "args": ["--local-timezone", "UTC"], **options}


def everything_stdio(**options: Any) -> dict[str, Any]:
    return {"command": str(EVERYTHING), "args": ["stdio"], **options}


def faults_stdio(markers: Path, **options: Any) -> dict[str, Any]:
    return {
        "command": sys.executable,
        "args": ["-m", "tests.helpers.mcp_faults"],
        "cwd": str(ROOT),
        "env": {"MARKERS": str(markers)},
        **options,
    }


def servers_file(folder: Path, servers: dict[str, Any]) -> Path:
    path = folder / "mcp.json"
    path.write_text(json.dumps({"mcpServers": servers}))
    return path


@contextmanager
def everything_http(port: int | None = None) -> Iterator[str]:
    """server-everything over streamable HTTP on a port of its own: its URL, once it listens."""
    port = port or free_port()
    process = subprocess.Popen(
        [str(EVERYTHING), "streamableHttp"],
        env={**os.environ, "PORT": str(port)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        deadline = time.monotonic() + 30
        for line in process.stderr:
            if "listening on port" in line:
                break
            if time.monotonic() > deadline:
                raise AssertionError("server-everything did not start listening")
        else:
            raise AssertionError(f"server-everything exited with {process.wait()}")
        # It logs every request: read on, or a full pipe would stop it.
        threading.Thread(target=process.stderr.read, daemon=True).start()
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        process.terminate()
        process.wait(timeout=10)


@contextmanager
def faults_http(markers: Path) -> Iterator[str]:
    """The fault server over streamable HTTP on a port of its own: its URL, once it listens."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.helpers.mcp_faults", "http", str(port)],
        cwd=ROOT,
        env={**os.environ, "MARKERS": str(markers)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert process.poll() is None, f"the fault server exited with {process.returncode}"
                assert time.monotonic() < deadline, "the fault server did not start listening"
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        process.terminate()
        process.wait(timeout=10)


def marked(markers: Path, name: str) -> list[str]:
    path = markers / name
    return path.read_text().splitlines() if path.exists() else []
