"""An MCP tool result as the model and the card get it."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

import mcp_types

from ..streaming.tools import ToolResult


def tool_result(result: mcp_types.CallToolResult) -> ToolResult:
    """Text content is the output; images, audio and resources are described in it; the
    structuredContent is kept beside it (and is the output when there is no text). isError
    makes a failure whose text goes back to the model as the call's error output."""
    text = "\n".join(part for part in map(describe_content, result.content) if part)
    structured = result.structured_content
    if not text and structured is not None:
        text = json.dumps(structured, ensure_ascii=False)
    if result.is_error:
        failure = ToolResult.failure(text or "the tool failed without saying why")
        return ToolResult(
            ok=False, output=failure.output, error=failure.error, structured=structured
        )
    return ToolResult(ok=True, output=text, structured=structured)


def describe_content(item: Any) -> str:
    match getattr(item, "type", None):
        case "text":
            return str(item.text)
        case "image" | "audio":
            return f"[{item.type}: {item.mime_type}, {decoded_size(item.data):,} bytes]"
        case "resource_link":
            about = f": {item.description}" if item.description else ""
            return f"[resource: {item.name} <{item.uri}>{about}]"
        case "resource":
            resource = item.resource
            if getattr(resource, "text", None) is not None:
                return str(resource.text)
            kind = getattr(resource, "mime_type", None) or "binary"
            size = decoded_size(getattr(resource, "blob", ""))
            return f"[resource: {resource.uri}, {kind}, {size:,} bytes]"
    return f"[content of type {getattr(item, 'type', '?')!r}]"


def decoded_size(data: str) -> int:
    try:
        return len(base64.b64decode(data, validate=True))
    except (binascii.Error, ValueError):
        return len(data)
