"""App configuration."""

from __future__ import annotations

from django.apps import AppConfig


class ConversationsConfig(AppConfig):
    name = "conversations"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.core import checks

        from .mcp_servers import check_mcp_servers
        from .toolbox import check_deployer_tools

        checks.register(check_deployer_tools)
        checks.register(check_mcp_servers)
