"""Limits on what users send: messages per user, counted in the cache so they hold across
processes, and the longest denial reason."""

from __future__ import annotations

import math
import time

from django.conf import settings
from django.core.cache import cache

from .refusals import RateLimited

WINDOW = 60
# The longest reason a denial of a tool call may give, in characters.
REASON_MAX_LENGTH = 1000


def message_rate_take(*, user_id: int, now: float | None = None) -> None:
    """Count one message against the user's limit; raise RateLimited past it.

    At most CHAT_MESSAGES_PER_MINUTE messages in the minute that starts with a user's first
    message (and then again after it). The count is a cache key created with `add` and raised
    with `incr`, both atomic in Redis and in the local memory cache, so processes sharing the
    cache share the count; a second key keeps when the minute started, to say when it ends.
    """
    limit = settings.CHAT_MESSAGES_PER_MINUTE
    if limit <= 0:
        return
    now = time.time() if now is None else now
    key = f"chat:messages:{user_id}"
    cache.add(f"{key}:started", now, timeout=WINDOW)
    cache.add(key, 0, timeout=WINDOW)
    try:
        count = cache.incr(key)
    except ValueError:
        # The key expired between `add` and `incr`.
        cache.add(key, 0, timeout=WINDOW)
        count = cache.incr(key)
    if count > limit:
        started = cache.get(f"{key}:started", now)
        retry_after = max(1, math.ceil(started + WINDOW - now))
        raise RateLimited(
            f"You have sent {limit} messages in the last minute, the most allowed: "
            f"try again in {retry_after} s.",
            retry_after=retry_after,
        )
