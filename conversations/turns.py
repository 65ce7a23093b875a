"""A new turn, from any page or API client: stored, its answer started, and announced to every
socket of the conversation (`conversation.turn`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from . import rendering, runner, services
from .actions import answers_sweep, conversation_notify
from .models import Conversation, Message
from .refusals import InvalidInput


async def turn_start(
    *,
    conversation: Conversation,
    text: object,
    model: str | None = None,
    api_style: str | None = None,
) -> tuple[Message, Message]:
    """Store the user's message and the empty answer (services.turn_start, which raises on
    input refused), after ending an answer whose process died: it does not block the turn."""
    await answers_sweep(conversation_id=conversation.pk)
    return await services.aturn_start(
        conversation=conversation, text=text, model=model, api_style=api_style
    )


ACTIONS = ("regenerate", "retry", "continue", "edit")


async def turn_redo(
    *, conversation: Conversation, action: str, message_id: object = None, text: object = None
) -> tuple[Message, Message]:
    """A turn made by a message action (ACTIONS) instead of a new message: stored like
    turn_start's (raising as it does), with whatever it replaces superseded."""
    await answers_sweep(conversation_id=conversation.pk)
    match action:
        case "regenerate":
            return await services.aturn_regenerate(conversation=conversation)
        case "retry":
            return await services.aturn_retry(conversation=conversation)
        case "continue":
            return await services.aturn_continue(conversation=conversation)
        case "edit":
            return await services.aturn_edit(
                conversation=conversation, message_id=message_id, text=text
            )
    raise InvalidInput(f"Unknown message action {action!r}.")


async def turn_run(
    *,
    user_message: Message,
    assistant_message: Message,
    show: Callable[[dict[str, Any]], Awaitable[None]],
    branch: bool = False,
) -> None:
    """Start the answer, `show` the new turn on the socket that sent it, then announce it.

    Every socket of the conversation shows the turn as built here, and follows the answer from
    this state: none of them reads it back from the database. With `branch` (a turn_redo turn,
    which superseded messages) the turn's page fragment replaces the whole message list.
    """
    earlier = None
    if branch:
        current = await services.amessage_list(conversation=assistant_message.conversation)
        earlier = [message for message in current if message.pk != assistant_message.pk]
    run = await runner.start_generation(assistant_message)
    answer = run.draft
    if earlier is None:
        html = rendering.render_new_messages([user_message, answer])
    else:
        html = rendering.render_branch(
            conversation=assistant_message.conversation, messages=[*earlier, answer]
        )
    turn = {
        "type": "conversation.turn",
        "html": html,
        "user_message": {
            "id": user_message.pk,
            "content": user_message.content,
            "created_at": user_message.created_at.isoformat(),
        },
        "answer": answer.state(),
        "seq": answer.seq,
        "title": assistant_message.conversation.title,
    }
    if earlier is not None:
        # What a client still holds and is not listed was superseded.
        turn["message_ids"] = [message.pk for message in earlier] + [answer.id]
    # The sender first, at once: the answer's first tokens may already be on their way.
    await show(turn)
    await conversation_notify(assistant_message.conversation_id, turn)
