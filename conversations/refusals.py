"""What a page or client asks that is refused: one hierarchy, each with a `code` for the JSON API
and a message shown as is."""

from __future__ import annotations


class Refusal(Exception):
    """A request refused; nothing was stored. `code` names the kind for programs."""

    code = "refused"


class InvalidInput(Refusal):
    """Input the user can fix."""

    code = "invalid_input"


class NotFound(InvalidInput):
    """No such thing of the user's (someone else's counts as none)."""

    code = "not_found"


class Busy(InvalidInput):
    """The conversation's answer is still being written: wait for it or stop it."""

    code = "busy"


class Unavailable(InvalidInput):
    """The action does not apply to the conversation as it is."""

    code = "unavailable"


class RateLimited(Refusal):
    """Too much at once; `retry_after` is the seconds until the user may try again (or None)."""

    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class NotWaiting(Refusal):
    """No tool call by that id waits for a decision in this conversation."""

    code = "not_waiting"


class Restarting(Refusal):
    """A new answer asked of a process that is shutting down."""

    code = "restarting"


class Unauthorized(Refusal):
    """A socket without a valid API token."""

    code = "unauthorized"


class BadFrame(Refusal):
    """A socket frame that is not a valid command; `code` says how (invalid_json, too_large,
    invalid_command, unknown_command)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
