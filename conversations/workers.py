"""The parent of `manage.py serve --workers N`: N Daphne worker processes on consecutive ports.

It restarts a worker that exits on its own (after 1, 2, 4 … up to 30 s), restarts them one at a
time on SIGHUP (each drains, exits, and its successor on the same port is ready before the next
one is touched), and on SIGTERM or SIGINT drains them all at once and returns. The workers end
with this process even when it is killed (`with_parent`), and get no signal from the terminal:
Ctrl+C reaches this process, which passes it on once.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from django.conf import settings

from .local_model import exit_description

# Waits before restarting a worker that exited on its own, by how many times it did in a row.
BACKOFF = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0)
# A worker that ran this long before exiting starts again from the first wait.
STEADY_AFTER = 60.0
READY_TIMEOUT = 90.0
TICK = 0.1


class WorkerError(Exception):
    """The workers could not start; the message says which and why."""


@dataclass
class Worker:
    number: int
    port: int
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    # Exits in a row that came soon after a start, for the backoff.
    failures: int = 0
    restart_at: float | None = None
    # Being restarted on purpose (SIGHUP): its exit is no failure.
    held: bool = False

    @property
    def name(self) -> str:
        pid = self.process.pid if self.process is not None else "-"
        return f"worker {self.number} (port {self.port}, pid {pid})"

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


def probe_host(host: str) -> str:
    """Where this machine reaches a server bound to `host`."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)


