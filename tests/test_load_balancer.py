"""nginx, configured by the shipped deploy/nginx.conf, in front of three workers on PostgreSQL and
Redis: everything below goes through nginx only.

Pages are spread over the workers; a page reloaded onto another worker follows the answer live
and misses nothing; Stop over the API socket reaches the answer on another worker; a killed
worker is skipped; a client cannot forge the scheme or address nginx forwards. The file is also
loaded with its TLS lines turned on, and its timeouts are checked against the app's. The worker
tests run in `make test`'s PostgreSQL + Redis pass; all need nginx (`make test` installs it).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import re
import shutil
import signal
import subprocess
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from daphne.server import Server
from django.conf import settings
from django.contrib.auth.models import User
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from conversations.api.tokens import token_create
from conversations.models import Conversation, Message
from tests.helpers.chat import appended_text, finished, session_cookie, shown_text
from tests.helpers.fake_openai import FakeOpenAI, sse, text_stream
from tests.helpers.nginx import (
    SHIPPED,
    main_config,
    nginx,
    nginx_binary,
    nginx_command,
    site_config,
)
from tests.helpers.pages import Page
from tests.helpers.servers import daphne_process, free_port, shared_server_env

needs_backends = pytest.mark.skipif(
    not (os.environ.get("REDIS_URL") and os.environ.get("DATABASE_URL", "").startswith("post")),
    reason="needs PostgreSQL and Redis (DATABASE_URL, REDIS_URL): make test's second pass",
)


@dataclass
class Worker:
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    def connections(self, path: str) -> int:
        """The WebSockets to `path` this worker accepted (Daphne's access log)."""
        return self.log.read_text().count(f'"WSCONNECT {path}"')


@contextlib.contextmanager
def three_workers(env: dict[str, str], directory: Path) -> Iterator[list[Worker]]:
    """Three workers of the app on PostgreSQL and Redis, each started as `manage.py serve`."""
    # Unbuffered, so that each socket's line is in the log by the time its page has opened.
    env = env | {"PYTHONUNBUFFERED": "1"}
    logs = [directory / f"worker-{number}.log" for number in range(3)]
    servers = [daphne_process(env, log=log, serve=True) for log in logs]
    with contextlib.ExitStack() as stack:
        # Started side by side: each takes seconds to import the project.
        with ThreadPoolExecutor(len(servers)) as pool:
            starting = [pool.submit(server.__enter__) for server in servers]
        for server, started in zip(servers, starting, strict=True):
            if started.exception() is None:
                stack.push(server.__exit__)
        workers = []
        for started, log in zip(starting, logs, strict=True):
            url, process = started.result()
            workers.append(Worker(int(url.rsplit(":", 1)[1]), process, log))
        yield workers


@dataclass
class Site:
    url: str
    workers: list[Worker]

    def workers_holding(self, path: str) -> list[int]:
        """Which workers (by number) hold the sockets opened to `path`, one entry per socket."""
        return [
            number
            for number, worker in enumerate(self.workers)
            for _ in range(worker.connections(path))
        ]


@pytest.fixture
def worker_settings() -> dict[str, str]:
    """Settings the workers get besides shared_server_env's; a test parametrizes it to add some."""
    return {}


@pytest.fixture
def site(
    fake_openai: FakeOpenAI, tmp_path: Path, worker_settings: dict[str, str]
) -> Iterator[Site]:
    nginx_binary()
    with three_workers(shared_server_env(fake_openai) | worker_settings, tmp_path) as workers:
        (tmp_path / "nginx").mkdir()
        with nginx(tmp_path / "nginx", [worker.port for worker in workers]) as url:
            yield Site(url, workers)


def chat_path(conversation: Conversation) -> str:
    return f"/ws/conversations/{conversation.pk}/"


def fetch(url: str, cookie: str = "") -> str:
    """GET `url`, as a browser loads a page or a file of it; its body, after a 200."""
    request = urllib.request.Request(url, headers={"Cookie": cookie} if cookie else {})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
        return str(response.read().decode())


@pytest.fixture
async def open_page(user: User) -> AsyncIterator[Any]:
    """Open a conversation's page through nginx as `user`'s browser does: its HTML, its
    stylesheet, then its socket."""
    cookie = (await sync_to_async(session_cookie)(user)).decode()
    opened: list[Page] = []

    async def open_page(site: Site, conversation: Conversation) -> Page:
        html = await asyncio.to_thread(
            fetch, f"{site.url}/conversations/{conversation.pk}/", cookie
        )
        assert chat_path(conversation) in html
        await asyncio.to_thread(fetch, f"{site.url}/static/chat.css")
        opened.append(await Page.open(site.url, conversation.pk, cookie))
        return opened[-1]

    yield open_page
    for page in opened:
        await page.socket.close()


@needs_backends
@pytest.mark.django_db(transaction=True)
async def test_pages_are_spread_over_the_workers_and_each_gets_its_answer(
    site: Site, fake_openai: FakeOpenAI, user: User, open_page: Any
) -> None:
    for number in range(3):
        fake_openai.queue(sse(text_stream(f"Answer number {number}."), delay=0.02))
    conversations = [await Conversation.objects.acreate(owner=user) for _ in range(3)]
    pages = [await open_page(site, conversation) for conversation in conversations]

    # Each page's socket (and so each answer it starts) is on a worker of its own: the one with
    # the fewest open connections. Round robin would count each page's two HTTP requests too, and
    # put all three sockets on one worker.
    held = [site.workers_holding(chat_path(conversation)) for conversation in conversations]
    assert sorted(held) == [[0], [1], [2]]

    for page in pages:
        await page.send({"message": "hello"})
    for page in pages:
        await page.until(finished)
    answers = {
        message.content
        async for message in Message.objects.filter(
            role="assistant", status=Message.Status.COMPLETE
        )
    }
    assert answers == {f"Answer number {number}." for number in range(3)}

    # A worker's readiness and metrics are read on its own port, not through nginx.
    for path in ("/readyz", "/metrics"):
        with pytest.raises(urllib.error.HTTPError) as hidden:
            await asyncio.to_thread(fetch, site.url + path)
        assert hidden.value.code == 404
    assert json.loads(await asyncio.to_thread(fetch, site.url + "/healthz")) == {"status": "ok"}
    worker = f"http://127.0.0.1:{site.workers[0].port}/readyz"
    assert json.loads(await asyncio.to_thread(fetch, worker))["status"] == "ok"


@needs_backends
@pytest.mark.django_db(transaction=True)
async def test_a_page_reloaded_onto_another_worker_follows_the_answer_and_misses_nothing(
    site: Site, fake_openai: FakeOpenAI, user: User, open_page: Any
) -> None:
    words = " ".join(f"w{number}" for number in range(90))
    fake_openai.queue(sse(text_stream(words), delay=0.03))
    conversation = await Conversation.objects.acreate(owner=user)
    writer = await open_page(site, conversation)
    await writer.send({"message": "count"})
    # Past the first checkpoint (CHAT_CHECKPOINT_INTERVAL), so the rows hold part of it.
    await writer.until(lambda frame: "w40" in "".join(appended_text([frame])))

    reloaded = await open_page(site, conversation)
    first, second = site.workers_holding(chat_path(conversation))
    assert first != second, "the reloaded page is on another worker"
    message = await Message.objects.filter(conversation=conversation).alatest("created_at")
    frames = await reloaded.until(finished)

    before = shown_text(reloaded.frames[0], message.pk)
    streamed = appended_text(frames, message.pk)
    assert before.startswith("w0 w1")
    assert len(streamed) >= 5, "the other worker showed the answer as it was written"
    assert words.startswith(before + "".join(streamed)), "nothing lost or repeated"
    assert words in frames[-1]
    assert words in (await writer.until(finished))[-1]


@needs_backends
@pytest.mark.django_db(transaction=True)
async def test_stop_over_the_api_socket_reaches_the_answer_on_another_worker(
    site: Site, fake_openai: FakeOpenAI, user: User, open_page: Any
) -> None:
    fake_openai.queue(sse(text_stream(" ".join(["again"] * 400)), delay=0.03))
    conversation = await Conversation.objects.acreate(owner=user)
    _, token = await sync_to_async(token_create)(user=user)
    page = await open_page(site, conversation)
    path = f"/ws/api/conversations/{conversation.pk}/"
    async with connect(
        f"ws{site.url.removeprefix('http')}{path}",
        additional_headers={"Authorization": f"Bearer {token}"},
    ) as api:
        assert json.loads(await api.recv())["type"] == "ready"
        assert site.workers_holding(path) != site.workers_holding(chat_path(conversation))

        # The answer runs on the page's worker; the API socket stops it from its own.
        await page.send({"message": "talk forever"})
        await page.until(lambda frame: "again again" in "".join(appended_text([frame])))
        await api.send(json.dumps({"type": "stop"}))
        async with asyncio.timeout(10):
            while (event := json.loads(await api.recv()))["type"] != "message.finished":
                pass
        assert event["status"] == "cancelled"
        await page.until(lambda frame: 'data-status="cancelled"' in frame)

    stopped = await Message.objects.aget(conversation=conversation, role="assistant")
    assert stopped.status == Message.Status.CANCELLED
    assert 0 < stopped.content.count("again") < 400
    await fake_openai.wait_for_closed_early()


@needs_backends
@pytest.mark.django_db(transaction=True)
async def test_a_killed_worker_is_skipped_for_new_pages_and_sockets(
    site: Site, fake_openai: FakeOpenAI, user: User, open_page: Any
) -> None:
    conversation = await Conversation.objects.acreate(owner=user)
    page = await open_page(site, conversation)
    [killed] = site.workers_holding(chat_path(conversation))
    site.workers[killed].process.send_signal(signal.SIGKILL)
    with pytest.raises(ConnectionClosed):
        async with asyncio.timeout(5):
            await page.until(lambda frame: False)

    others = [await Conversation.objects.acreate(owner=user) for _ in range(4)]
    for number, other in enumerate(others):
        fake_openai.queue(sse(text_stream(f"Still answering {number}.")))
        reopened = await open_page(site, other)
        await reopened.send({"message": "are you there?"})
        await reopened.until(lambda frame: "Still answering" in frame and finished(frame))
    serving = [number for other in others for number in site.workers_holding(chat_path(other))]
    assert killed not in serving and len(set(serving)) == 2


def log_in(site: Site, username: str, *, forged: dict[str, str]) -> int:
    """Sign in with a wrong password from the login page, sending the `forged` headers too; the
    answer's status."""
    with urllib.request.urlopen(f"{site.url}/login/", timeout=10) as response:
        cookies = response.headers.get_all("Set-Cookie")
        form = response.read().decode()
    [csrf_cookie] = [cookie.split(";")[0] for cookie in cookies if cookie.startswith("csrftoken=")]
    [csrf_token] = re.findall(r'name="csrfmiddlewaretoken" value="([^"]+)"', form)
    body = {"username": username, "password": "wrong", "csrfmiddlewaretoken": csrf_token}
    request = urllib.request.Request(
        f"{site.url}/login/",
        data=urllib.parse.urlencode(body).encode(),
        headers={"Cookie": csrf_cookie, "Origin": site.url, **forged},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as refused:
        return refused.code


@needs_backends
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "worker_settings",
    [
        {
            # docs/deploy.md, "Behind HTTPS", and the client's address behind a proxy.
            "SECURE_PROXY_SSL_HEADER": "HTTP_X_FORWARDED_PROTO",
            "CLIENT_IP_HEADER": "HTTP_X_FORWARDED_FOR",
            "LOGIN_FAILURE_LIMIT": "2",
            "LOGIN_COOLOFF_MINUTES": "1",
            # Failed logins are counted in Redis: under a prefix of this test's own.
            "REDIS_PREFIX": f"lb-{uuid.uuid4().hex}",
        }
    ],
)
async def test_a_client_cannot_forge_the_scheme_or_address_nginx_forwards(site: Site) -> None:
    # Were the forged https believed, the page's http:// Origin would fail the CSRF check (403);
    # were the forged addresses believed, each would have one failure and no lockout.
    first = await asyncio.to_thread(
        log_in,
        site,
        "mallory",
        forged={"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.1"},
    )
    assert first == 200, "a failed login, shown on the login page"
    second = await asyncio.to_thread(
        log_in,
        site,
        "trudy",
        forged={"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.2"},
    )
    assert second == 429, "both failures counted against the address nginx saw"


def test_the_shipped_config_loads_with_its_tls_lines_turned_on(tmp_path: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is missing")
    nginx_binary()
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=chat.example.com",
            "-keyout",
            str(tmp_path / "privkey.pem"),
            "-out",
            str(tmp_path / "fullchain.pem"),
        ],
        check=True,
        capture_output=True,
    )
    site = re.sub(r"(?m)^(\s*)#(listen|ssl_\w+) ", r"\1\2 ", site_config(free_port(), [1, 2, 3]))
    site = site.replace("/etc/letsencrypt/live/chat.example.com/", f"{tmp_path}/")
    assert "listen 443 ssl" in site and f"ssl_certificate_key {tmp_path}/privkey.pem" in site
    main_config(tmp_path, site)

    checked = subprocess.run(nginx_command(tmp_path, "-t"), capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr


def test_the_proxy_outwaits_every_quiet_spell_of_a_socket() -> None:
    timeouts = {
        name: int(seconds)
        for name, seconds in re.findall(
            r"(?m)^\s*(proxy_read_timeout|proxy_send_timeout) (\d+)s;", SHIPPED.read_text()
        )
    }
    assert set(timeouts) == {"proxy_read_timeout", "proxy_send_timeout"}
    ping_interval = inspect.signature(Server).parameters["ping_interval"].default
    # What a socket of a running answer may go without, besides Daphne's pings.
    quiet = max(
        settings.LLM_TIMEOUT,
        settings.LLM_IDLE_TIMEOUT,
        settings.CHAT_APPROVAL_TIMEOUT,
        ping_interval,
    )
    assert min(timeouts.values()) > quiet
