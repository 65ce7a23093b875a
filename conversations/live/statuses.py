"""The statuses of answers and tool calls, and the sets they fall in: one spelling for the rows
(models), the drafts and the wire."""

from __future__ import annotations

from enum import StrEnum


class AnswerStatus(StrEnum):
    QUEUED = "queued"
    STREAMING = "streaming"
    COMPLETE = "complete"
    CANCELLED = "cancelled"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


# Being written (or waiting for the local model).
ANSWER_IN_PROGRESS = frozenset({AnswerStatus.QUEUED, AnswerStatus.STREAMING})
ANSWER_FINISHED = frozenset(AnswerStatus) - ANSWER_IN_PROGRESS
# Ended before the model finished: a new try may do better.
ANSWER_RETRYABLE = frozenset(
    {AnswerStatus.CANCELLED, AnswerStatus.FAILED, AnswerStatus.INTERRUPTED}
)


class CallStatus(StrEnum):
    STREAMING = "streaming"
    PENDING = "pending"
    AWAITING_APPROVAL = "awaiting_approval"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    DENIED = "denied"
    CANCELLED = "cancelled"


# Ended with an output the model saw (a denial's output says why).
CALL_ANSWERED = frozenset({CallStatus.SUCCEEDED, CallStatus.FAILED, CallStatus.DENIED})
