"""The tools a signed-in user's model can call: the built-ins plus a search of their own history."""

from __future__ import annotations

import functools
import json

from channels.db import aclose_old_connections

from .models import Message
from .streaming.builtin_tools import CALCULATOR, CURRENT_TIME
from .streaming.tools import Tool, Toolbox

SEARCH_LIMIT = 10
EXCERPT_RADIUS = 120


@functools.lru_cache(maxsize=1024)
def toolbox_for(*, user_id: int) -> Toolbox:
    """The user's tools; kept, since checking the tools' schemas again for every answer costs."""
    return Toolbox([CALCULATOR, CURRENT_TIME, search_conversations_tool(user_id=user_id)])


def search_conversations_tool(*, user_id: int) -> Tool:
    async def search_conversations(query: str, limit: int = 5) -> str:
        return json.dumps(await search_messages(user_id=user_id, query=query, limit=limit))

    return Tool(
        name="search_conversations",
        description=(
            "Search the user's own earlier conversations for messages containing the given "
            "text. Returns the matching messages, newest first, with their conversation title."
        ),
        parameters={
            "type": "object",
            "properties": {
                "query": {"type": "string", "minLength": 1, "description": "Text to look for."},
                "limit": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": SEARCH_LIMIT,
                    "description": "How many matches to return (default 5).",
                },
            },
            "required": ["query"],
            "additionalProperties": False,
        },
        function=search_conversations,
    )


async def search_messages(*, user_id: int, query: str, limit: int) -> list[dict[str, str]]:
    """The user's finished messages containing `query`; never anyone else's."""
    # The async ORM does not drop a connection the database closed since the last query.
    await aclose_old_connections()
    matches = (
        Message.objects.filter(conversation__owner_id=user_id, content__icontains=query)
        .exclude(status__in=Message.IN_PROGRESS)
        .select_related("conversation")
        .order_by("-created_at", "-id")[: min(limit, SEARCH_LIMIT)]
    )
    return [
        {
            "conversation": str(message.conversation),
            "role": message.role,
            "date": message.created_at.isoformat(timespec="minutes"),
            "excerpt": excerpt(message.content, query),
        }
        async for message in matches
    ]


def excerpt(text: str, query: str) -> str:
    at = text.lower().find(query.lower())
    start = max(at - EXCERPT_RADIUS, 0)
    end = min(at + len(query) + EXCERPT_RADIUS, len(text))
    return ("…" if start else "") + text[start:end] + ("…" if end < len(text) else "")
