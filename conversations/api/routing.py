"""The JSON API's WebSocket routes; chatsite/asgi.py puts each behind TokenAuthMiddleware."""

from __future__ import annotations

from django.urls import URLPattern

# The JSON socket, "ws/api/conversations/<int:conversation_id>/", comes with its consumer
# (conversations/api/consumers.py).
api_websocket_urlpatterns: list[URLPattern] = []
