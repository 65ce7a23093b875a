"""Socket frames built from the same template partials as the page."""

from __future__ import annotations

from django.template.loader import render_to_string

from .models import Message

PAGE = "conversations/detail.html"


def render_messages(messages: list[Message]) -> str:
    """Every message, replacing the whole list (sent when a socket connects)."""
    running = any(message.in_progress for message in messages)
    return render_to_string(f"{PAGE}#messages", {"history": messages}) + render_run_controls(
        running=running
    )


def render_new_messages(messages: list[Message]) -> str:
    """A new turn, appended; the title too, which the first message sets."""
    running = any(message.in_progress for message in messages)
    return (
        render_to_string(f"{PAGE}#new-messages", {"history": messages})
        + render_to_string(f"{PAGE}#title", {"conversation": messages[0].conversation})
        + render_run_controls(running=running)
    )


def render_message(message: Message) -> str:
    return render_to_string(f"{PAGE}#message", {"message": message}) + render_run_controls(
        running=message.in_progress
    )


def render_run_controls(*, running: bool) -> str:
    return render_to_string(f"{PAGE}#run-controls", {"running": running})


def render_chat_error(error: str) -> str:
    return render_to_string(f"{PAGE}#chat-error", {"error": error})


def render_composer() -> str:
    """A fresh, empty message form, plus a cleared error line."""
    return render_to_string(f"{PAGE}#composer", {}) + render_chat_error("")


def render_pong() -> str:
    """The answer to {"action": "ping"}: proof the socket and the server's event loop are alive."""
    return '<template id="pong"></template>'
