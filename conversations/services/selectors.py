"""Reads: conversations, messages and answers as pages, sockets and runs see them; nothing here
writes."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import AnonymousUser, User
from django.db.models import Exists, OuterRef, Prefetch, Q, QuerySet, Sum
from django.db.models.functions import Coalesce

from ..live.draft import AnswerDraft
from ..models import Conversation, Message, ToolCall
from ..refusals import NotFound
from ..streaming.loop import TRUNCATED
from .database import database_async

SIDEBAR_LIMIT = 50
SEARCH_LIMIT = 20
SEARCH_QUERY_MAX_LENGTH = 200
SNIPPET_RADIUS = 60


def conversation_list(*, user: User, with_empty: bool = True) -> QuerySet[Conversation]:
    """The user's conversations, newest activity first; without `with_empty`, only those with a
    message (the page's list: a New conversation nobody wrote in is not listed)."""
    conversations = Conversation.objects.filter(owner=user)
    if not with_empty:
        conversations = conversations.with_messages()
    return conversations.order_by("-updated_at", "-id")


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


def conversation_get(*, user: User | AnonymousUser, conversation_id: int) -> Conversation:
    """The user's conversation; anyone else's raises DoesNotExist, exactly like a missing one."""
    if not user.is_authenticated:
        raise Conversation.DoesNotExist
    return Conversation.objects.get(pk=conversation_id, owner=user)


aconversation_get = database_async(conversation_get)


class NoSuchConversation(NotFound):
    """The user has no conversation by that id (someone else's counts as none)."""

    def __init__(self, conversation_id: int) -> None:
        super().__init__(f"There is no conversation {conversation_id} of yours.")


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


# A cut-off answer is stored complete, with the reason as its error (streaming.loop TRUNCATED).
CUT_OFF_ERRORS = frozenset({TRUNCATED["length"], TRUNCATED["incomplete"]})


def answer_cut_off(message: Message | AnswerDraft) -> bool:
    """Whether the answer ended at the token limit (or incomplete), so it can be continued."""
    return message.status == Message.Status.COMPLETE and message.error in CUT_OFF_ERRORS


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


def answer_draft(message: Message) -> AnswerDraft:
    """The saved answer as a draft at its saved `seq`, for following its stream from there.

    Reads the message's tool calls, which callers on the event loop prefetch.
    """
    return AnswerDraft.from_record(message, seq=message.seq)


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

# The first message's first characters are a conversation's title until it gets another.
TITLE_LENGTH = 60


def title_fallback(text: str) -> str:
    """A conversation's title until it gets another: its first message's first characters."""
    return text if len(text) <= TITLE_LENGTH else text[: TITLE_LENGTH - 1] + "…"


# The image types a card shows (as the tool results' checks let through), served as they are.
IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})


@dataclass(frozen=True)
class ToolCallImage:
    mime_type: str
    data: bytes


def tool_call_image(
    *, user: User | AnonymousUser, message_id: int, step: int, index: int, number: int
) -> ToolCallImage | None:
    """Image `number` of one of the user's tool calls; ToolCall.DoesNotExist for someone else's
    (exactly like a missing one) or one that has no such image; None while its answer runs and
    the image may not be saved yet."""
    if not user.is_authenticated:
        raise ToolCall.DoesNotExist
    call = (
        ToolCall.objects.select_related("message")
        .only("images", "message__status")
        .get(message_id=message_id, step=step, index=index, message__conversation__owner=user)
    )
    if number >= len(call.images):
        if call.message.status in Message.IN_PROGRESS:
            return None
        raise ToolCall.DoesNotExist
    image = call.images[number]
    if image.get("mime_type") not in IMAGE_TYPES:
        raise ToolCall.DoesNotExist
    return ToolCallImage(image["mime_type"], base64.b64decode(image["data"]))


atool_call_image = database_async(tool_call_image)
