"""Finished model text as safe HTML: Markdown rendered by markdown-it-py, then sanitised by nh3."""

from __future__ import annotations

import nh3
from django.utils.safestring import SafeString, mark_safe
from markdown_it import MarkdownIt

# Raw HTML in the source is escaped by the renderer; nh3 is the second line of defence.
_markdown = MarkdownIt("commonmark", {"html": False}).enable(["table", "strikethrough"])


def render_markdown(text: str) -> SafeString:
    return mark_safe(nh3.clean(_markdown.render(text), link_rel="noopener noreferrer nofollow"))
