"""/healthz, /readyz and /metrics as a load balancer, `manage.py serve` and Prometheus see them."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from channels.testing import HttpCommunicator
from django.test import Client

from chatsite.asgi import application
from conversations import drain
from tests.helpers.servers import accepts, daphne, free_port, wait_until

WORKER = f"{socket.gethostname()}:{os.getpid()}"


async def probe(path: str, *sent: tuple[bytes, bytes]) -> tuple[int, dict[bytes, bytes], bytes]:
    """A GET through the ASGI application, as Daphne hands it over: status, headers, body."""
    communicator = HttpCommunicator(
        application, "GET", path, headers=[(b"host", b"localhost"), *sent]
    )
    response = await communicator.get_response(timeout=10)
    headers = {name.lower(): value for name, value in response["headers"]}
    return response["status"], headers, response["body"]


async def readyz() -> tuple[int, dict[str, Any], float]:
    started = time.monotonic()
    status, _, body = await probe("/readyz")
    return status, json.loads(body), time.monotonic() - started


async def test_healthz_says_ok_without_the_database_a_login_or_a_cookie() -> None:
    # No django_db mark: any query would fail the test.
    status, headers, body = await probe("/healthz")

    assert (status, json.loads(body)) == (200, {"status": "ok"})
    assert b"set-cookie" not in headers
    assert headers[b"content-type"] == b"application/json"


def test_probes_answer_any_host_and_only_get(client: Client, settings: Any) -> None:
    settings.SECURE_SSL_REDIRECT = True

    response = client.get("/healthz", headers={"host": "10.0.0.5:8100"})
    posted = client.post("/healthz", headers={"host": "10.0.0.5:8100"})

    assert (response.status_code, response.json()) == (200, {"status": "ok"})
    assert response["Cache-Control"] == "no-store"
    assert not response.cookies
    assert (posted.status_code, posted["Allow"]) == (405, "GET, HEAD")
    # The pages still check the host.
    assert client.get("/login/", headers={"host": "10.0.0.5:8100"}).status_code == 400


@pytest.mark.django_db
async def test_readyz_checks_the_database_and_names_the_worker(settings: Any) -> None:
    settings.REDIS_URL = ""

    status, body, _ = await readyz()

    assert status == 200
    assert body == {"status": "ok", "checks": {"database": "ok"}, "worker": WORKER}


@pytest.mark.django_db
async def test_readyz_is_503_while_the_process_drains() -> None:
    drain.begin()
    try:
        status, body, _ = await readyz()
    finally:
        drain.reset()

    assert status == 503
    assert body == {"status": "draining", "draining": True, "worker": WORKER}
    assert (await readyz())[0] == 200


@pytest.fixture
def redis_server() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A Redis of the test's own, which it may stop, freeze and kill; its URL and process."""
    port = free_port()
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: accepts(port), 10, "redis-server started")
        yield f"redis://127.0.0.1:{port}/0", server
    finally:
        server.send_signal(signal.SIGCONT)
        server.kill()
        server.wait()


@pytest.mark.django_db
async def test_readyz_names_a_redis_that_hangs_or_is_down_within_the_bound(
    settings: Any, redis_server: tuple[str, subprocess.Popen[bytes]]
) -> None:
    url, server = redis_server
    settings.REDIS_URL = url
    settings.READYZ_TIMEOUT = 0.5

    status, body, _ = await readyz()
    assert status == 200
    assert body["checks"] == {"database": "ok", "redis": "ok"}

    # Frozen: it accepts connections and answers nothing.
    server.send_signal(signal.SIGSTOP)
    status, body, took = await readyz()
    assert status == 503
    assert body["status"] == "unavailable"
    assert body["checks"] == {"database": "ok", "redis": "no answer within 0.5 s"}
    assert took < 2

    server.send_signal(signal.SIGCONT)
    server.kill()
    server.wait()
    status, body, took = await readyz()
    assert status == 503
    assert body["checks"] == {"database": "ok", "redis": "ConnectionError: Connection refused"}
    assert took < 2


@pytest.mark.django_db
async def test_readyz_names_redis_when_nothing_listens_at_its_address(settings: Any) -> None:
    settings.REDIS_URL = f"redis://:a-secret@127.0.0.1:{free_port()}/0"

    status, body, _ = await readyz()

    assert status == 503
    assert body["checks"]["redis"] == "ConnectionError: Connection refused"
    assert "a-secret" not in json.dumps(body)


async def test_metrics_do_not_exist_without_a_token(settings: Any) -> None:
    settings.METRICS_TOKEN = ""

    status, _, _ = await probe("/metrics", (b"authorization", b"Bearer anything"))

    assert status == 404


async def test_metrics_need_the_token(settings: Any) -> None:
    settings.METRICS_TOKEN = "s3cret-token"

    missing, headers, _ = await probe("/metrics")
    wrong, _, _ = await probe("/metrics", (b"authorization", b"Bearer s3cret-tokem"))
    basic, _, _ = await probe("/metrics", (b"authorization", b"Basic czNjcmV0LXRva2Vu"))
    status, headers, body = await probe("/metrics", (b"authorization", b"Bearer s3cret-token"))

    assert (missing, wrong, basic) == (401, 403, 401)
    assert status == 200
    assert headers[b"content-type"].startswith(b"text/plain; version=")
    text = body.decode()
    assert 'chat_sockets_open{kind="page"}' in text
    assert "chat_upstream_first_event_seconds_bucket" in text
    assert 'chat_tool_calls_total{status="denied"}' in text


def get(url: str, path: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    """A GET as a load balancer sends it: to the worker's address, redirects not followed."""
    connection = http.client.HTTPConnection(url.removeprefix("http://"), timeout=10)
    try:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def test_a_worker_answers_probes_at_its_address_whatever_the_allowed_hosts(
    tmp_path: Path,
) -> None:
    env = {
        "SECRET_KEY": "probe-test-secret-key-" + "x" * 40,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "REDIS_URL": "",
        "ALLOWED_HOSTS": "chat.example.com",
        "SECURE_SSL_REDIRECT": "1",
        "SECURE_HSTS_SECONDS": "31536000",
        "METRICS_TOKEN": "scrape-me",
        "CHAT_SWEEP_INTERVAL": "0",
    }
    with daphne(env, log=tmp_path / "server.log") as url:
        # The pages are for chat.example.com, over HTTPS only.
        assert get(url, "/login/")[0] == 400
        assert get(url, "/login/", Host="chat.example.com")[0] == 301

        health = get(url, "/healthz")
        ready = get(url, "/readyz")
        scraped = get(url, "/metrics", Authorization="Bearer scrape-me")

    assert (health[0], json.loads(health[2])) == (200, {"status": "ok"})
    assert "Set-Cookie" not in health[1]
    assert ready[0] == 200
    body = json.loads(ready[2])
    assert body["checks"] == {"database": "ok"}
    # Another process than this test's.
    assert body["worker"].startswith(f"{socket.gethostname()}:")
    assert body["worker"] != WORKER
    assert scraped[0] == 200
    assert b"chat_answers_running 0.0" in scraped[2]
