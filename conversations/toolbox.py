"""The tools a signed-in user's model can call: the built-ins, a search of their own history, and
renaming and deleting their conversations (those two ask the user first)."""

from __future__ import annotations

import functools
import json
import logging

from channels.db import aclose_old_connections
from django.conf import settings
from django.core import checks
from django.utils.module_loading import import_string

from . import actions, mcp_servers, services
from .models import Message
from .refusals import InvalidInput
from .streaming.builtin_tools import CALCULATOR, CURRENT_TIME
from .streaming.tools import Tool, Toolbox

SEARCH_LIMIT = 10
EXCERPT_RADIUS = 120


logger = logging.getLogger(__name__)


def toolbox_for(*, user_id: int, conversation_id: int) -> Toolbox:
    """The user's tools in one conversation: the built-ins, then the deployer's (CHAT_TOOLS)."""
    return _toolbox(
        user_id, conversation_id, tuple(settings.CHAT_TOOLS), settings.CHAT_TOOL_OUTPUT_LIMIT
    )


@functools.lru_cache(maxsize=1024)
def _toolbox(
    user_id: int, conversation_id: int, deployed: tuple[str, ...], output_limit: int
) -> Toolbox:
    # Kept: checking the tools' schemas again for every answer costs.
    return Toolbox(
        [*built_in_tools(user_id, conversation_id), *deployer_tools(deployed)],
        output_limit=output_limit,
    )


async def atoolbox_for(*, user_id: int, conversation_id: int) -> Toolbox:
    """`toolbox_for`, and the tools of the MCP servers that are up (MCP_SERVERS_FILE)."""
    site = toolbox_for(user_id=user_id, conversation_id=conversation_id)
    credentials = None
    if settings.MCP_SERVERS_FILE and mcp_servers.needs_credentials():
        credentials = await services.acredentials_of(user_id=user_id)
    remote = tuple(await mcp_servers.offered_tools(user_id=user_id, credentials=credentials))
    if not remote:
        return site
    key = (id(site), *map(id, remote))
    kept = _with_remote.get(key)
    # The tools themselves are kept beside the toolbox: an id is only theirs while they live.
    if (
        kept is not None
        and kept[0] is site
        and all(a is b for a, b in zip(kept[1], remote, strict=True))
    ):
        return kept[2]
    taken = set(site.names)
    offered = []
    for tool in remote:
        if tool.name in taken:
            logger.warning(
                "MCP server %s offers a tool named %r, as the site has one; it is left out.",
                tool.server,
                tool.name,
            )
            continue
        offered.append(tool)
    toolbox = Toolbox([*site, *offered], output_limit=site.output_limit)
    if len(_with_remote) >= 256:
        _with_remote.clear()
    _with_remote[key] = (site, remote, toolbox)
    return toolbox


_with_remote: dict[tuple[int, ...], tuple[Toolbox, tuple[Tool, ...], Toolbox]] = {}


def built_in_tools(user_id: int, conversation_id: int) -> list[Tool]:
    return [
        CALCULATOR,
        CURRENT_TIME,
        search_conversations_tool(user_id=user_id),
        rename_conversation_tool(user_id=user_id, current=conversation_id),
        delete_conversation_tool(user_id=user_id, current=conversation_id),
    ]


class DeployerToolError(Exception):
    """A CHAT_TOOLS entry that is not a tool; the message names the entry and why."""


@functools.lru_cache(maxsize=16)
def deployer_tools(paths: tuple[str, ...]) -> tuple[Tool, ...]:
    """The deployer's tools named by `paths` (CHAT_TOOLS): a function becomes a tool with the
    schema of its type hints, a `Tool` is taken as it is. DeployerToolError for an entry that
    cannot be imported, is neither, or takes a name another tool has."""
    tools: list[Tool] = []
    built_in = {tool.name for tool in built_in_tools(0, 0)}
    for path in paths:
        try:
            found = import_string(path)
        except ImportError as error:
            raise DeployerToolError(f"CHAT_TOOLS: {path!r} cannot be imported: {error}") from None
        if isinstance(found, Tool):
            tool = found
        elif callable(found):
            try:
                tool = Tool.from_function(found)
            except (TypeError, ValueError) as error:
                raise DeployerToolError(f"CHAT_TOOLS: {path!r} is not a tool: {error}") from None
        else:
            raise DeployerToolError(
                f"CHAT_TOOLS: {path!r} is a {type(found).__name__}, not a function or a Tool."
            )
        if tool.name in built_in | {other.name for other in tools}:
            raise DeployerToolError(
                f"CHAT_TOOLS: {path!r} is named {tool.name!r}, as another tool is already."
            )
        tools.append(tool)
    return tuple(tools)


