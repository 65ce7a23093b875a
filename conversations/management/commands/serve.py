"""`manage.py serve`: Daphne, plus the embedded local model's server when it is the model in use.

With `--workers N`, N Daphne worker processes on consecutive ports, supervised by this one
(`conversations.workers`).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import logging
import os
import signal
from typing import Any

from daphne.cli import CommandLineInterface
from daphne.server import Server
from daphne.ws_protocol import WebSocketProtocol
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from twisted.internet import defer, reactor

from conversations import drain, llm, local_model, mcp_servers, sweeper, with_parent, workers

ASGI_APPLICATION = "chatsite.asgi:application"

# The close code a draining worker closes its sockets with: pages and clients reconnect, and a
# load balancer sends them to another worker.
SERVICE_RESTART = 1012

logger = logging.getLogger(__name__)


class ClosingServer(Server):  # type: ignore[misc]
    """Daphne, closing a socket that breaks a limit with a close frame the client can read, and
    draining on SIGTERM or SIGINT.

    autobahn's default (failByDrop) drops the TCP connection instead, so a too-big message got
    no answer at all; now it gets 1009 "message too big" with the limit in the reason.

    Draining: stop listening, close every WebSocket with 1012, let running answers finish
    within CHAT_DRAIN_GRACE seconds and end the rest `interrupted` with their text saved, then
    stop. A second signal cuts the wait short.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Twisted's handlers would stop the reactor at once; ours drain first.
        super().__init__(*args, **{**kwargs, "signal_handlers": False})
        self.ports: list[Any] = []
        self.draining: asyncio.Task[None] | None = None
        self.hurry = asyncio.Event()
        self.closed = 0

    @property
    def ws_factory(self) -> Any:
        return self._ws_factory

    @ws_factory.setter
    def ws_factory(self, factory: Any) -> None:
        # Daphne sets its own options right after making the factory; this one it leaves alone.
        factory.setProtocolOptions(failByDrop=False)
        self._ws_factory = factory

    def run(self) -> None:
        loop = reactor._asyncioEventloop
        for number in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(number, self.signalled, number)
        reactor.callWhenRunning(lambda: loop.call_soon(sweeper.start))
        # The MCP servers' sessions, ready before the first answer needs them.
        reactor.callWhenRunning(lambda: loop.call_soon(mcp_servers.start))
        super().run()

    def listen_success(self, port: Any) -> None:
        self.ports.append(port)
        super().listen_success(port)

    def signalled(self, number: int) -> None:
        name = signal.Signals(number).name
        if self.draining is None:
            logger.info("%s: %s draining (grace %g s).", self.name(), name, self.grace())
            self.draining = asyncio.ensure_future(self.drain_then_stop())
        else:
            logger.info("%s: %s again, interrupting the answers still running.", self.name(), name)
            self.hurry.set()

    def name(self) -> str:
        """How the log names this server: its ports and process id."""
        ports = ", ".join(str(port) for _, port in self.listening_addresses)
        return f"Server on port {ports or '-'} (pid {os.getpid()})"

    @staticmethod
    def grace() -> float:
        return float(settings.CHAT_DRAIN_GRACE)

    async def drain_then_stop(self) -> None:
        try:
            await self.drain()
        except Exception:
            logger.exception("draining failed; stopping")
        finally:
            try:
                # After the answers: a call still running was cancelled with its answer.
                await mcp_servers.stop()
            finally:
                self.stop()

    async def drain(self) -> None:
        drain.begin()
        # New connections are refused from here on: a load balancer tries the next worker.
        await asyncio.gather(
            *(
                defer.maybeDeferred(port.stopListening).asFuture(asyncio.get_running_loop())
                for port in self.ports
            ),
            return_exceptions=True,
        )
        # Again while draining: a socket still in its handshake now may be accepted after this.
        closing = asyncio.ensure_future(self.close_sockets_while_draining())
        try:
            outcome = await drain.drain_runs(grace=self.grace(), hurry=self.hurry)
        finally:
            closing.cancel()
        logger.info(
            "%s: drained, %d sockets closed, %d answers finished, %d interrupted.",
            self.name(),
            self.closed,
            outcome.finished,
            outcome.interrupted,
        )

    async def close_sockets_while_draining(self) -> None:
        while True:
            self.close_sockets()
            await asyncio.sleep(0.25)

    def close_sockets(self) -> None:
        """Close every open WebSocket with 1012: its page or client reconnects elsewhere."""
        for protocol in list(self.connections):
            if isinstance(protocol, WebSocketProtocol) and protocol.state == protocol.STATE_OPEN:
                # sendClose() accepts 1000 and 3000-4999 only; 1012 is a registered code.
                protocol.sendCloseFrame(
                    code=SERVICE_RESTART, reasonUtf8=b"The server is restarting."
                )
                # Daphne drops what the application sends to a disconnected socket; sent to a
                # closing one, it would raise in the consumer.
                self.protocol_disconnected(protocol)
                self.closed += 1


