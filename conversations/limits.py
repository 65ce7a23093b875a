"""Per-user limits on sending messages, counted in the cache so they hold across processes."""

from __future__ import annotations

import math
import time

from django.conf import settings
from django.core.cache import cache

WINDOW = 60


class LimitReached(Exception):
    """Too much at once; `retry_after` is the seconds until the user may try again (or None)."""

    def __init__(self, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def message_rate_take(*, user_id: int, now: float | None = None) -> None:
    """Count one message against the user's limit for the current minute.

    Raises LimitReached past CHAT_MESSAGES_PER_MINUTE. The count is one cache key per user and
    minute, created with `add` and raised with `incr`: both atomic in Redis and in the local
    memory cache, so processes sharing the cache share the count.
    """
    limit = settings.CHAT_MESSAGES_PER_MINUTE
    if limit <= 0:
        return
    now = time.time() if now is None else now
    window = int(now // WINDOW)
    key = f"chat:messages:{user_id}:{window}"
    cache.add(key, 0, timeout=WINDOW * 2)
    try:
        count = cache.incr(key)
    except ValueError:
        # The key expired between `add` and `incr`.
        cache.add(key, 0, timeout=WINDOW * 2)
        count = cache.incr(key)
    if count > limit:
        retry_after = max(1, math.ceil((window + 1) * WINDOW - now))
        raise LimitReached(
            f"You have sent {limit} messages this minute, the most allowed: "
            f"try again in {retry_after} s.",
            retry_after=retry_after,
        )
