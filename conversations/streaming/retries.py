"""Model calls retried when they fail before their first event, within one time budget."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass

from .chat_completions import CONNECTION_LOST
from .events import ProviderEvent, Retrying, StreamError
from .timeouts import TIMED_OUT, StreamTimeouts

# The openai SDK's backoff: 0.5 s doubling to at most 8 s, less up to a quarter at random.
INITIAL_DELAY = 0.5
MAX_DELAY = 8.0
RETRIED_STATUSES = frozenset({408, 409, 429})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_retries: int
    # Seconds a call may take to start answering, every try and the waits between them included.
    budget: float
    timeouts: StreamTimeouts


Attempt = Callable[[StreamTimeouts], AsyncIterator[ProviderEvent]]


def retryable(error: StreamError) -> bool:
    """Whether trying again may help: no answer began, and the failure was not a refusal."""
    details = error.details
    if "status_code" in details:
        status = details["status_code"]
        if "should_retry" in details:
            return bool(details["should_retry"])
        return status in RETRIED_STATUSES or status >= 500
    if details.get("kind") in (CONNECTION_LOST, TIMED_OUT):
        # A stream that broke off after its headers, or went quiet midway, is not tried again.
        return not details.get("midway")
    return False


def backoff(retry: int) -> float:
    return float(min(INITIAL_DELAY * 2**retry, MAX_DELAY) * (1 - 0.25 * random.random()))


async def retrying(attempt: Attempt, policy: RetryPolicy) -> AsyncIterator[ProviderEvent]:
    """`attempt`'s events; a failure before its first event is retried with backoff.

    A `Retry-After` the server sends is honoured. Before each retry a `Retrying` event says how
    long the wait is. Every try gets at most what is left of `policy.budget` to start answering,
    so a server that never answers fails within the budget, retries included.
    """
    loop = asyncio.get_running_loop()
    give_up_at = loop.time() + policy.budget
    attempts = policy.max_retries + 1
    for tried in range(1, attempts + 1):
        left = max(give_up_at - loop.time(), 0.0)
        timeouts = StreamTimeouts(min(policy.timeouts.first_event, left), policy.timeouts.idle)
        failure: StreamError | None = None
        started = False
        events = attempt(timeouts)
        try:
            async for event in events:
                if isinstance(event, StreamError) and not started:
                    failure = event
                    break
                started = True
                yield event
        finally:
            # Closed here, not when collected: closing it closes the HTTP response.
            if isinstance(events, AsyncGenerator):
                await events.aclose()
        if failure is None:
            return
        delay = failure.details.get("retry_after")
        if not isinstance(delay, int | float) or delay < 0:
            delay = backoff(tried - 1)
        if tried == attempts or not retryable(failure) or loop.time() + delay >= give_up_at:
            if tried > 1:
                failure = StreamError(f"{failure.message} (tried {tried} times)", failure.details)
            yield failure
            return
        yield Retrying(delay, tried + 1, attempts, failure.message)
        await asyncio.sleep(delay)
