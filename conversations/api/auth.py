"""Who a program is: its API token, on the WebSocket handshake or on each HTTP call.

Only a token authenticates the API, never the session cookie: a token is no ambient credential
a browser sends by itself, so the API needs no CSRF check and no Origin check.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any, Concatenate

from channels.db import database_sync_to_async
from django.contrib.auth.models import AnonymousUser, User
from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern
from django.views.decorators.csrf import csrf_exempt

from .errors import error_response
from .tokens import TokenRefused, token_authenticate

SUBPROTOCOL_PREFIX = "bearer."
SOCKET_MISSING = (
    "Send an API token: Authorization: Bearer <token>, or the subprotocol bearer.<token>."
)


class TokenRequest(HttpRequest):
    user: User


def bearer_token(authorization: str) -> str:
    """The token of an `Authorization: Bearer <token>` header; "" for anything else."""
    scheme, _, token = authorization.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def socket_user(raw: str) -> tuple[User | AnonymousUser, str]:
    """The token's user and "", or AnonymousUser and why the token was refused."""
    if not raw:
        return AnonymousUser(), SOCKET_MISSING
    try:
        return token_authenticate(raw=raw), ""
    except TokenRefused as refused:
        return AnonymousUser(), str(refused)


class TokenAuthMiddleware:
    """Set a WebSocket scope's `user` from its API token, and `api_auth_error` ("" when it is OK).

    The token comes from the handshake's `Authorization: Bearer <token>`, else from a
    subprotocol `bearer.<token>` (browsers cannot set headers on a socket); that subprotocol is
    taken out of `scope["subprotocols"]`, so the consumer cannot pick it and send the token back.
    The consumer refuses the socket when `api_auth_error` is set; the session is never read.
    """

    def __init__(self, application: Any) -> None:
        self.application = application

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope["type"] != "websocket":
            return await self.application(scope, receive, send)
        headers = dict(scope.get("headers", []))
        raw = bearer_token(headers.get(b"authorization", b"").decode("latin1"))
        subprotocols = [
            name
            for name in scope.get("subprotocols", [])
            if not name.startswith(SUBPROTOCOL_PREFIX)
        ]
        if not raw:
            offered = [name for name in scope.get("subprotocols", []) if name not in subprotocols]
            raw = offered[0].removeprefix(SUBPROTOCOL_PREFIX) if offered else ""
        user, error = await database_sync_to_async(socket_user)(raw)
        scope = dict(scope, user=user, api_auth_error=error, subprotocols=subprotocols)
        return await self.application(scope, receive, send)


def token_routes(routes: Iterable[URLPattern]) -> list[URLPattern]:
    """The same routes, each behind TokenAuthMiddleware."""
    return [
        URLPattern(
            route.pattern, TokenAuthMiddleware(route.callback), route.default_args, route.name
        )
        for route in routes
    ]


def token_required[**P](
    view: Callable[Concatenate[TokenRequest, P], HttpResponse],
) -> Callable[Concatenate[HttpRequest, P], HttpResponse]:
    """Let in an HTTP call that sends a valid API token as its user; answer any other 401.

    The view is csrf_exempt: a cookie does not authenticate it, so a forged cross-site request
    carries no credential.
    """

    @csrf_exempt
    @functools.wraps(view)
    def checked(request: HttpRequest, *args: P.args, **kwargs: P.kwargs) -> HttpResponse:
        raw = bearer_token(request.headers.get("Authorization", ""))
        try:
            user = token_authenticate(raw=raw)
        except TokenRefused as refused:
            response = error_response(status=401, code="unauthorized", message=str(refused))
            response["WWW-Authenticate"] = "Bearer"
            return response
        request.user = user
        return view(request, *args, **kwargs)  # type: ignore[arg-type]

    return checked  # type: ignore[return-value]