class Daphne(CommandLineInterface):  # type: ignore[misc]
    server_class = ClosingServer


class Command(BaseCommand):
    help = (
        "Serve the site with Daphne (with --workers N, N Daphne processes on consecutive ports); "
        "first start, self-test and supervise the local model's server when it is the model in "
        "use. SIGTERM drains; SIGHUP restarts the workers one at a time."
    )

    def say(self, text: str) -> None:
        # Flushed: the workers' supervision lines reach a log file or the journal as they
        # happen, not when a buffer fills.
        self.stdout.write(text)
        self.stdout.flush()

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument(
            "--workers",
            type=int,
            default=1,
            help="Daphne processes to run, on ports PORT, PORT+1, ... (default 1).",
        )
        # A worker started by a `serve --workers N`: it ends with that process and uses the
        # local model that process runs.
        parser.add_argument("--worker-of", type=int, default=0, help=argparse.SUPPRESS)

    def handle(
        self, *args: Any, host: str, port: int, workers: int, worker_of: int, **options: Any
    ) -> None:
        if workers < 1:
            raise CommandError("--workers must be 1 or more.")
        if worker_of:
            with_parent.end_with_parent(worker_of)
            self.serve(host, port)
            return
        configured = llm.endpoint()
        local = configured is not None and configured.local
        ports = range(port, port + workers)
        if local and settings.LOCAL_LLM_PORT in ports:
            raise CommandError(
                f"The workers would listen on ports {ports[0]}-{ports[-1]}, which include the "
                f"local model's port, LOCAL_LLM_PORT={settings.LOCAL_LLM_PORT}. Give another "
                "--port, or set LOCAL_LLM_PORT to a port outside that range."
            )
        supervisor: local_model.Supervisor | None = None
        if configured is not None and configured.local:
            self.stdout.write(
                f"Starting the local model ({configured.model}) on {configured.base_url} …"
            )
            supervisor = local_model.Supervisor()
            try:
                supervisor.start()
            except local_model.LocalModelError as error:
                raise CommandError(str(error)) from None
            local_model.set_supervisor(supervisor)
            self.stdout.write("The local model answered its self-test.")
        elif configured is None:
            self.stdout.write(self.style.WARNING(llm.SETUP_HINT))
        else:
            self.stdout.write(f"Model: {configured.model} at {configured.base_url or 'OpenAI'}")
        try:
            if workers == 1:
                self.stdout.write(f"Serving on http://{host}:{port}/ (Ctrl+C to stop)")
                self.serve(host, port)
            else:
                self.serve_workers(host, ports)
        finally:
            if supervisor is not None:
                local_model.set_supervisor(None)
                supervisor.stop()

    def serve_workers(self, host: str, ports: range) -> None:
        if not settings.REDIS_URL:
            self.stdout.write(
                self.style.WARNING(
                    "Several workers without REDIS_URL: each has its own in-memory channel layer, "
                    "so a page follows only the answers of the worker it is connected to. Set "
                    "REDIS_URL."
                )
            )
        pool = workers.Workers(host=host, ports=ports, out=self.say)
        try:
            if not pool.start():
                return
        except workers.WorkerError as error:
            raise CommandError(str(error)) from None
        self.stdout.write(
            f"Serving on http://{host}:{ports[0]}/ to http://{host}:{ports[-1]}/ "
            f"({len(ports)} workers; Ctrl+C or SIGTERM drains and stops, SIGHUP restarts them "
            "one at a time)"
        )
        pool.run()

    def serve(self, host: str, port: int) -> None:
        # What a started server keeps for good (Django, the app, the SDK's types) is left out of
        # garbage collection: every full collection walked it all, pausing every stream for up
        # to 130 ms under load.
        importlib.import_module(ASGI_APPLICATION.partition(":")[0])
        gc.collect()
        gc.freeze()
        Daphne().run(
            [
                "-b",
                host,
                "-p",
                str(port),
                "--websocket-max-message-size",
                str(settings.DAPHNE_WEBSOCKET_MAX_MESSAGE_SIZE),
                "--websocket-max-frame-size",
                str(settings.DAPHNE_WEBSOCKET_MAX_FRAME_SIZE),
                ASGI_APPLICATION,
            ]
        )
