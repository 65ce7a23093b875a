"""Probes for load balancers and monitoring: /healthz (alive), /readyz (can serve), /metrics.

`ProbeMiddleware` answers them before any other middleware: a load balancer or `manage.py serve`
probes a worker by its address, which ALLOWED_HOSTS need not list; and a probe gets no HTTPS
redirect, session, CSRF cookie or login.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import redis.asyncio as redis
from asgiref.sync import async_to_sync, iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.db import connections
from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from . import drain

logger = logging.getLogger(__name__)

# The database check runs in threads of its own: a database that hangs holds these two, not the
# threads that serve pages, and later checks time out waiting for them.
_database_checks = ThreadPoolExecutor(max_workers=2, thread_name_prefix="readyz")
# Redis clients being closed after a check, kept here so that they are not collected.
_closing: set[asyncio.Task[None]] = set()


def worker_name() -> str:
    """This serving process, as "<hostname>:<pid>"."""
    return f"{socket.gethostname()}:{os.getpid()}"


def probe_response(data: dict[str, Any], status: int = 200) -> JsonResponse:
    response = JsonResponse(data, status=status)
    response["Cache-Control"] = "no-store"
    # Django logs every 5xx response as an error; a 503 here is the probe's answer (a draining
    # process gives it every few seconds), and failed checks are logged as warnings.
    response._has_been_logged = True  # type: ignore[attr-defined]
    return response


async def healthz(request: HttpRequest) -> HttpResponse:
    """The process is alive (it checks nothing else)."""
    return probe_response({"status": "ok"})


async def readyz(request: HttpRequest) -> HttpResponse:
    """The process can serve: its database and Redis answer, and it is not draining."""
    if drain.draining():
        return probe_response(
            {"status": "draining", "draining": True, "worker": worker_name()}, status=503
        )
    timeout = settings.READYZ_TIMEOUT
    probes: dict[str, Callable[[], Awaitable[None]]] = {"database": database_ping}
    if settings.REDIS_URL:
        probes["redis"] = lambda: redis_ping(settings.REDIS_URL, timeout)
    results = await asyncio.gather(*(checked(probe, timeout) for probe in probes.values()))
    checks = dict(zip(probes, results, strict=True))
    ready = all(result == "ok" for result in results)
    return probe_response(
        {"status": "ok" if ready else "unavailable", "checks": checks, "worker": worker_name()},
        status=200 if ready else 503,
    )


async def checked(probe: Callable[[], Awaitable[None]], within: float) -> str:
    """`ok`, or why `probe` failed: in a few words, with no address or password."""
    try:
        async with asyncio.timeout(within):
            await probe()
    except TimeoutError:
        return f"no answer within {within:g} s"
    except Exception as error:
        logger.warning("readiness check failed: %r", error)
        return failure(error)
    return "ok"


def failure(error: BaseException) -> str:
    """The error's class, and the system's reason when a socket error caused it."""
    cause: BaseException | None = error
    while cause is not None:
        # From the errno: asyncio's strerror names the address ("Connect call failed (...)").
        if isinstance(cause, OSError) and cause.errno:
            return f"{type(error).__name__}: {os.strerror(cause.errno)}"
        cause = cause.__cause__ or cause.__context__
    return type(error).__name__


async def database_ping() -> None:
    await asyncio.get_running_loop().run_in_executor(_database_checks, select_one)


def select_one() -> None:
    connection = connections["default"]
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    finally:
        # A connection per check: one left open in this thread could have gone stale by the next.
        connection.close()


async def redis_ping(url: str, within: float) -> None:
    # Socket timeouts a little past the probe's own bound (the one its answer names): they bound
    # closing the connection afterwards.
    limit = within + 1
    client = redis.Redis.from_url(url, socket_connect_timeout=limit, socket_timeout=limit)
    try:
        await client.ping()
    finally:
        # Closed in the background: closing a connection to a Redis that hangs can wait too.
        closing = asyncio.create_task(client.aclose())
        _closing.add(closing)
        closing.add_done_callback(_closing.discard)


async def metrics(request: HttpRequest) -> HttpResponse:
    """This process's metrics for Prometheus, to a bearer of METRICS_TOKEN."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        response = HttpResponse(
            "Send the header Authorization: Bearer <METRICS_TOKEN>.\n",
            status=401,
            content_type="text/plain",
        )
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    if not hmac.compare_digest(token.strip().encode(), settings.METRICS_TOKEN.encode()):
        return HttpResponse("Wrong metrics token.\n", status=403, content_type="text/plain")
    response = HttpResponse(generate_latest(), content_type=CONTENT_TYPE_LATEST)
    response["Cache-Control"] = "no-store"
    return response


Probe = Callable[[HttpRequest], Awaitable[HttpResponse]]
PROBES: dict[str, Probe] = {"/healthz": healthz, "/readyz": readyz, "/metrics": metrics}


def probe_for(request: HttpRequest) -> Probe | None:
    probe = PROBES.get(request.path_info)
    if probe is metrics and not settings.METRICS_TOKEN:
        return None  # Metrics are off: the page does not exist.
    return probe


def method_not_allowed() -> HttpResponse:
    response = HttpResponse(status=405)
    response["Allow"] = "GET, HEAD"
    return response


class ProbeMiddleware:
    """Answers /healthz, /readyz and /metrics itself; first in MIDDLEWARE."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self.__acall__(request)
        probe = probe_for(request)
        if probe is None:
            return self.get_response(request)
        if request.method not in ("GET", "HEAD"):
            return method_not_allowed()
        return async_to_sync(probe)(request)

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        probe = probe_for(request)
        if probe is None:
            response: HttpResponseBase = await self.get_response(request)
            return response
        if request.method not in ("GET", "HEAD"):
            return method_not_allowed()
        return await probe(request)
