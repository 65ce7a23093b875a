"""The JSON API's WebSocket routes (behind token auth, in chatsite/asgi.py)."""

from __future__ import annotations

from django.urls import path

from .consumers import ApiConsumer

api_websocket_urlpatterns = [
    path("ws/api/conversations/<int:conversation_id>/", ApiConsumer.as_asgi()),
]
