"""Reads and writes for accounts, conversations and turns; views and consumers call these."""

from __future__ import annotations

from collections.abc import Callable, Collection, Coroutine
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any, cast

from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth.models import AnonymousUser, User
from django.db import connection, transaction
from django.db.models import Exists, F, OuterRef, Prefetch, Q, QuerySet, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from .limits import message_rate_take
from .live.draft import CALL_FIELDS, AnswerDraft, answer_state
from .models import Conversation, Message, ToolCall
from .refusals import Busy, InvalidInput, NotFound, RateLimited, Unavailable
from .streaming.events import ToolCallReady
from .streaming.loop import TRUNCATED, assistant_tool_calls_message, tool_output_message

# The first message's first characters are a conversation's title until it gets another.
TITLE_LENGTH = 60
# The longest title a user (or the rename tool) may give.
TITLE_MAX_LENGTH = 200
SIDEBAR_LIMIT = 50
SEARCH_LIMIT = 20
SEARCH_QUERY_MAX_LENGTH = 200
SNIPPET_RADIUS = 60
# How far `runs_end` moves an ended answer's `seq` past its last save: above any event its run
# may have sent without saving it, so whoever holds those sees the ended state as newer.
ENDED_SEQ_STEP = 1_000_000
INTERRUPTED_ERROR = "The server stopped while this answer was being written."


def database_async[**P, R](function: Callable[P, R]) -> Callable[P, Coroutine[Any, Any, R]]:
    """`function` for async code: run in the database thread, with the connections that broke or
    outlived DATABASE_CONN_MAX_AGE closed before and after (channels' `database_sync_to_async`,
    typed). Consumers and runs live for minutes; Django closes stale connections only around
    requests."""
    return cast(Callable[P, Coroutine[Any, Any, R]], database_sync_to_async(function))


class SignupClosed(Exception):
    """Sign-up is not open (the SIGNUP setting); the message says who creates accounts."""


def signup_open() -> bool:
    """Whether the sign-up page offers its form (the decision itself is user_create's)."""
    if settings.SIGNUP == "open":
        return True
    return settings.SIGNUP == "first-user-only" and not User.objects.exists()


def user_create(*, username: str, password: str) -> User:
    """Create an account; the first account on the site becomes a superuser.

    Exactly one account is first, however many sign up at once: on PostgreSQL the user table is
    locked against other inserts until the decision commits; on SQLite the insert itself takes
    the database's write lock, so the second sign-up's check sees the first. With SIGNUP
    "first-user-only" every later sign-up raises SignupClosed; "closed" refuses them all.
    """
    if settings.SIGNUP == "closed":
        raise SignupClosed(CLOSED_MESSAGE)
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                table = connection.ops.quote_name(User._meta.db_table)
                cursor.execute(f"LOCK TABLE {table} IN SHARE ROW EXCLUSIVE MODE")
        user = User.objects.create_user(username=username, password=password)
        if User.objects.exclude(pk=user.pk).exists():
            if settings.SIGNUP == "first-user-only":
                raise SignupClosed(CLOSED_MESSAGE)
            return user
        user.is_staff = user.is_superuser = True
        user.save(update_fields=["is_staff", "is_superuser"])
        return user


CLOSED_MESSAGE = "Sign-up is closed: the site's admin creates accounts."


def conversation_list(*, user: User, with_empty: bool = True) -> QuerySet[Conversation]:
    """The user's conversations, newest activity first; without `with_empty`, only those with a
    message (the page's list: a New conversation nobody wrote in is not listed)."""
    conversations = Conversation.objects.filter(owner=user)
    if not with_empty:
        conversations = conversations.with_messages()
    return conversations.order_by("-updated_at", "-id")


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
    from .llm import default_api_style, model_name

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


def title_fallback(text: str) -> str:
    """A conversation's title until it gets another: its first message's first characters."""
    return text if len(text) <= TITLE_LENGTH else text[: TITLE_LENGTH - 1] + "…"


def sidebar_conversations(
    *, user: User, current: Conversation | None = None, limit: int = SIDEBAR_LIMIT
) -> tuple[list[Conversation], bool]:
    """The user's conversations for the page's sidebar, newest activity first, annotated with
    `answer_status`: those with a message, and `current` even when it has none. Up to `limit`;
    the flag says whether there are more."""
    has_message = Exists(Message.objects.filter(conversation=OuterRef("pk")))
    shown = Q(has_message) | Q(pk=current.pk) if current is not None else Q(has_message)
    rows = list(
        Conversation.objects.filter(owner=user)
        .filter(shown)
        .with_answer_status()
        .order_by("-updated_at", "-id")[: limit + 1]
    )
    return rows[:limit], len(rows) > limit


