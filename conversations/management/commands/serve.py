"""`manage.py serve`: Daphne, plus the embedded local model's server when it is the model in use."""

from __future__ import annotations

import argparse
import gc
import importlib
from typing import Any

from daphne.cli import CommandLineInterface
from daphne.server import Server
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from conversations import llm, local_model

ASGI_APPLICATION = "chatsite.asgi:application"


class ClosingServer(Server):  # type: ignore[misc]
    """Daphne, closing a socket that breaks a limit with a close frame the client can read.

    autobahn's default (failByDrop) drops the TCP connection instead, so a too-big message got
    no answer at all; now it gets 1009 "message too big" with the limit in the reason.
    """

    @property
    def ws_factory(self) -> Any:
        return self._ws_factory

    @ws_factory.setter
    def ws_factory(self, factory: Any) -> None:
        # Daphne sets its own options right after making the factory; this one it leaves alone.
        factory.setProtocolOptions(failByDrop=False)
        self._ws_factory = factory


class Daphne(CommandLineInterface):  # type: ignore[misc]
    server_class = ClosingServer


class Command(BaseCommand):
    help = (
        "Serve the site with Daphne; first start, self-test and supervise the local model's "
        "server when it is the model in use."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)

    def handle(self, *args: Any, host: str, port: int, **options: Any) -> None:
        configured = llm.endpoint()
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
        self.stdout.write(f"Serving on http://{host}:{port}/ (Ctrl+C to stop)")
        # What a started server keeps for good (Django, the app, the SDK's types) is left out of
        # garbage collection: every full collection walked it all, pausing every stream for up
        # to 130 ms under load.
        importlib.import_module(ASGI_APPLICATION.partition(":")[0])
        gc.collect()
        gc.freeze()
        try:
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
        finally:
            if supervisor is not None:
                local_model.set_supervisor(None)
                supervisor.stop()
