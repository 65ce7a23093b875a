"""An MCP tool result as the model and the card get it."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

import mcp_types

from ..streaming.tools import ToolResult

# Images a card shows, by the type a server gives and the bytes they must start with (no SVG:
# it can hold scripts).
IMAGE_SIGNATURES = {
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/gif": (b"GIF87a", b"GIF89a"),
    "image/webp": (b"RIFF",),
}
IMAGES_PER_CALL = 4


def tool_result(result: mcp_types.CallToolResult, *, image_limit: int = 1024 * 1024) -> ToolResult:
    """Text content is the output; images, audio and resources are described in it; the
    structuredContent is kept beside it (and is the output when there is no text). isError
    makes a failure whose text goes back to the model as the call's error output. Up to four
    images (PNG, JPEG, GIF or WebP whose bytes say so, each at most `image_limit` bytes) are
    kept for the card; the text says which were left out and why."""
    images: list[dict[str, Any]] = []
    parts: list[str] = []
    for item in result.content:
        if isinstance(item, mcp_types.ImageContent):
            parts.append(kept_image(item, image_limit, images))
        else:
            parts.append(describe_content(item))
    text = "\n".join(part for part in parts if part)
    structured = result.structured_content
    if not text and structured is not None:
        text = json.dumps(structured, ensure_ascii=False)
    if result.is_error:
        failure = ToolResult.failure(text or "the tool failed without saying why")
        return ToolResult(
            ok=False,
            output=failure.output,
            error=failure.error,
            structured=structured,
            images=tuple(images),
        )
    return ToolResult(ok=True, output=text, structured=structured, images=tuple(images))


def kept_image(item: mcp_types.ImageContent, limit: int, images: list[dict[str, Any]]) -> str:
    """Keep the image for the card (in `images`) if it may be shown; what the text says of it."""
    size = decoded_size(item.data)
    problem = image_problem(item.mime_type, item.data, limit, len(images))
    if problem is not None:
        return f"[image: {item.mime_type}, {size:,} bytes, not shown: {problem}]"
    images.append({"mime_type": item.mime_type, "size": size, "data": item.data})
    return f"[image {len(images)}: {item.mime_type}, {size:,} bytes, shown to the user]"


def image_problem(mime_type: str, data: str, limit: int, kept: int) -> str | None:
    """Why an image is not shown, or None."""
    signatures = IMAGE_SIGNATURES.get(mime_type)
    if signatures is None:
        return "only PNG, JPEG, GIF and WebP images are shown"
    if kept >= IMAGES_PER_CALL:
        return f"a call shows at most {IMAGES_PER_CALL} images"
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return "its data is not base64"
    if len(raw) > limit:
        return f"larger than {limit:,} bytes"
    if not raw.startswith(signatures) or (mime_type == "image/webp" and raw[8:12] != b"WEBP"):
        return f"its bytes are not an {mime_type}"
    return None


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