def sidebar_entry(*, conversation_id: int) -> Conversation:
    """One conversation as its sidebar entry shows it (with `answer_status`)."""
    return Conversation.objects.with_answer_status().get(pk=conversation_id)


asidebar_entry = database_async(sidebar_entry)


@dataclass(frozen=True, slots=True)
class SearchResult:
    conversation: Conversation
    # The snippet around the first match: the text before it, the match, the text after it.
    before: str
    match: str
    after: str


def conversation_search(*, user: User, query: str, limit: int = SEARCH_LIMIT) -> list[SearchResult]:
    """The user's conversations whose title or a current message (not superseded) contains
    `query` (ignoring case), newest activity first, each with a snippet of the newest matching
    message (or the title).
    Never anyone else's; nothing for an empty query."""
    query = " ".join(query.split())
    if not query:
        return []
    current = Message.objects.filter(superseded_at__isnull=True, content__icontains=query)
    matching = current.filter(conversation=OuterRef("pk"))
    conversations = (
        Conversation.objects.filter(owner=user)
        .filter(Q(title__icontains=query) | Exists(matching))
        .order_by("-updated_at", "-id")[:limit]
    )
    results = []
    for conversation in conversations:
        text = (
            current.filter(conversation=conversation)
            .order_by("-created_at", "-id")
            .values_list("content", flat=True)
            .first()
        )
        results.append(SearchResult(conversation, *snippet(text or conversation.title, query)))
    return results


def snippet(text: str, query: str, radius: int = SNIPPET_RADIUS) -> tuple[str, str, str]:
    """The text around the first match of `query` (ignoring case): before, match, after."""
    at = text.lower().find(query.lower())
    if at < 0:
        return (text[: radius * 2] + ("…" if len(text) > radius * 2 else ""), "", "")
    start = max(at - radius, 0)
    end = min(at + len(query) + radius, len(text))
    before = ("…" if start else "") + text[start:at]
    after = text[at + len(query) : end] + ("…" if end < len(text) else "")
    return before, text[at : at + len(query)], after


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
    from .llm import api_style_choices, model_choices

    check_choice(
        model=model, api_style=api_style, models=model_choices(), styles=api_style_choices()
    )
    conversation.model = model
    conversation.api_style = api_style
    conversation.save(update_fields=["model", "api_style", "updated_at"])


def conversation_get(*, user: User | AnonymousUser, conversation_id: int) -> Conversation:
    """The user's conversation; anyone else's raises DoesNotExist, exactly like a missing one."""
    if not user.is_authenticated:
        raise Conversation.DoesNotExist
    return Conversation.objects.get(pk=conversation_id, owner=user)


aconversation_get = database_async(conversation_get)


def conversation_delete(*, conversation: Conversation) -> None:
    """Delete the conversation; a run still writing one of its answers ends at its next save."""
    conversation.delete()


aconversation_delete = database_async(conversation_delete)


class NoSuchConversation(NotFound):
    """The user has no conversation by that id (someone else's counts as none)."""

    def __init__(self, conversation_id: int) -> None:
        super().__init__(f"There is no conversation {conversation_id} of yours.")


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


def conversation_owned(*, owner_id: int, conversation_id: int) -> Conversation:
    """One of the owner's conversations by id; NoSuchConversation if there is none."""
    try:
        return Conversation.objects.get(pk=conversation_id, owner_id=owner_id)
    except Conversation.DoesNotExist:
        raise NoSuchConversation(conversation_id) from None


aconversation_owned = database_async(conversation_owned)


def current_messages(conversation: Conversation) -> QuerySet[Message]:
    """The conversation's messages that an edit or a new answer has not superseded."""
    return conversation.messages.filter(superseded_at__isnull=True)


def message_list(*, conversation: Conversation) -> list[Message]:
    """The conversation's current messages with their tool calls, oldest first (superseded ones
    are left out)."""
    return list(
        current_messages(conversation)
        .order_by("created_at", "id")
        .prefetch_related(ordered_calls())
    )


def ordered_calls() -> Prefetch[Any]:
    return Prefetch("tool_calls", queryset=ToolCall.objects.order_by("step", "index"))


amessage_list = database_async(message_list)


def message_get(*, conversation_id: int, message_id: int) -> Message:
    return (
        Message.objects.select_related("conversation")
        .prefetch_related(ordered_calls())
        .get(pk=message_id, conversation_id=conversation_id)
    )


amessage_get = database_async(message_get)


def usage_total(messages: list[Message]) -> dict[str, int]:
    """Tokens used by the whole conversation, summed over its answers."""
    return {
        "input": sum(message.input_tokens or 0 for message in messages),
        "output": sum(message.output_tokens or 0 for message in messages),
        "total": sum(message.total_tokens or 0 for message in messages),
    }


