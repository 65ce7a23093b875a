"""URL configuration."""

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

# /healthz, /readyz and /metrics are answered by conversations.health.ProbeMiddleware, before the
# host check, so they are not listed here.
urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include("conversations.api.urls")),
    path("", include("conversations.urls")),
]
