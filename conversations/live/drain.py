"""Whether this serving process is draining: told to stop (SIGTERM) and finishing its answers.

A draining process takes no new sockets and no new answers, and `/readyz` answers 503 so a
load balancer sends its work elsewhere.
"""

from __future__ import annotations

_draining = False


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
