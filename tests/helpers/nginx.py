"""nginx for the tests, configured by the shipped deploy/nginx.conf with only its ports changed."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.servers import ROOT, accepts, free_port, wait_until

SHIPPED = ROOT / "deploy" / "nginx.conf"
# The ports deploy/nginx.conf names: where nginx listens, and the workers'.
LISTEN = 8080
WORKER_PORTS = (8100, 8101, 8102)


def nginx_binary() -> str:
    """nginx's path; a skip where it is not installed, a failure in CI, which installs it."""
    found = shutil.which("nginx", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")
    if found:
        return found
    message = "nginx is missing: `make test` installs Debian's nginx package when run as root"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def site_config(listen: int, workers: list[int]) -> str:
    """deploy/nginx.conf with its ports changed, and nothing else."""
    text = SHIPPED.read_text()
    for old, new in [
        (f"listen {LISTEN};", f"listen {listen};"),
        *(
            (f"server 127.0.0.1:{old} ", f"server 127.0.0.1:{new} ")
            for old, new in zip(WORKER_PORTS, workers, strict=True)
        ),
    ]:
        assert text.count(old) == 1, f"deploy/nginx.conf should have `{old}` once"
        text = text.replace(old, new)
    return text


def main_config(directory: Path, site: str) -> None:
    """An nginx.conf that keeps everything in `directory` and includes `site` in its http block,
    as Debian's /etc/nginx/nginx.conf includes conf.d/*.conf."""
    (directory / "conf.d").mkdir()
    (directory / "conf.d" / "chat.conf").write_text(site)
    temp = "\n".join(
        f"    {kind}_temp_path {directory / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    main = directory / "nginx.conf"
    main.write_text(
        f"pid {directory / 'nginx.pid'};\n"
        "worker_processes 2;\n"
        "events { worker_connections 512; }\n"
        "http {\n"
        f"    access_log {directory / 'access.log'};\n"
        f"{temp}\n"
        f"    include {directory / 'conf.d' / '*.conf'};\n"
        "}\n"
    )


def nginx_command(directory: Path, *arguments: str) -> list[str]:
    return [
        nginx_binary(),
        "-p",
        str(directory),
        "-e",
        str(directory / "error.log"),
        "-c",
        str(directory / "nginx.conf"),
        *arguments,
    ]


@contextlib.contextmanager
def nginx(directory: Path, workers: list[int]) -> Iterator[str]:
    """nginx serving deploy/nginx.conf in front of `workers`; its base URL."""
    port = free_port()
    directory.mkdir(exist_ok=True)
    main_config(directory, site_config(port, workers))
    checked = subprocess.run(nginx_command(directory, "-t"), capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    server = subprocess.Popen(
        nginx_command(directory, "-g", "daemon off;"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: server.poll() is not None or accepts(port), 10, "nginx started")
        assert server.poll() is None, (directory / "error.log").read_text()
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=10)
