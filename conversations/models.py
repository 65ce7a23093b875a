"""Conversations, their messages and the tool calls the model made."""

from __future__ import annotations

from dataclasses import fields
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Exists, OuterRef, Subquery
from django.urls import reverse

from .live.draft import CALL_FIELDS, AnswerCheckpoint
from .live.parts import group_by_step, split_parts
from .live.statuses import (
    ANSWER_FINISHED,
    ANSWER_IN_PROGRESS,
    ANSWER_RETRYABLE,
    CALL_ANSWERED,
    AnswerStatus,
    CallStatus,
)


class ConversationQuerySet(models.QuerySet["Conversation"]):
    def with_answer_status(self) -> ConversationQuerySet:
        """Annotated with `answer_status`: the latest answer's status, None before the first."""
        latest = Message.objects.filter(
            conversation=OuterRef("pk"), role=Message.Role.ASSISTANT, superseded_at__isnull=True
        ).order_by("-created_at", "-id")
        return self.annotate(answer_status=Subquery(latest.values("status")[:1]))

    def with_messages(self) -> ConversationQuerySet:
        """Only the conversations with at least one message."""
        return self.filter(Exists(Message.objects.filter(conversation=OuterRef("pk"))))

    def without_messages(self) -> ConversationQuerySet:
        return self.exclude(Exists(Message.objects.filter(conversation=OuterRef("pk"))))


class Conversation(models.Model):
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="conversations"
    )
    title = models.CharField(max_length=200, blank=True)
    model = models.CharField(max_length=200, blank=True, help_text="The model used last.")
    api_style = models.CharField(max_length=40, default="chat_completions")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ConversationQuerySet.as_manager()

    class Meta:
        ordering = ["-updated_at", "-id"]
        indexes = [models.Index(fields=["owner", "-updated_at"])]

    def __str__(self) -> str:
        return self.title or f"Conversation {self.pk}"

    def get_absolute_url(self) -> str:
        return reverse("conversation-detail", args=[self.pk])


class Message(models.Model):
    class Role(models.TextChoices):
        USER = "user"
        ASSISTANT = "assistant"

    class Status(models.TextChoices):
        QUEUED = AnswerStatus.QUEUED.value
        STREAMING = AnswerStatus.STREAMING.value
        COMPLETE = AnswerStatus.COMPLETE.value
        CANCELLED = AnswerStatus.CANCELLED.value
        FAILED = AnswerStatus.FAILED.value
        INTERRUPTED = AnswerStatus.INTERRUPTED.value

    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="messages"
    )
    role = models.CharField(max_length=20, choices=Role.choices)
    content = models.TextField(blank=True)
    reasoning = models.TextField(blank=True, help_text="Thinking the model showed apart.")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.COMPLETE)
    error = models.TextField(blank=True)
    model = models.CharField(max_length=200, blank=True)
    input_tokens = models.PositiveIntegerField(null=True, blank=True)
    output_tokens = models.PositiveIntegerField(null=True, blank=True)
    total_tokens = models.PositiveIntegerField(null=True, blank=True)
    steps = models.PositiveSmallIntegerField(default=0, help_text="Model calls made.")
    api_style = models.CharField(max_length=40, blank=True)
    response_id = models.CharField(
        max_length=200, blank=True, help_text="The Responses API id to continue from."
    )
    stop_requested = models.BooleanField(default=False)
    seq = models.PositiveIntegerField(
        default=0, help_text="The last stream event (of this answer) the saved state includes."
    )
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    superseded_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When an edit or a regenerated answer replaced it; kept, but no longer part of "
        "the conversation.",
    )

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [models.Index(fields=["status"])]

    def __str__(self) -> str:
        return f"{self.role}: {self.content[:60]}"

    IN_PROGRESS = ANSWER_IN_PROGRESS
    FINISHED = ANSWER_FINISHED
    RETRYABLE = ANSWER_RETRYABLE

    @property
    def in_progress(self) -> bool:
        return self.status in self.IN_PROGRESS

    @property
    def duration(self) -> timedelta | None:
        if self.finished_at is None:
            return None
        return self.finished_at - self.created_at

    def tool_call_steps(self) -> list[list[ToolCall]]:
        """The tool calls grouped by the model call (step) that made them, in order."""
        return group_by_step(self.tool_calls.all())

    def parts(self) -> list[tuple[str, list[ToolCall]]]:
        """The text split where the model made tool calls: [(text, calls made after it), ...]."""
        return split_parts(self.content, self.tool_call_steps())


