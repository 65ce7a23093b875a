"""Admin: conversations with their messages, messages with their tool calls, API tokens."""

from __future__ import annotations

import os
from typing import Any

from django.conf import settings
from django.contrib import admin, messages
from django.db.models import Count, Q, QuerySet, Sum
from django.forms import ModelForm
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path
from django.utils.html import format_html

from . import mcp_servers
from .api import tokens
from .models import (
    ApiToken,
    Conversation,
    ConversationQuerySet,
    Message,
    ToolCall,
    UserCredential,
)
from .templatetags.chat import seconds


class DurationColumn:
    @admin.display(description="duration")
    def duration_display(self, row: Message | ToolCall) -> str:
        return seconds(row.duration)

    @admin.display(description="progress")
    def progress_display(self, row: Message | ToolCall) -> str:
        """A call's last reported progress: "3 of 5: message"; empty when it reported none."""
        if not isinstance(row, ToolCall) or row.progress is None:
            return ""
        done = f"{row.progress:g}" + (f" of {row.progress_total:g}" if row.progress_total else "")
        return f"{done}: {row.progress_message}" if row.progress_message else done


class MessageInline(admin.TabularInline):  # type: ignore[type-arg]
    model = Message
    extra = 0
    can_delete = False
    show_change_link = True
    fields = readonly_fields = (
        "role",
        "status",
        "content",
        "model",
        "total_tokens",
        "created_at",
        "superseded_at",
    )

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class ToolCallInline(DurationColumn, admin.StackedInline):  # type: ignore[type-arg]
    model = ToolCall
    extra = 0
    can_delete = False
    fields = readonly_fields = (
        "step",
        "index",
        "name",
        "server",
        "call_id",
        "status",
        "arguments",
        "parsed_arguments",
        "progress_display",
        "output",
        "structured_output",
        "error",
        "decision",
        "decided_by",
        "decided_at",
        "decision_reason",
        "started_at",
        "finished_at",
        "duration_display",
    )

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class AnswerStatusFilter(admin.SimpleListFilter):
    """The status of the conversation's latest answer; "running" is queued or streaming."""

    title = "last answer"
    parameter_name = "answer"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        ended = [(status.value, status.label) for status in Message.Status]
        return [("running", "Running"), *ended, ("none", "No answer yet")]

    def queryset(
        self, request: HttpRequest, queryset: QuerySet[Conversation]
    ) -> QuerySet[Conversation]:
        # `answer_status` is ConversationQuerySet.with_answer_status's annotation (in Q(), which
        # django-stubs does not check against the model's fields).
        match self.value():
            case None:
                return queryset
            case "running":
                return queryset.filter(Q(answer_status__in=Message.IN_PROGRESS))
            case "none":
                return queryset.filter(Q(answer_status__isnull=True))
            case status:
                return queryset.filter(Q(answer_status=status))


class SupersededFilter(admin.SimpleListFilter):
    """Whether the message is part of the conversation, or an edit or a new answer replaced it."""

    title = "current / superseded"
    parameter_name = "superseded"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("current", "Current"), ("superseded", "Superseded")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Message]) -> QuerySet[Message]:
        match self.value():
            case "current":
                return queryset.filter(superseded_at__isnull=True)
            case "superseded":
                return queryset.filter(superseded_at__isnull=False)
        return queryset


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = [
        "__str__",
        "chat_link",
        "owner",
        "answer_status",
        "model",
        "message_count",
        "tokens",
        "created_at",
        "updated_at",
    ]
    list_filter = [AnswerStatusFilter, "model", "created_at", "updated_at"]
    search_fields = ["title", "owner__username", "messages__content"]
    readonly_fields = ["chat_link", "created_at", "updated_at"]
    date_hierarchy = "created_at"
    inlines = [MessageInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Conversation]:
        queryset: ConversationQuerySet = super().get_queryset(request)  # type: ignore[assignment]
        return (
            queryset.with_answer_status()
            .select_related("owner")
            .annotate(message_total=Count("messages"), token_total=Sum("messages__total_tokens"))
        )

    @admin.display(description="chat page")
    def chat_link(self, conversation: Conversation) -> str:
        # Only its owner can open it; anyone else gets the chat's 404.
        return format_html('<a href="{}">{}</a>', conversation.get_absolute_url(), conversation)

    @admin.display(description="last answer", ordering="answer_status")
    def answer_status(self, conversation: Conversation) -> str:
        status = conversation.answer_status  # type: ignore[attr-defined]
        return Message.Status(status).label if status else "no answer yet"

    @admin.display(description="messages", ordering="message_total")
    def message_count(self, conversation: Conversation) -> int:
        return conversation.message_total  # type: ignore[attr-defined,no-any-return]

    @admin.display(description="tokens", ordering="token_total")
    def tokens(self, conversation: Conversation) -> int:
        return conversation.token_total or 0  # type: ignore[attr-defined]


