"""Turn writes: a new message or a message action stored with its empty answer (validate first,
then one create)."""

from __future__ import annotations

from collections.abc import Collection
from datetime import timedelta

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from ..limits import message_rate_take
from ..llm import api_style_choices, model_choices
from ..models import Conversation, Message
from ..refusals import Busy, InvalidInput, NotFound, RateLimited, Unavailable
from .conversations import check_choice
from .database import database_async
from .selectors import answer_cut_off, current_messages, title_fallback


def check_message_text(text: object) -> str:
    if not isinstance(text, str):
        raise InvalidInput("The message must be text.")
    if "\x00" in text:
        raise InvalidInput("The message contains a NUL character (\\u0000); remove it.")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # JSON's "\ud800" escapes decode to half a UTF-16 pair, which is no character at all.
        raise InvalidInput(
            "The message contains a lone UTF-16 surrogate (such as \\ud800), which is not text."
        ) from None
    text = text.strip()
    if not text:
        raise InvalidInput("Type a message first.")
    limit = settings.CHAT_MESSAGE_MAX_LENGTH
    if len(text) > limit:
        raise InvalidInput(
            f"That message is {len(text):,} characters long; the limit is {limit:,}."
        )
    return str(text)


def turn_start(
    *,
    conversation: Conversation,
    text: object,
    model: str | None = None,
    api_style: str | None = None,
) -> tuple[Message, Message]:
    """Store the user's message and an empty streaming assistant message for the answer.

    `model` and `api_style`, when given, are chosen for this answer and the conversation's next
    ones, together with it: input refused stores nothing. Raises InvalidInput for text, a
    model or an API style that cannot be used (Busy while an answer is being written),
    and RateLimited past the user's messages per minute or answers at once.
    """
    text = check_message_text(text)
    models, styles = answer_choices(model=model, api_style=api_style)
    message_rate_take(user_id=conversation.owner_id)
    with transaction.atomic():
        locked = turn_lock(conversation=conversation)
        user_message = Message.objects.create(
            conversation=locked, role=Message.Role.USER, content=text
        )
        assistant_message = answer_create(
            conversation=locked, models=models, styles=styles, model=model, api_style=api_style
        )
    return user_message, assistant_message


aturn_start = database_async(turn_start)


class ActionUnavailable(Unavailable):
    """Regenerate, retry or continue asked of an answer that is not in the state for it."""


class NoSuchMessage(NotFound):
    """The message to edit is not a current user message of this conversation."""


# The user message `turn_continue` stores: the model reads it, and the page shows it.
CONTINUE_TEXT = "Continue where you left off."


def turn_regenerate(*, conversation: Conversation) -> tuple[Message, Message]:
    """Supersede the conversation's latest answer (finished in any way) and start a new answer
    to the same user message; the user message and the new (streaming) answer.

    Raises Busy while an answer is being written, ActionUnavailable when there is no
    finished answer, and RateLimited as turn_start does. Nothing is written when it raises.
    """
    return answer_again(
        conversation=conversation,
        statuses=Message.FINISHED,
        refusal="There is no finished answer to regenerate.",
    )


aturn_regenerate = database_async(turn_regenerate)


def turn_retry(*, conversation: Conversation) -> tuple[Message, Message]:
    """turn_regenerate, for a latest answer that failed, was interrupted or was stopped only."""
    return answer_again(
        conversation=conversation,
        statuses=Message.RETRYABLE,
        refusal="Only an answer that failed, was interrupted or was stopped can be retried.",
    )


aturn_retry = database_async(turn_retry)


def answer_again(
    *, conversation: Conversation, statuses: Collection[str], refusal: str
) -> tuple[Message, Message]:
    models, styles = answer_choices()
    with transaction.atomic():
        locked = turn_lock(conversation=conversation)
        latest = current_messages(locked).order_by("-created_at", "-id").first()
        if latest is None or latest.role != Message.Role.ASSISTANT or latest.status not in statuses:
            raise ActionUnavailable(refusal)
        question = (
            current_messages(locked)
            .filter(role=Message.Role.USER, created_at__lte=latest.created_at)
            .order_by("-created_at", "-id")
            .first()
        )
        if question is None:
            raise ActionUnavailable(refusal)
        # Taken once the action is known to apply: one refused costs nothing.
        message_rate_take(user_id=conversation.owner_id)
        latest.superseded_at = timezone.now()
        latest.save(update_fields=["superseded_at"])
        assistant_message = answer_create(conversation=locked, models=models, styles=styles)
    return question, assistant_message


def turn_continue(*, conversation: Conversation) -> tuple[Message, Message]:
    """Ask the model to go on with a latest answer cut off at the token limit: a new turn whose
    user message is CONTINUE_TEXT (shown like any other); the user message and the new answer.

    The cut-off answer stays current, so the model reads it. Raises like turn_regenerate.
    """
    models, styles = answer_choices()
    with transaction.atomic():
        locked = turn_lock(conversation=conversation)
        latest = current_messages(locked).order_by("-created_at", "-id").first()
        if latest is None or not answer_cut_off(latest):
            raise ActionUnavailable("Only an answer cut off at the token limit can be continued.")
        message_rate_take(user_id=conversation.owner_id)
        user_message = Message.objects.create(
            conversation=locked, role=Message.Role.USER, content=CONTINUE_TEXT
        )
        assistant_message = answer_create(conversation=locked, models=models, styles=styles)
    return user_message, assistant_message


