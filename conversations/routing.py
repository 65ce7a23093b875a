"""WebSocket routes: the chat page's, and how page and API sockets are let in."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from channels.auth import AuthMiddlewareStack
from channels.routing import URLRouter
from django.urls import URLPattern, path, re_path

from .api.auth import token_routes
from .consumers import ChatConsumer
from .websocket_origin import SameOriginValidator

websocket_urlpatterns = [
    path("ws/conversations/<int:conversation_id>/", ChatConsumer.as_asgi()),
]


def websocket_application(
    *, page_routes: Iterable[URLPattern], api_routes: Iterable[URLPattern]
) -> Any:
    """Page sockets need this site's Origin and use the session; API sockets need a token.

    An API token is no ambient credential a browser adds by itself, and programs send no
    Origin, so the API routes skip the Origin check and never read the session.
    """
    return URLRouter(
        [
            *token_routes(api_routes),
            # Everything else, including unknown paths, is checked as a page socket.
            re_path(r"", SameOriginValidator(AuthMiddlewareStack(URLRouter(list(page_routes))))),
        ]
    )
