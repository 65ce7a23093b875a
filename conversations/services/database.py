"""The services' database access from async code."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, cast

from channels.db import database_sync_to_async


def database_async[**P, R](function: Callable[P, R]) -> Callable[P, Coroutine[Any, Any, R]]:
    """`function` for async code: run in the database thread, with the connections that broke or
    outlived DATABASE_CONN_MAX_AGE closed before and after (channels' `database_sync_to_async`,
    typed). Consumers and runs live for minutes; Django closes stale connections only around
    requests."""
    return cast(Callable[P, Coroutine[Any, Any, R]], database_sync_to_async(function))
