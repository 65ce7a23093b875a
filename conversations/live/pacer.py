"""When a running answer's next delivery to its subscribers may go: about 20 a second, and at
once after a quiet spell."""

from __future__ import annotations

# Deliveries per answer: one per WINDOW seconds on average (20 a second), BURST at once (an
# answer's start: a newcomer's catch-up, the first step, the first token).
WINDOW = 0.05
BURST = 3.0


class Pacer:
    """When an answer's next delivery may go: at once for an event after a quiet spell (no
    event for a `WINDOW`), else once the allowance of a token bucket (one delivery per
    `WINDOW`, `BURST` at most) allows.

    The quiet rule matters for a model writing about 20 tokens a second: with the bucket alone,
    one extra delivery (a newcomer's catch-up, a tool's status) leaves the allowance one short,
    the tokens refill it no faster than they spend it, and every later token waits up to a
    window.
    """

    def __init__(self) -> None:
        self.allowance = BURST
        self.allowance_at = 0.0
        self.last_event = float("-inf")
        self.quiet = False

    def event(self, now: float) -> None:
        self.quiet |= now - self.last_event >= WINDOW
        self.last_event = now

    def wait(self, now: float) -> float:
        """Seconds to wait before delivering what has been published."""
        self.allowance = min(BURST, self.allowance + (now - self.allowance_at) / WINDOW)
        self.allowance_at = now
        if self.quiet or self.allowance >= 1:
            return 0.0
        return (1 - self.allowance) * WINDOW

    def delivered(self, now: float) -> None:
        self.allowance = max(0.0, self.allowance + (now - self.allowance_at) / WINDOW - 1)
        self.allowance_at = now
        self.quiet = False
