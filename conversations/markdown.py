"""Finished model text as safe HTML: Markdown rendered by markdown-it-py, then sanitised by nh3."""

from __future__ import annotations

from functools import lru_cache
from html import escape

import nh3
from django.utils.safestring import SafeString, mark_safe
from markdown_it import MarkdownIt
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexer import Lexer
from pygments.lexers import get_lexer_by_name
from pygments.token import STANDARD_TYPES
from pygments.util import ClassNotFound

# Longer code is shown plain: a few lexers backtrack badly on odd input.
HIGHLIGHT_LIMIT = 100_000

# Only the class names Pygments gives its standard token types (static/highlight.css styles
# them) survive the sanitiser; no other attribute is added to its defaults, `style` included.
ALLOWED_CLASSES = {
    "pre": {"highlight"},
    "span": {name for name in STANDARD_TYPES.values() if name},
}

_formatter = HtmlFormatter(nowrap=True)


@lru_cache(maxsize=256)
def code_lexer(language: str) -> Lexer | None:
    """The lexer for a fence's language name; None for a name Pygments does not know.

    No guessing from the code itself: guess_lexer is slow and often wrong on short snippets.
    """
    try:
        return get_lexer_by_name(language, stripnl=False)
    except ClassNotFound:
        return None


def highlight_code(code: str, language: str, attributes: str) -> str:
    """markdown-it's `highlight` hook: a whole <pre>, which markdown-it then uses as it is."""
    lexer = code_lexer(language.lower()) if language and len(code) <= HIGHLIGHT_LIMIT else None
    if lexer is None:
        return f"<pre><code>{escape(code)}</code></pre>"
    return f'<pre class="highlight"><code>{highlight(code, lexer, _formatter)}</code></pre>'


# Raw HTML in the source is escaped by the renderer; nh3 is the second line of defence.
_markdown = MarkdownIt("commonmark", {"html": False, "highlight": highlight_code}).enable(
    ["table", "strikethrough"]
)


def render_markdown(text: str) -> SafeString:
    html = _markdown.render(text)
    return mark_safe(
        nh3.clean(html, allowed_classes=ALLOWED_CLASSES, link_rel="noopener noreferrer nofollow")
    )
