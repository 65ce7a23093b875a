"""How long a model call may wait for its stream's first event, and then between events.

The HTTP client's read timeout applies to each socket read, so a server that trickles bytes
without finishing an event, or that takes long to send the headers, slips past it; these limits
are enforced on whole stream events instead, as the adapters read them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import Any

# StreamError.details["kind"] when a limit below ran out.
TIMED_OUT = "timeout"


@dataclass(frozen=True, slots=True)
class StreamTimeouts:
    # Seconds from sending the request to the stream's first event (headers included).
    first_event: float
    # Seconds between one stream event and the next.
    idle: float


class StreamTimedOut(Exception):
    """A limit of `StreamTimeouts` ran out; `first` when no event had arrived yet."""

    def __init__(self, seconds: float, *, first: bool) -> None:
        self.seconds = seconds
        self.first = first
        # A try's limit may be what was left of the call's budget: 39.5 s, not 39.5221 s.
        if first:
            message = f"The model server did not start answering within {seconds:.3g} s."
        else:
            message = (
                f"The model server sent nothing for {seconds:.3g} s, so the answer was given up."
            )
        super().__init__(message)


class EventClock:
    """Times one stream: the first event against `first_event`, each later one against `idle`.

    Only the waits for the server count, never the consumer's time between events. One timer
    watches the stream and moves on lazily (at most once per limit), rather than one timeout
    per event: that costs about 20 µs of CPU per event, this costs one clock read.
    """

    def __init__(self, timeouts: StreamTimeouts | None) -> None:
        self.timeouts = timeouts
        self.started = False
        self._loop = asyncio.get_running_loop()
        self._deadline = self._loop.time() + timeouts.first_event if timeouts else 0.0
        self._timer: asyncio.TimerHandle | None = None
        # The task waiting for the server, while it waits.
        self._waiter: asyncio.Task[Any] | None = None
        self._expired = False

    async def wait[T](self, step: Awaitable[T]) -> T:
        """Await `step` (sending the request, or reading the next event) within its limit."""
        if self.timeouts is None:
            return await step
        task = asyncio.current_task()
        assert task is not None
        self._waiter = task
        if self._timer is None:
            self._timer = self._loop.call_at(self._deadline, self._check)
        try:
            return await step
        except asyncio.CancelledError:
            if self._expired:
                self._expired = False
                # Unless it was cancelled for another reason (Stop) too.
                if task.uncancel() == 0:
                    raise self._timed_out() from None
            raise
        finally:
            self._waiter = None

    async def events[T](self, stream: AsyncIterator[T]) -> AsyncIterator[T]:
        """The stream's events, each read within its limit."""
        iterator = aiter(stream)
        try:
            while True:
                try:
                    event = await self.wait(anext(iterator))
                except StopAsyncIteration:
                    return
                if self.timeouts is not None:
                    self._deadline = self._loop.time() + self.timeouts.idle
                    if not self.started and self._timer is not None:
                        # The idle limit may end before the first event's did.
                        self._timer.cancel()
                        self._timer = None
                self.started = True
                yield event
        finally:
            self.close()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _check(self) -> None:
        self._timer = None
        if self._waiter is None:
            # The consumer has an event; the next wait sets the timer again.
            return
        if self._loop.time() < self._deadline:
            self._timer = self._loop.call_at(self._deadline, self._check)
            return
        self._expired = True
        self._waiter.cancel()

    def _timed_out(self) -> StreamTimedOut:
        assert self.timeouts is not None
        if self.started:
            return StreamTimedOut(self.timeouts.idle, first=False)
        return StreamTimedOut(self.timeouts.first_event, first=True)
