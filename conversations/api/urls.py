"""The HTTP API's URLs, under /api/."""

from __future__ import annotations

from django.urls import path

from . import views

urlpatterns = [
    path("conversations/", views.conversations, name="api-conversations"),
    path("conversations/<int:conversation_id>/", views.conversation, name="api-conversation"),
    path(
        "conversations/<int:conversation_id>/export.json",
        views.export_json,
        name="api-conversation-export-json",
    ),
    path(
        "conversations/<int:conversation_id>/export.md",
        views.export_markdown,
        name="api-conversation-export-md",
    ),
]
