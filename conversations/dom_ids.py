"""The ids of the chat pages' elements, spelled once: the templates write them with
`{% dom_id "message-body" message.id %}` (templatetags/chat.py), rendering.py's fragments and
the tests call `dom_id` with the same names.

Each name's pattern takes the values in order (a message's id, a part's number, ...); a name
without a placeholder is a fixed id. static/*.js and chat.css find the fixed ones by id too.
"""

from __future__ import annotations

IDS: dict[str, str] = {
    # The chat page (conversations/detail.html).
    "conversation-title": "conversation-title",
    "connection": "connection",
    "conversation-usage": "conversation-usage",
    "messages": "messages",
    "chat-error": "chat-error",
    "composer": "composer",
    "composer-ack": "composer-ack",
    "composer-note": "composer-note",
    "run-controls": "run-controls",
    "pong": "pong",
    # A message and its parts.
    "message": "message-{}",
    "message-body": "message-{}-body",
    "message-text": "message-{}-text-{}",  # a text part: message, part
    "message-text-md": "message-{}-text-{}-md",
    "message-text-tail": "message-{}-text-{}-tail",
    "message-reasoning": "message-{}-reasoning",
    "message-reasoning-text": "message-{}-reasoning-text",
    "message-retry": "message-{}-retry",
    "message-footer": "message-{}-footer",
    "message-raw": "message-{}-raw",
    "message-edit": "message-{}-edit",
    "message-calls": "message-{}-calls-{}",  # a step's tool calls: message, step
    # A tool call's card: message, step, index.
    "tool-call": "tool-call-{}-{}-{}",
    "tool-call-arguments": "tool-call-{}-{}-{}-arguments",
    "tool-call-output": "tool-call-{}-{}-{}-output",
    # The sidebar (conversations/sidebar.html) and renaming (conversations/rename.html).
    "sidebar": "sidebar",
    "sidebar-panel": "sidebar-panel",
    "sidebar-search-results": "sidebar-search-results",
    "sidebar-conversation": "sidebar-conversation-{}",
    "rename-form": "rename-form",
}


def dom_id(name: str, *values: object) -> str:
    """The id of the element `name` (a key of IDS) for `values`."""
    pattern = IDS[name]
    if pattern.count("{}") != len(values):
        raise TypeError(f"The id {name!r} takes {pattern.count('{}')} values, not {len(values)}.")
    return pattern.format(*values)