def conversation_usage(*, conversation_id: int, answer: AnswerDraft) -> dict[str, int]:
    """Tokens used by the conversation, `answer`'s as it is now (its row may lag behind)."""
    others = Message.objects.filter(conversation_id=conversation_id).exclude(pk=answer.id)
    totals = others.aggregate(
        input=Coalesce(Sum("input_tokens"), 0),
        output=Coalesce(Sum("output_tokens"), 0),
        total=Coalesce(Sum("total_tokens"), 0),
    )
    return {
        "input": totals["input"] + (answer.input_tokens or 0),
        "output": totals["output"] + (answer.output_tokens or 0),
        "total": totals["total"] + (answer.total_tokens or 0),
    }


aconversation_usage = database_async(conversation_usage)


def runs_end(
    *,
    status: str,
    error: str = "",
    conversation_id: int | None = None,
    message_ids: Collection[int] | None = None,
    stale: bool = False,
) -> list[Message]:
    """End answers no live process is writing, keeping their text; those this call ended.

    `stale` picks the answers whose run has not saved for CHAT_RUN_STALE_AFTER seconds (its
    process died). Each answer ends with one conditional UPDATE, so of two processes ending the
    same answer only one does, and a run that saved in the meantime (a live one) is left alone.
    Unfinished tool calls are cancelled. The answer's `seq` moves ENDED_SEQ_STEP past its last
    save: its run may have sent events it never saved, and the ended state replaces them.
    """
    now = timezone.now()
    rows = Message.objects.filter(status__in=Message.IN_PROGRESS)
    if conversation_id is not None:
        rows = rows.filter(conversation_id=conversation_id)
    if message_ids is not None:
        rows = rows.filter(pk__in=list(message_ids))
    if stale:
        beat_before = now - timedelta(seconds=settings.CHAT_RUN_STALE_AFTER)
        rows = rows.filter(heartbeat_at__lt=beat_before)
    ended = []
    for message_id in list(rows.values_list("pk", flat=True)):
        with transaction.atomic():
            ended_rows = rows.filter(pk=message_id)
            if not ended_rows.update(
                status=status, error=error, finished_at=now, seq=F("seq") + ENDED_SEQ_STEP
            ):
                continue
            ToolCall.objects.filter(message_id=message_id).exclude(
                status__in=ToolCall.FINISHED
            ).update(status=ToolCall.Status.CANCELLED, finished_at=now)
        ended.append(message_id)
    if not ended:
        return []
    return list(Message.objects.filter(pk__in=ended).prefetch_related(ordered_calls()))


aruns_end = database_async(runs_end)


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


# A cut-off answer is stored complete, with the reason as its error (streaming.loop TRUNCATED).
CUT_OFF_ERRORS = frozenset({TRUNCATED["length"], TRUNCATED["incomplete"]})
# The user message `turn_continue` stores: the model reads it, and the page shows it.
CONTINUE_TEXT = "Continue where you left off."


def answer_cut_off(message: Message | AnswerDraft) -> bool:
    """Whether the answer ended at the token limit (or incomplete), so it can be continued."""
    return message.status == Message.Status.COMPLETE and message.error in CUT_OFF_ERRORS


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
    from .llm import api_style_choices, model_choices

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


def stop_request(*, conversation: Conversation) -> list[int]:
    """Mark the conversation's running answers to stop; their ids.

    The stop itself travels through `live.hub`; a run that misses it sees this flag at its next
    save.
    """
    running = conversation.messages.filter(status__in=Message.IN_PROGRESS)
    message_ids = list(running.values_list("pk", flat=True))
    running.filter(pk__in=message_ids).update(stop_requested=True)
    return message_ids


astop_request = database_async(stop_request)


def last_answer(*, conversation: Conversation, before: Message) -> Message | None:
    """The current assistant message answered just before `before`, if any."""
    return (
        current_messages(conversation)
        .filter(role=Message.Role.ASSISTANT, created_at__lte=before.created_at)
        .exclude(pk=before.pk)
        .order_by("-created_at", "-id")
        .first()
    )


alast_answer = database_async(last_answer)


def provider_history(*, conversation: Conversation, before: Message) -> list[dict[str, Any]]:
    """The Chat Completions messages for everything said before `before` (current messages only).

    Each stored tool call is paired with its output, as the API requires; calls that never
    produced an output (a stopped run) are left out together with their step.
    """
    history: list[dict[str, Any]] = [{"role": "system", "content": settings.LLM_SYSTEM_PROMPT}]
    messages = (
        current_messages(conversation)
        .filter(created_at__lte=before.created_at)
        .exclude(pk=before.pk)
    )
    for message in messages.order_by("created_at", "id").prefetch_related("tool_calls"):
        if message.role == Message.Role.USER:
            history.append({"role": "user", "content": message.content})
            continue
        offset = 0
        for step_calls in message.tool_call_steps():
            answered = [call for call in step_calls if call.status in ToolCall.FINISHED]
            if not answered:
                continue
            text = message.content[offset : answered[0].text_offset]
            offset = answered[0].text_offset
            history.append(
                assistant_tool_calls_message(
                    text,
                    [ToolCallReady(c.index, c.call_id, c.name, c.arguments) for c in answered],
                )
            )
            history.extend(tool_output_message(call.call_id, call.output) for call in answered)
        rest = message.content[offset:]
        if rest:
            history.append({"role": "assistant", "content": rest})
    return history


