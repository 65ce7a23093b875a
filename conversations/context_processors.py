"""What every page's template gets besides the request's own."""

from __future__ import annotations

from django.http import HttpRequest

from . import mcp_servers


def tool_credentials(request: HttpRequest) -> dict[str, bool]:
    """Whether an MCP server asks users for values of their own (the nav links their page)."""
    try:
        needed = bool(mcp_servers.credential_fields())
    except mcp_servers.ConfigError:
        needed = False
    return {"tool_credentials": needed}
