"""Run storage: an answer's checkpoints, Stop requests, and ending answers no run writes."""

from __future__ import annotations

from collections.abc import Collection
from datetime import timedelta
from enum import StrEnum

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from ..live.draft import CALL_FIELDS, AnswerCheckpoint
from ..models import Conversation, Message, ToolCall, checkpoint_calls, checkpoint_columns
from .database import database_async
from .selectors import ordered_calls

# How far `runs_end` moves an ended answer's `seq` past its last save: above any event its run
# may have sent without saving it, so whoever holds those sees the ended state as newer.
ENDED_SEQ_STEP = 1_000_000
INTERRUPTED_ERROR = "The server stopped while this answer was being written."


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


class Saved(StrEnum):
    SAVED = "saved"
    STOP_REQUESTED = "stop_requested"
    # Ended without its run: by a process that found it stale, or a Stop that found no run.
    ENDED = "ended"
    GONE = "gone"


def answer_save(
    *,
    message_id: int,
    checkpoint: AnswerCheckpoint,
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
        if not rows.update(**checkpoint_columns(checkpoint), heartbeat_at=now):
            status = Message.objects.filter(pk=message_id).values_list("status", flat=True).first()
            if status is None:
                return Saved.GONE
            return Saved.STOP_REQUESTED if status in Message.IN_PROGRESS else Saved.ENDED
        if calls := checkpoint_calls(message_id, checkpoint):
            ToolCall.objects.bulk_create(
                calls,
                update_conflicts=True,
                unique_fields=["message", "step", "index"],
                update_fields=[name for name in CALL_FIELDS if name not in ("step", "index")],
            )
        if final:
            Conversation.objects.filter(messages=message_id).update(updated_at=now)
    return Saved.SAVED


aanswer_save = database_async(answer_save)