aturn_continue = database_async(turn_continue)


def turn_edit(
    *, conversation: Conversation, message_id: object, text: object
) -> tuple[Message, Message]:
    """Give one of the conversation's current user messages new text: it and every message after
    it are superseded, and a new user message with the text and its answer start.

    The text is checked as turn_start checks it. Raises NoSuchMessage for a message that is not
    a current user message of this conversation, and otherwise like turn_regenerate.
    """
    text = check_message_text(text)
    if isinstance(message_id, str) and message_id.strip().isdecimal():
        message_id = int(message_id)
    if not isinstance(message_id, int) or isinstance(message_id, bool):
        raise NoSuchMessage("Say which message to edit by its id.")
    models, styles = answer_choices()
    with transaction.atomic():
        locked = turn_lock(conversation=conversation)
        edited = current_messages(locked).filter(pk=message_id, role=Message.Role.USER).first()
        if edited is None:
            raise NoSuchMessage("That message is not one of this conversation's to edit.")
        message_rate_take(user_id=conversation.owner_id)
        current_messages(locked).filter(
            Q(created_at__gt=edited.created_at) | Q(created_at=edited.created_at, pk__gte=edited.pk)
        ).update(superseded_at=timezone.now())
        user_message = Message.objects.create(
            conversation=locked, role=Message.Role.USER, content=text
        )
        assistant_message = answer_create(conversation=locked, models=models, styles=styles)
    return user_message, assistant_message


aturn_edit = database_async(turn_edit)


def answer_choices(
    *, model: str | None = None, api_style: str | None = None
) -> tuple[list[str], dict[str, str]]:
    """The models and API styles on offer, after checking the ones chosen (None: not chosen)."""

    # Asked before any lock is taken: the model list may come from the model server.
    models = model_choices()
    styles = api_style_choices()
    if not models:
        raise InvalidInput("No model is configured, so nothing can answer yet.")
    check_choice(model=model, api_style=api_style, models=models, styles=styles)
    return models, styles


def turn_lock(*, conversation: Conversation) -> Conversation:
    """The conversation's row, locked until the transaction ends, so two tabs cannot start two
    answers at once; Busy while one is being written. In a transaction only."""
    check_concurrent_answers(user_id=conversation.owner_id)
    locked = Conversation.objects.select_for_update().get(pk=conversation.pk)
    if locked.messages.filter(status__in=Message.IN_PROGRESS).exists():
        raise Busy("An answer is still being written: wait for it or press Stop.")
    return locked


def answer_create(
    *,
    conversation: Conversation,
    models: list[str],
    styles: Collection[str],
    model: str | None = None,
    api_style: str | None = None,
) -> Message:
    """The empty streaming answer of a new turn, with the model and API style it uses (kept as
    the conversation's), in turn_lock's transaction; the first message sets the title."""
    # The locked row holds the model and API style chosen since the socket opened; a choice the
    # server no longer offers falls back to the configured one.
    if model is None:
        model = conversation.model if conversation.model in models else models[0]
    if api_style is None:
        api_style = (
            conversation.api_style if conversation.api_style in styles else "chat_completions"
        )
    assistant_message = Message.objects.create(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        status=Message.Status.STREAMING,
        model=model,
        api_style=api_style,
        heartbeat_at=timezone.now(),
    )
    conversation.model = model
    conversation.api_style = api_style
    if not conversation.title:
        first = current_messages(conversation).filter(role=Message.Role.USER).first()
        conversation.title = title_fallback(first.content if first else "")
    conversation.save(update_fields=["model", "api_style", "title", "updated_at"])
    return assistant_message


def check_concurrent_answers(*, user_id: int) -> None:
    """Raise RateLimited when the user already has CHAT_CONCURRENT_ANSWERS answers running.

    Called in turn_start's transaction: the user's row is locked, so two conversations starting
    at once (in any processes) are counted one after the other. Runs whose process died (an old
    heartbeat) do not count.
    """
    limit = settings.CHAT_CONCURRENT_ANSWERS
    if limit <= 0:
        return
    list(User.objects.select_for_update().filter(pk=user_id).values_list("pk", flat=True))
    running = Message.objects.filter(
        conversation__owner_id=user_id,
        status__in=Message.IN_PROGRESS,
        heartbeat_at__gte=timezone.now() - timedelta(seconds=settings.CHAT_RUN_STALE_AFTER),
    ).count()
    if running >= limit:
        raise RateLimited(
            f"{running} of your answers are being written, the most at once: "
            "send this when one has finished (or press Stop on one)."
        )
