"""How long a model call may wait for its stream's first event, and then between events.

The HTTP client's read timeout applies to each socket read, so a server that trickles bytes
without finishing an event, or that takes long to send the headers, slips past it; these limits
are enforced on whole stream events instead, as the adapters read them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass

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
        if first:
            message = f"The model server did not start answering within {seconds:g} s."
        else:
            message = (
                f"The model server sent nothing for {seconds:g} s, so the answer was given up."
            )
        super().__init__(message)


class Pacer:
    """Times one stream: the first event against `first_event`, each later one against `idle`.

    Each wait is timed on its own, never across a `yield`, so the time the consumer spends on
    an event is not counted against the server.
    """

    def __init__(self, timeouts: StreamTimeouts | None) -> None:
        self.timeouts = timeouts
        self.started = False
        loop = asyncio.get_running_loop()
        self.first_deadline = loop.time() + timeouts.first_event if timeouts else None

    async def wait[T](self, step: Awaitable[T]) -> T:
        """Await `step` (sending the request, or reading the next event) within its limit."""
        if self.timeouts is None:
            return await step
        if self.started:
            seconds = self.timeouts.idle
            deadline = asyncio.get_running_loop().time() + seconds
        else:
            seconds = self.timeouts.first_event
            assert self.first_deadline is not None
            deadline = self.first_deadline
        try:
            async with asyncio.timeout_at(deadline):
                return await step
        except TimeoutError:
            raise StreamTimedOut(seconds, first=not self.started) from None

    async def events[T](self, stream: AsyncIterator[T]) -> AsyncIterator[T]:
        """The stream's events, each read within its limit."""
        iterator = aiter(stream)
        while True:
            try:
                event = await self.wait(anext(iterator))
            except StopAsyncIteration:
                return
            self.started = True
            yield event