def ready(host: str, port: int) -> bool:
    """Whether the worker on `port` says it is ready to serve (`/readyz` answers 200)."""
    address = probe_host(host)
    if ":" in address:
        address = f"[{address}]"
    # /readyz is answered before Django's host check (health.ProbeMiddleware): any Host will do.
    try:
        with urllib.request.urlopen(f"http://{address}:{port}/readyz", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:  # refused, timed out, or an HTTP error such as 503 (draining, not ready)
        return False


def worker_command(*, host: str, port: int) -> list[str]:
    manage = Path(settings.BASE_DIR) / "manage.py"
    return [
        sys.executable,
        str(manage),
        "serve",
        "--host",
        host,
        "--port",
        str(port),
        "--worker-of",
        str(os.getpid()),
    ]


class Workers:
    """Runs and supervises the workers; `start()`, then `run()` until told to stop."""

    def __init__(
        self,
        *,
        host: str,
        ports: Sequence[int],
        out: Callable[[str], None],
    ) -> None:
        self.host = host
        self.workers = [Worker(number, port) for number, port in enumerate(ports, start=1)]
        self.out = out
        self.signals: list[int] = []

    def say(self, text: str) -> None:
        self.out(f"[serve {os.getpid()}] {text}")

    # Starting.

    def spawn(self, worker: Worker) -> None:
        # From the main thread only: Linux ends a child with PR_SET_PDEATHSIG when the *thread*
        # that started it ends.
        worker.process = subprocess.Popen(
            worker_command(host=self.host, port=worker.port),
            cwd=settings.BASE_DIR,
            # Its own process group: Ctrl+C in a terminal reaches this process only.
            process_group=0,
        )
        worker.started_at = time.monotonic()
        worker.restart_at = None

    def start(self) -> bool:
        """Start every worker and wait until each is ready; WorkerError if one is not, False if
        told to stop meanwhile (the workers then have stopped)."""
        self.watch_signals()
        for worker in self.workers:
            self.spawn(worker)
        waiting = list(self.workers)
        deadline = time.monotonic() + READY_TIMEOUT
        while waiting:
            if self.stopping():
                self.stop()
                return False
            for worker in list(waiting):
                assert worker.process is not None
                if worker.process.poll() is not None:
                    self.stop()
                    raise WorkerError(
                        f"{worker.name.capitalize()} exited at start "
                        f"({exit_description(worker.process.returncode)}); is port "
                        f"{worker.port} free? Its output is above."
                    )
                if ready(self.host, worker.port):
                    waiting.remove(worker)
            if waiting and time.monotonic() > deadline:
                self.stop()
                names = ", ".join(worker.name for worker in waiting)
                raise WorkerError(f"Not ready within {READY_TIMEOUT:.0f} s: {names}.")
            time.sleep(TICK)
        for worker in self.workers:
            self.say(f"{worker.name.capitalize()} is serving.")
        # A restart asked for while they started has nothing to do.
        self.signals.clear()
        return True

    # Running.

    def watch_signals(self) -> None:
        for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(number, self.signalled)

    def signalled(self, number: int, frame: FrameType | None) -> None:
        self.signals.append(number)

    def stops(self) -> int:
        """How many times this process was told to stop (SIGTERM, SIGINT)."""
        return sum(number != signal.SIGHUP for number in self.signals)

    def stopping(self) -> bool:
        return self.stops() > 0

    def run(self) -> None:
        """Supervise until SIGTERM or SIGINT, then drain every worker and return."""
        while not self.stopping():
            if signal.SIGHUP in self.signals:
                self.signals.remove(signal.SIGHUP)
                self.roll()
                continue
            self.tend()
            time.sleep(TICK)
        self.stop()

    def tend(self) -> None:
        """Restart the workers that exited on their own, each after its backoff."""
        now = time.monotonic()
        for worker in self.workers:
            if worker.held:
                continue
            if worker.restart_at is not None:
                if now >= worker.restart_at:
                    self.spawn(worker)
                    self.say(f"{worker.name.capitalize()} started again.")
                continue
            if worker.process is None or worker.process.poll() is None:
                continue
            if now - worker.started_at > STEADY_AFTER:
                worker.failures = 0
            delay = BACKOFF[min(worker.failures, len(BACKOFF) - 1)]
            worker.failures += 1
            self.say(
                f"{worker.name.capitalize()} exited "
                f"({exit_description(worker.process.returncode)}); restarting it in {delay:g} s."
            )
            worker.restart_at = now + delay

    def wait(self, done: Callable[[], bool], timeout: float) -> bool:
        """Wait until `done()`, supervising the other workers meanwhile; False on timeout or
        when told to stop."""
        deadline = time.monotonic() + timeout
        while not done():
            if self.stopping() or time.monotonic() > deadline:
                return False
            self.tend()
            time.sleep(TICK)
        return True

    def roll(self) -> None:
        """Restart every worker, one at a time: drain it, wait for its exit, start its successor
        on the same port and wait until it is ready."""
        self.say("SIGHUP: restarting the workers one at a time.")
        for worker in self.workers:
            worker.held = True
            try:
                if not self.replace(worker):
                    return
            finally:
                worker.held = False
        self.say("Every worker has been restarted.")

    def replace(self, worker: Worker) -> bool:
        """Drain `worker`, start its successor and wait until it is ready; False if the restart
        should go no further."""
        old = worker.process
        if old is not None and old.poll() is None:
            self.say(f"Draining {worker.name}.")
            old.send_signal(signal.SIGTERM)
            bound = float(settings.CHAT_DRAIN_GRACE) + 60
            if not self.wait(lambda: old.poll() is not None, bound):
                if self.stopping():
                    return False
                self.say(f"{worker.name.capitalize()} did not exit; killing it.")
                old.kill()
                old.wait()
        self.spawn(worker)
        worker.failures = 0
        started = self.wait(
            lambda: not worker.running() or ready(self.host, worker.port), READY_TIMEOUT
        )
        if not started or not worker.running():
            if not self.stopping():
                self.say(
                    f"{worker.name.capitalize()} is not ready; the restart stops here and the "
                    "other workers keep their processes."
                )
            return False
        self.say(f"{worker.name.capitalize()} is serving.")
        return True

    def stop(self) -> None:
        """Drain every worker at once and wait for them to exit; a further signal hurries them
        (they interrupt their answers at once, still saving them)."""
        running = [worker for worker in self.workers if worker.running()]
        for worker in self.workers:
            worker.restart_at = None
        if running:
            self.say(f"Draining {len(running)} workers.")
        passed_on = self.stops()
        for worker in running:
            assert worker.process is not None
            worker.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + float(settings.CHAT_DRAIN_GRACE) + 60
        while any(worker.running() for worker in running):
            if len(self.signals) > passed_on:
                passed_on = self.stops()
                self.say("Signalled again: the workers interrupt their answers now.")
                for worker in running:
                    if worker.running():
                        assert worker.process is not None
                        worker.process.send_signal(signal.SIGTERM)
            if time.monotonic() > deadline:
                for worker in running:
                    if worker.running():
                        self.say(f"{worker.name.capitalize()} did not exit; killing it.")
                        assert worker.process is not None
                        worker.process.kill()
                break
            time.sleep(TICK)
        for worker in running:
            assert worker.process is not None
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.process.wait(timeout=5)
        self.say("Every worker has stopped.")