def check_deployer_tools(**kwargs: object) -> list[checks.CheckMessage]:
    """`manage.py serve` (and `check`) refuse to start with a CHAT_TOOLS entry that is no tool
    (registered in apps.py)."""
    try:
        deployer_tools(tuple(settings.CHAT_TOOLS))
    except DeployerToolError as error:
        return [checks.Error(str(error), id="conversations.E001")]
    return []


TITLE = {
    "type": "string",
    "minLength": 1,
    "maxLength": services.TITLE_MAX_LENGTH,
    "description": "The new title: a few words.",
}


def rename_conversation_tool(*, user_id: int, current: int) -> Tool:
    async def rename_conversation(title: str, conversation_id: int | None = None) -> str:
        try:
            renamed = await actions.conversation_rename(
                owner_id=user_id,
                conversation_id=current if conversation_id is None else conversation_id,
                title=title,
            )
        except InvalidInput as error:
            raise ValueError(str(error)) from None
        return json.dumps({"conversation_id": renamed.pk, "title": renamed.title})

    return Tool(
        name="rename_conversation",
        description=(
            "Rename one of the user's conversations: this one, or another by its id (as "
            "search_conversations shows it). The user approves it first."
        ),
        parameters={
            "type": "object",
            "properties": {
                "title": TITLE,
                "conversation_id": {
                    "type": ["integer", "null"],
                    "description": "The conversation to rename; omit it for this one.",
                },
            },
            "required": ["title"],
            "additionalProperties": False,
        },
        function=rename_conversation,
        needs_approval=True,
    )


def delete_conversation_tool(*, user_id: int, current: int) -> Tool:
    async def delete_conversation(conversation_id: int) -> str:
        if conversation_id == current:
            raise ValueError(
                "this is the conversation you are answering in; it cannot delete itself "
                "(the user can delete it from the page)"
            )
        title = await actions.conversation_delete_owned(
            owner_id=user_id, conversation_id=conversation_id
        )
        return json.dumps({"deleted": conversation_id, "title": title})

    return Tool(
        name="delete_conversation",
        description=(
            "Delete one of the user's other conversations, by its id (as search_conversations "
            "shows it), for good. Not the current conversation. The user approves it first."
        ),
        parameters={
            "type": "object",
            "properties": {
                "conversation_id": {
                    "type": "integer",
                    "description": "The conversation to delete.",
                },
            },
            "required": ["conversation_id"],
            "additionalProperties": False,
        },
        function=delete_conversation,
        needs_approval=True,
    )


def search_conversations_tool(*, user_id: int) -> Tool:
    async def search_conversations(query: str, limit: int = 5) -> str:
        return json.dumps(await search_messages(user_id=user_id, query=query, limit=limit))

    return Tool(
        name="search_conversations",
        description=(
            "Search the user's own earlier conversations for messages containing the given "
            "text. Returns the matching messages, newest first, with their conversation's id "
            "and title."
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


async def search_messages(*, user_id: int, query: str, limit: int) -> list[dict[str, str | int]]:
    """The user's finished messages containing `query`; never anyone else's."""
    # The async ORM does not drop a connection the database closed since the last query.
    await aclose_old_connections()
    matches = (
        Message.objects.filter(
            conversation__owner_id=user_id, content__icontains=query, superseded_at__isnull=True
        )
        .exclude(status__in=Message.IN_PROGRESS)
        .select_related("conversation")
        .order_by("-created_at", "-id")[: min(limit, SEARCH_LIMIT)]
    )
    return [
        {
            "conversation_id": message.conversation_id,
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