@admin.register(Message)
class MessageAdmin(DurationColumn, admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = [
        "__str__",
        "conversation",
        "role",
        "status",
        "model",
        "input_tokens",
        "output_tokens",
        "duration_display",
        "created_at",
        "superseded_at",
    ]
    list_filter = [SupersededFilter, "status", "role", "model", "created_at"]
    search_fields = ["content", "error", "conversation__title"]
    list_select_related = ["conversation"]
    date_hierarchy = "created_at"
    # What the user and the model wrote is kept as it was: nothing here is editable.
    readonly_fields = [
        "conversation",
        "role",
        "content",
        "reasoning",
        "status",
        "error",
        "model",
        "api_style",
        "input_tokens",
        "output_tokens",
        "total_tokens",
        "steps",
        "response_id",
        "seq",
        "stop_requested",
        "heartbeat_at",
        "created_at",
        "finished_at",
        "superseded_at",
        "duration_display",
    ]
    inlines = [ToolCallInline]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(ToolCall)
class ToolCallAdmin(DurationColumn, admin.ModelAdmin):  # type: ignore[type-arg]
    # Its list links to the MCP servers' page (mcp_servers_view).
    change_list_template = "admin/conversations/toolcall/change_list.html"
    list_display = [
        "name",
        "server",
        "status",
        "decision",
        "decided_by",
        "message",
        "call_id",
        "duration_display",
        "started_at",
    ]
    list_filter = ["status", "server", "decision", "name", "started_at"]
    search_fields = ["name", "call_id", "arguments", "output", "error", "decided_by"]
    list_select_related = ["message"]
    readonly_fields = [
        "message",
        "step",
        "index",
        "text_offset",
        "call_id",
        "name",
        "server",
        "arguments",
        "parsed_arguments",
        "status",
        "progress_display",
        "output",
        "structured_output",
        "error",
        "decision",
        "decided_by",
        "decided_at",
        "decision_reason",
        "created_at",
        "started_at",
        "finished_at",
        "duration_display",
    ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view(self.mcp_servers_view)
        return [
            path("mcp-servers/", view, name="conversations_mcp_servers"),
            *super().get_urls(),
        ]

    def mcp_servers_view(self, request: HttpRequest) -> HttpResponse:
        """The MCP servers of MCP_SERVERS_FILE as this process has them: state, tools, last
        error and restart."""
        context = {
            **self.admin_site.each_context(request),
            "title": "MCP servers",
            "opts": self.model._meta,
            "servers": mcp_servers.overview(),
            "file": settings.MCP_SERVERS_FILE,
            "pid": os.getpid(),
        }
        return TemplateResponse(request, "admin/conversations/mcp_servers.html", context)


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Staff add a token by user and name; the token is shown once, in the message after saving."""

    list_display = ["prefix", "name", "user", "created_at", "last_used_at", "revoked"]
    list_filter = [("revoked_at", admin.EmptyFieldListFilter), "created_at", "last_used_at"]
    search_fields = ["user__username", "name", "prefix"]
    list_select_related = ["user"]
    date_hierarchy = "created_at"
    actions = ["revoke_selected"]
    add_fields = ("user", "name")
    change_fields = ("user", "name", "prefix", "digest", "created_at", "last_used_at", "revoked_at")

    def get_fields(self, request: HttpRequest, obj: ApiToken | None = None) -> tuple[str, ...]:
        return self.add_fields if obj is None else self.change_fields

    def get_readonly_fields(
        self, request: HttpRequest, obj: ApiToken | None = None
    ) -> tuple[str, ...]:
        return () if obj is None else tuple(f for f in self.change_fields if f != "name")

    @admin.display(description="revoked", boolean=True, ordering="revoked_at")
    def revoked(self, token: ApiToken) -> bool:
        return token.revoked

    def save_model(
        self, request: HttpRequest, obj: ApiToken, form: ModelForm[Any], change: bool
    ) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        created, raw = tokens.token_create(user=obj.user, name=obj.name)
        obj.pk = created.pk
        obj.refresh_from_db()
        messages.success(
            request,
            f"The new token for {obj.user.get_username()}: {raw} "
            "Copy it now: it is shown this once, and only its SHA-256 is kept.",
        )

    @admin.action(description="Revoke selected tokens")
    def revoke_selected(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        chosen = list(queryset)
        for token in chosen:
            tokens.token_revoke(token=token)
        self.message_user(request, f"Revoked {len(chosen)} token(s).", messages.SUCCESS)


@admin.register(UserCredential)
class UserCredentialAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Who entered which value for which MCP server: never the value (users enter it on their
    settings page; staff can only remove it)."""

    list_display = ["user", "server", "name", "updated_at"]
    list_filter = ["server", "updated_at"]
    search_fields = ["user__username", "server", "name"]
    fields = readonly_fields = ("user", "server", "name", "updated_at")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False
