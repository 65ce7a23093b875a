"""The JSON API's WebSocket routes; chatsite/asgi.py puts each behind TokenAuthMiddleware."""

from __future__ import annotations

from django.urls import URLPattern, path

from .consumers import ApiConsumer

api_websocket_urlpatterns: list[URLPattern] = [
    path("ws/api/conversations/<int:conversation_id>/", ApiConsumer.as_asgi()),
]
