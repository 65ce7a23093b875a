"""`manage.py serve`: Daphne, plus the embedded local model's server when it is the model in use."""

from __future__ import annotations

import argparse
import subprocess
from typing import Any

from daphne.cli import CommandLineInterface
from django.core.management.base import BaseCommand, CommandError

from conversations import llm, local_model


class Command(BaseCommand):
    help = "Serve the site with Daphne; start the local model's server first when it is used."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)

    def handle(self, *args: Any, host: str, port: int, **options: Any) -> None:
        configured = llm.endpoint()
        server: subprocess.Popen[bytes] | None = None
        if configured is not None and configured.local:
            self.stdout.write(
                f"Starting the local model ({configured.model}) on {configured.base_url} …"
            )
            try:
                server = local_model.start_server()
            except local_model.LocalModelError as error:
                raise CommandError(str(error)) from None
        elif configured is None:
            self.stdout.write(self.style.WARNING(llm.SETUP_HINT))
        else:
            self.stdout.write(f"Model: {configured.model} at {configured.base_url or 'OpenAI'}")
        self.stdout.write(f"Serving on http://{host}:{port}/ (Ctrl+C to stop)")
        try:
            CommandLineInterface().run(["-b", host, "-p", str(port), "chatsite.asgi:application"])
        finally:
            if server is not None:
                local_model.stop_server(server)
