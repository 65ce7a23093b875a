"""A conversation as a document to download: JSON (the API's own shape) or Markdown."""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

from django.http import HttpResponse, JsonResponse
from django.utils import timezone

from .. import services
from ..models import Conversation, Message, ToolCall
from .protocol import conversation_state, message_state


def conversation_document(*, conversation: Conversation, messages: list[Message]) -> dict[str, Any]:
    """The conversation with every message's state, as `GET /api/conversations/<id>/` shows it."""
    return {**conversation_state(conversation), "messages": [message_state(m) for m in messages]}


def fenced(text: str, language: str = "") -> str:
    """`text` in a fenced code block whose fence is longer than any run of backticks in it, so
    nothing inside can close the block."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{language}\n{text}\n{fence}"


def one_line(text: str) -> str:
    return " ".join(text.split())


FENCE_LINE = re.compile(r" {0,3}(`{3,}|~{3,})")


def closing_fences(text: str) -> str:
    """`text`, with a fence closing the code block it leaves open (which would swallow the rest
    of the document)."""
    opened = ""
    for line in text.splitlines():
        match = FENCE_LINE.match(line)
        if match is None:
            continue
        fence = match.group(1)
        if not opened:
            opened = fence
        elif fence[0] == opened[0] and len(fence) >= len(opened) and not line.strip()[len(fence) :]:
            opened = ""
    return f"{text}\n{opened}" if opened else text


def conversation_markdown(
    *, conversation: Conversation, messages: list[Message], exported_at: datetime
) -> str:
    """The conversation as Markdown: its title, then each message under its role, with its tool
    calls' arguments and outputs in code blocks where the model made them."""
    lines = [
        f"# {one_line(str(conversation))}",
        "",
        f"Model: {conversation.model or 'none'}. Exported {exported_at.isoformat()}.",
    ]
    for message in messages:
        heading = "User" if message.role == Message.Role.USER else "Assistant"
        if message.role == Message.Role.ASSISTANT and message.status != Message.Status.COMPLETE:
            heading += f" ({message.status})"
        lines += ["", f"## {heading}", ""]
        if message.reasoning:
            lines += ["Reasoning:", "", fenced(message.reasoning), ""]
        for text, steps in message.parts():
            if text:
                lines += [closing_fences(text), ""]
            for call in steps:
                lines += tool_call_markdown(call)
        if message.error:
            lines += [f"Error: {one_line(message.error)}", ""]
    return "\n".join(lines).rstrip() + "\n"


def tool_call_markdown(call: ToolCall) -> list[str]:
    arguments = call.arguments
    if call.parsed_arguments is not None:
        arguments = json.dumps(call.parsed_arguments, indent=2, ensure_ascii=False)
    lines = [f"### Tool call: {one_line(call.name)} ({call.status})", "", "Arguments:", ""]
    lines += [fenced(arguments, "json"), ""]
    if call.output:
        lines += ["Output:", "", fenced(call.output), ""]
    if call.error:
        lines += ["Error:", "", fenced(call.error), ""]
    if call.decision:
        reason = f": {one_line(call.decision_reason)}" if call.decision_reason else ""
        lines += [f"Decision: {call.decision} by {call.decided_by or 'nobody'}{reason}", ""]
    return lines


def export_response(*, conversation: Conversation, kind: str) -> HttpResponse:
    """The conversation's current messages (superseded ones are left out) as a download:
    `kind` "json" or "markdown"."""
    messages = services.message_list(conversation=conversation)
    now = timezone.now()
    if kind == "json":
        document = conversation_document(conversation=conversation, messages=messages)
        document["exported_at"] = now.isoformat()
        response: HttpResponse = JsonResponse(
            document, json_dumps_params={"indent": 2, "ensure_ascii": False}
        )
        extension = "json"
    else:
        text = conversation_markdown(conversation=conversation, messages=messages, exported_at=now)
        response = HttpResponse(text, content_type="text/markdown; charset=utf-8")
        extension = "md"
    # Digits only in the name: nothing in it needs quoting in the header.
    response["Content-Disposition"] = (
        f'attachment; filename="conversation-{conversation.pk}.{extension}"'
    )
    return response
