"""Conversation writes: create, configure, rename, title and delete."""

from __future__ import annotations

from collections.abc import Collection

from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from ..llm import api_style_choices, default_api_style, model_choices, model_name
from ..models import Conversation
from ..refusals import InvalidInput
from .database import database_async
from .selectors import NoSuchConversation

# The longest title a user (or the rename tool) may give.
TITLE_MAX_LENGTH = 200


def conversation_create(
    *,
    owner: User,
    model: str | None = None,
    api_style: str | None = None,
    reuse_empty: bool = False,
) -> Conversation:
    """A new conversation; a `model` or `api_style` given is checked as conversation_configure
    checks it (InvalidInput, and nothing is created), else the configured ones are used.

    With `reuse_empty` the owner's newest conversation without messages is returned instead,
    if there is one, so pressing New conversation again does not leave empty ones behind. Two
    presses at once give one conversation: the owner's row is written first, which locks it on
    PostgreSQL and takes SQLite's write lock, so the second one's check sees the first's.
    """

    with transaction.atomic():
        if reuse_empty:
            User.objects.filter(pk=owner.pk).update(last_login=F("last_login"))
            empty = (
                Conversation.objects.filter(owner=owner)
                .without_messages()
                .order_by("-created_at", "-id")
                .first()
            )
            if empty is not None:
                return empty
        conversation = Conversation.objects.create(
            owner=owner, model=model_name(), api_style=default_api_style()
        )
        if model is not None or api_style is not None:
            conversation_configure(
                conversation=conversation,
                model=conversation.model if model is None else model,
                api_style=conversation.api_style if api_style is None else api_style,
            )
    return conversation


def check_choice(
    *, model: str | None, api_style: str | None, models: Collection[str], styles: Collection[str]
) -> None:
    """InvalidInput unless the model and API style chosen (None: not chosen) are on offer."""
    if model is not None and model not in models:
        raise InvalidInput(f"{model!r} is not one of the models on offer.")
    if api_style is not None and api_style not in styles:
        raise InvalidInput(f"{api_style!r} is not an API style this model server speaks.")


def conversation_configure(*, conversation: Conversation, model: str, api_style: str) -> None:
    """Choose the model and API style the conversation's next answers use."""

    check_choice(
        model=model, api_style=api_style, models=model_choices(), styles=api_style_choices()
    )
    conversation.model = model
    conversation.api_style = api_style
    conversation.save(update_fields=["model", "api_style", "updated_at"])


def conversation_delete(*, conversation: Conversation) -> None:
    """Delete the conversation; a run still writing one of its answers ends at its next save."""
    conversation.delete()


aconversation_delete = database_async(conversation_delete)


def check_title(title: object) -> str:
    """The title as stored: whitespace runs made one space; InvalidInput if it is empty, too
    long or not text."""
    if not isinstance(title, str):
        raise InvalidInput("The title must be text.")
    title = " ".join(title.replace("\x00", "").split())
    if not title:
        raise InvalidInput("The title is empty: type a few words.")
    if len(title) > TITLE_MAX_LENGTH:
        raise InvalidInput(
            f"That title is {len(title):,} characters long; the limit is {TITLE_MAX_LENGTH}."
        )
    return title


def conversation_rename(*, owner_id: int, conversation_id: int, title: object) -> Conversation:
    """Give one of the owner's conversations a new title (from its page or the model's rename
    tool); InvalidInput for a title check_title refuses, and nothing is stored."""
    title = check_title(title)
    updated = Conversation.objects.filter(pk=conversation_id, owner_id=owner_id).update(
        title=title, updated_at=timezone.now()
    )
    if not updated:
        raise NoSuchConversation(conversation_id)
    return Conversation.objects.get(pk=conversation_id)


aconversation_rename = database_async(conversation_rename)


def conversation_title_generated(*, conversation_id: int, fallback_title: str, title: str) -> bool:
    """Store a generated title, unless the conversation was renamed since it had `fallback_title`
    (one conditional UPDATE); whether it was stored. Its place in the lists stays."""
    return bool(
        Conversation.objects.filter(pk=conversation_id, title=fallback_title).update(title=title)
    )


aconversation_title_generated = database_async(conversation_title_generated)
