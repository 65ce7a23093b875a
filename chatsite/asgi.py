"""ASGI entry point: HTTP through Django, WebSockets through Channels."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter  # noqa: E402

from conversations.api.routing import api_websocket_urlpatterns  # noqa: E402
from conversations.routing import websocket_application, websocket_urlpatterns  # noqa: E402
from conversations.sweeper import SweeperMiddleware  # noqa: E402

# The sweeper ends answers whose process died; it starts with the first request or socket.
application = SweeperMiddleware(
    ProtocolTypeRouter(
        {
            "http": django_asgi_app,
            # ws/api/... behind TokenAuthMiddleware; the page's sockets behind SameOriginValidator
            # and the session (AuthMiddlewareStack).
            "websocket": websocket_application(
                page_routes=websocket_urlpatterns, api_routes=api_websocket_urlpatterns
            ),
        }
    )
)