class ToolCall(models.Model):
    class Status(models.TextChoices):
        STREAMING = CallStatus.STREAMING.value
        PENDING = CallStatus.PENDING.value
        AWAITING_APPROVAL = CallStatus.AWAITING_APPROVAL.value
        RUNNING = CallStatus.RUNNING.value
        SUCCEEDED = CallStatus.SUCCEEDED.value
        FAILED = CallStatus.FAILED.value
        DENIED = CallStatus.DENIED.value
        CANCELLED = CallStatus.CANCELLED.value

    class Decision(models.TextChoices):
        APPROVED = "approved"
        DENIED = "denied"
        TIMED_OUT = "timed_out", "timed out"

    FINISHED = CALL_ANSWERED

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="tool_calls")
    step = models.PositiveSmallIntegerField(default=1)
    index = models.PositiveSmallIntegerField(default=0)
    text_offset = models.PositiveIntegerField(
        default=0, help_text="Length of the message text when the model made this call."
    )
    call_id = models.CharField(max_length=200)
    name = models.CharField(max_length=200)
    arguments = models.TextField(blank=True, help_text="The arguments as the model streamed them.")
    parsed_arguments = models.JSONField(null=True, blank=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.STREAMING)
    output = models.TextField(blank=True)
    error = models.TextField(blank=True)
    decision = models.CharField(
        max_length=20, choices=Decision.choices, blank=True, help_text="For a tool that asks first."
    )
    decided_by = models.CharField(
        max_length=150, blank=True, help_text="The username of whoever approved or denied it."
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    decision_reason = models.TextField(blank=True, help_text="Why it was denied, if anyone said.")
    server = models.CharField(
        max_length=64, blank=True, help_text="The MCP server of the tool; empty for the site's own."
    )
    progress = models.FloatField(null=True, blank=True, help_text="The last progress reported.")
    progress_total = models.FloatField(null=True, blank=True)
    progress_message = models.CharField(max_length=500, blank=True)
    structured_output = models.JSONField(
        null=True, blank=True, help_text="The JSON result beside the text (structuredContent)."
    )
    images = models.JSONField(
        default=list, blank=True, help_text="Images shown on the card: MIME type, size, base64."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["step", "index", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["message", "step", "index"], name="unique_tool_call_position"
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.status})"

    @property
    def duration(self) -> timedelta | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at


class ApiToken(models.Model):
    """A secret a program sends as `Authorization: Bearer <token>`; only its SHA-256 is kept."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100, blank=True, help_text="What the token is for.")
    prefix = models.CharField(max_length=16, help_text="The token's first characters, shown.")
    digest = models.CharField(max_length=64, unique=True, help_text="SHA-256 of the token.")
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.name or 'unnamed'})"

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


class UserCredential(models.Model):
    """A value a user entered for an MCP server's `user_headers` (${user:NAME}), encrypted with
    CREDENTIALS_KEY (Fernet); never shown again, logged or exported."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="credentials"
    )
    server = models.CharField(max_length=64, help_text="The MCP server's name.")
    name = models.CharField(max_length=64, help_text="The value's name, as ${user:NAME} has it.")
    encrypted = models.BinaryField(help_text="The value, encrypted (Fernet).")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["user", "server", "name"]
        constraints = [
            models.UniqueConstraint(
                fields=["user", "server", "name"], name="unique_user_credential"
            )
        ]

    def __str__(self) -> str:
        return f"{self.server}: {self.name}"


def checkpoint_columns(checkpoint: AnswerCheckpoint) -> dict[str, Any]:
    """The Message columns a checkpoint writes, by name."""
    return {
        field.name: getattr(checkpoint, field.name)
        for field in fields(checkpoint)
        if field.name != "calls"
    }


def checkpoint_calls(message_id: int, checkpoint: AnswerCheckpoint) -> list[ToolCall]:
    """The ToolCall rows of a checkpoint's calls (none if they did not change)."""
    return [
        ToolCall(message_id=message_id, **{name: getattr(call, name) for name in CALL_FIELDS})
        for call in checkpoint.calls or ()
    ]
