"""Page URLs."""

from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.urls import path

from . import views

urlpatterns = [
    path("", views.conversation_list, name="conversation-list"),
    path("signup/", views.signup, name="signup"),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("search/", views.conversation_search, name="conversation-search"),
    path("conversations/new/", views.conversation_create, name="conversation-create"),
    path(
        "conversations/<int:conversation_id>/",
        views.conversation_detail,
        name="conversation-detail",
    ),
    path(
        "conversations/<int:conversation_id>/model/",
        views.conversation_configure,
        name="conversation-configure",
    ),
    path(
        "conversations/<int:conversation_id>/export.md",
        views.conversation_export_markdown,
        name="conversation-export-markdown",
    ),
    path(
        "conversations/<int:conversation_id>/export.json",
        views.conversation_export_json,
        name="conversation-export-json",
    ),
    path(
        "conversations/<int:conversation_id>/delete/",
        views.conversation_delete,
        name="conversation-delete",
    ),
    path(
        "tool-calls/<int:message_id>/<int:step>/<int:index>/images/<int:number>",
        views.tool_call_image,
        name="tool-call-image",
    ),
    path("settings/tokens/", views.token_list, name="token-list"),
    path("settings/credentials/", views.credential_list, name="credential-list"),
    path("settings/tokens/<int:token_id>/revoke/", views.token_revoke, name="token-revoke"),
]
