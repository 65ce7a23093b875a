"""Counting stamped tokens as a client sees them: latency, loss and duplicates (stdlib only)."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

from upstream import TOKEN_PATTERN

TOKEN = re.compile(TOKEN_PATTERN)


def now_us() -> int:
    return time.time_ns() // 1000


@dataclass
class Answer:
    """One stream's tokens: when each was first seen, and how often one came twice."""

    expected: int
    first_seen: dict[int, int] = field(default_factory=dict)  # index -> latency in µs
    duplicated: int = 0
    finished: bool = False
    failed: str = ""

    def streamed(self, text: str, at_us: int) -> None:
        """Tokens in a piece of the stream; one already seen is a duplicate."""
        for index, stamp in TOKEN.findall(text):
            if int(index) in self.first_seen:
                self.duplicated += 1
            else:
                self.first_seen[int(index)] = at_us - int(stamp)

    def shown(self, text: str, at_us: int) -> None:
        """Tokens in a whole rendering of the answer: new ones count, repeats are expected."""
        for index, stamp in TOKEN.findall(text):
            self.first_seen.setdefault(int(index), at_us - int(stamp))


def percentile(ordered: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks, as numpy's default (and the peer's client)."""
    if not ordered:
        return None
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summary(system: str, answers: list[Answer], wall_s: float) -> dict[str, Any]:
    latencies = sorted(us / 1000 for answer in answers for us in answer.first_seen.values())
    expected = sum(answer.expected for answer in answers)
    seen = sum(len(answer.first_seen) for answer in answers)
    return {
        "system": system,
        "streams": len(answers),
        "answers_completed": sum(answer.finished and not answer.failed for answer in answers),
        "answers_failed": sum(bool(answer.failed) or not answer.finished for answer in answers),
        "failures": sorted({answer.failed for answer in answers if answer.failed})[:5],
        "tokens_expected": expected,
        "tokens_seen": seen,
        "tokens_lost": expected - seen,
        "tokens_duplicated": sum(answer.duplicated for answer in answers),
        "latencies_ms": latencies,
        "p50_ms": percentile(latencies, 0.50),
        "p95_ms": percentile(latencies, 0.95),
        "p99_ms": percentile(latencies, 0.99),
        "wall_s": wall_s,
    }
