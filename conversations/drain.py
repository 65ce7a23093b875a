"""Whether this serving process is draining: told to stop (SIGTERM) and finishing its answers.

A draining process takes no new sockets and no new answers, and `/readyz` answers 503 so a
load balancer sends its work elsewhere. `drain_runs` lets its running answers finish within a
grace period and ends the rest `interrupted`, their text saved.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from typing import Any

from . import titles
from .live.hub import hub
from .refusals import Restarting

_draining = False
# Turns between the draining check and their run's start (`turn_starting`).
_turns_starting = 0

# The error of an answer still running when its process's grace ran out.
INTERRUPTED_ERROR = "The server restarted while this answer was being written."
# What a page or client that asks for a new answer here is told.
REFUSED = (
    "This server is restarting and starts no new answers: reconnect (a page does so by itself) "
    "and send it again."
)
# How long, at most, the final events of the answers are given to reach the followers in other
# processes before this one exits.
DELIVERY_WAIT = 2.0


def draining() -> bool:
    """Whether this process is shutting down."""
    return _draining


def begin() -> None:
    """From now on this process is draining (for good: it exits when done)."""
    global _draining
    _draining = True


def reset() -> None:
    """Back to serving (tests only: a real process never comes back from draining)."""
    global _draining
    _draining = False


@contextlib.contextmanager
def turn_starting() -> Iterator[None]:
    """Around storing and starting a new answer: Restarting once this process is draining. A
    drain
    waits for the turns already inside, so that each one's answer is running before it is
    drained (else its rows would be stored and no run would end them)."""
    global _turns_starting
    if _draining:
        raise Restarting(REFUSED)
    _turns_starting += 1
    try:
        yield
    finally:
        _turns_starting -= 1


@dataclass(frozen=True, slots=True)
class Drained:
    finished: int
    interrupted: int


async def drain_runs(*, grace: float, hurry: asyncio.Event | None = None) -> Drained:
    """Drain this event loop's answers: wait up to `grace` seconds (less if `hurry` is set) for
    them to end, then interrupt the rest; each saves its text and publishes its end."""
    begin()
    hurry = hurry or asyncio.Event()
    deadline = time.monotonic() + grace
    runs = hub().runs
    ran: set[int] = set()

    def running() -> set[asyncio.Task[Any]]:
        live = {
            run.message_id: run.task for run in runs.values() if run.task and not run.task.done()
        }
        ran.update(live)
        return set(live.values())

    hurried = asyncio.ensure_future(hurry.wait())
    try:
        # Polled: a turn ending sets nothing to wait on (and takes a few database calls).
        while _turns_starting and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        await settle(running, deadline, hurried)
        interrupted = [run for run in list(runs.values()) if run.task and not run.task.done()]
        for run in interrupted:
            run.interrupt(INTERRUPTED_ERROR)
        await asyncio.gather(*(run.task for run in interrupted if run.task), return_exceptions=True)
        # Titles are worth waiting for only within the grace.
        await settle(titles.title_tasks, deadline, hurried)
        for task in titles.title_tasks():
            task.cancel()
        await asyncio.gather(*titles.title_tasks(), return_exceptions=True)
        # The ends go out with the next delivery; followers in other processes need them. Polled:
        # a delivery sets nothing to wait on.
        until = time.monotonic() + DELIVERY_WAIT
        while time.monotonic() < until and not all(  # noqa: ASYNC110
            run.delivered() for run in runs.values()
        ):
            await asyncio.sleep(0.02)
    finally:
        hurried.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await hurried
    return Drained(finished=len(ran) - len(interrupted), interrupted=len(interrupted))


async def settle(
    pending: Callable[[], Collection[asyncio.Task[Any]]],
    deadline: float,
    hurried: asyncio.Future[Any],
) -> None:
    """Wait until `pending()` is empty, the deadline passes or `hurried` is done."""
    while (tasks := pending()) and not hurried.done():
        left = deadline - time.monotonic()
        if left <= 0:
            return
        await asyncio.wait({*tasks, hurried}, timeout=left, return_when="FIRST_COMPLETED")