aprovider_history = database_async(provider_history)


def answer_draft(message: Message) -> AnswerDraft:
    """The saved answer as a draft at its saved `seq`, for following its stream from there.

    Reads the message's tool calls, which callers on the event loop prefetch.
    """
    return AnswerDraft.from_state(answer_state(message), seq=message.seq)


class Saved(StrEnum):
    SAVED = "saved"
    STOP_REQUESTED = "stop_requested"
    # Ended without its run: by a process that found it stale, or a Stop that found no run.
    ENDED = "ended"
    GONE = "gone"


def answer_save(
    *,
    message_id: int,
    fields: dict[str, Any],
    calls: list[dict[str, Any]] | None,
    final: bool = False,
) -> Saved:
    """Write a running answer's progress to its rows: one UPDATE, and one upsert of its calls.

    Progress is not written over an answer someone asked to stop: its run stops instead and
    writes its end (`final`), which is how a Stop pressed in another process reaches it. Nothing
    is written over an answer that was ended without its run (`runs_end`).
    """
    now = timezone.now()
    with transaction.atomic():
        rows = Message.objects.filter(pk=message_id, status__in=Message.IN_PROGRESS)
        if not final:
            rows = rows.filter(stop_requested=False)
        if not rows.update(**fields, heartbeat_at=now):
            status = Message.objects.filter(pk=message_id).values_list("status", flat=True).first()
            if status is None:
                return Saved.GONE
            return Saved.STOP_REQUESTED if status in Message.IN_PROGRESS else Saved.ENDED
        if calls:
            ToolCall.objects.bulk_create(
                [ToolCall(message_id=message_id, **call) for call in calls],
                update_conflicts=True,
                unique_fields=["message", "step", "index"],
                update_fields=[name for name in CALL_FIELDS if name not in ("step", "index")],
            )
        if final:
            Conversation.objects.filter(messages=message_id).update(updated_at=now)
    return Saved.SAVED


aanswer_save = database_async(answer_save)


def answer_latest(*, conversation: Conversation) -> Message | None:
    """The conversation's latest current assistant message, with its tool calls."""
    return (
        current_messages(conversation)
        .filter(role=Message.Role.ASSISTANT)
        .prefetch_related(ordered_calls())
        .order_by("-created_at", "-id")
        .first()
    )


aanswer_latest = database_async(answer_latest)


@dataclass(frozen=True, slots=True)
class FirstExchange:
    """A conversation's first question and answer, and the title it has had since."""

    conversation_id: int
    fallback_title: str
    question: str
    answer: str


def first_exchange(*, answer_id: int) -> FirstExchange | None:
    """The exchange `answer_id` completed, if it is its conversation's first current answer,
    complete, and the conversation's title is still the one its first message gave it; else
    None."""
    answer = (
        Message.objects.select_related("conversation")
        .filter(
            pk=answer_id,
            role=Message.Role.ASSISTANT,
            status=Message.Status.COMPLETE,
            superseded_at__isnull=True,
        )
        .first()
    )
    if answer is None or last_answer(conversation=answer.conversation, before=answer) is not None:
        return None
    conversation = answer.conversation
    questions = conversation.messages.filter(role=Message.Role.USER).order_by("created_at", "id")
    # The title came from the first message ever sent, which an edit may have superseded since.
    first_sent = questions.values_list("content", flat=True).first()
    question = questions.filter(superseded_at__isnull=True).values_list("content", flat=True)
    asked = question.first()
    if first_sent is None or asked is None or conversation.title != title_fallback(first_sent):
        return None
    return FirstExchange(conversation.pk, conversation.title, asked, answer.content)


afirst_exchange = database_async(first_exchange)


def conversation_title_generated(*, conversation_id: int, fallback_title: str, title: str) -> bool:
    """Store a generated title, unless the conversation was renamed since it had `fallback_title`
    (one conditional UPDATE); whether it was stored. Its place in the lists stays."""
    return bool(
        Conversation.objects.filter(pk=conversation_id, title=fallback_title).update(title=title)
    )


aconversation_title_generated = database_async(conversation_title_generated)
