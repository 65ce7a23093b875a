"""Sockets are accepted from this site's own pages: the Origin matches the Host, port included."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

from channels.security.websocket import OriginValidator, WebsocketDenier
from django.conf import settings
from django.http.request import split_domain_port, validate_host


class SameOriginValidator(OriginValidator):  # type: ignore[misc]
    """Accept a socket whose Origin (scheme, host and port) is the site it connected to.

    The site is the Host header, which must be one of ALLOWED_HOSTS, or any of
    CSRF_TRUSTED_ORIGINS (the public origin when a proxy forwards another Host). Channels'
    AllowedHostsOriginValidator compares host names only, so a page on another port of the
    same host could open the socket with the user's cookies.
    """

    def __init__(self, application: Any) -> None:
        super().__init__(application, [])

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        headers = dict(scope.get("headers", []))
        origin = headers.get(b"origin", b"").decode("latin1")
        host = headers.get(b"host", b"").decode("latin1")
        if origin and self.allowed(origin, host):
            return await self.application(scope, receive, send)
        return await WebsocketDenier()(scope, receive, send)

    def allowed(self, origin: str, host: str) -> bool:
        patterns = [trusted.replace("://*.", "://.") for trusted in settings.CSRF_TRUSTED_ORIGINS]
        domain, _ = split_domain_port(host)
        if domain and validate_host(domain, settings.ALLOWED_HOSTS):
            # Whether the browser spoke TLS to a proxy in front is not known here: either
            # scheme, with the port the Host header names (or the scheme's default).
            patterns += [f"http://{host}", f"https://{host}"]
        try:
            parsed = urlparse(origin.lower())
        except ValueError:
            return False
        return any(self.match_allowed_origin(parsed, pattern) for pattern in patterns)
