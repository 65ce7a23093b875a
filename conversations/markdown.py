"""Finished model text as safe HTML: Markdown rendered by markdown-it-py, then sanitised by nh3."""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from functools import lru_cache
from html import escape

import nh3
from django.utils.safestring import SafeString, mark_safe
from markdown_it import MarkdownIt
from markdown_it.rules_core import StateCore
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
ALIGN_CLASSES = {"align-left", "align-center", "align-right"}
ALLOWED_CLASSES = {
    "pre": {"highlight"},
    "span": {name for name in STANDARD_TYPES.values() if name},
    "th": ALIGN_CLASSES,
    "td": ALIGN_CLASSES,
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


def table_alignment_classes(state: StateCore) -> None:
    """A table column's alignment (`|---:|`) as a class: markdown-it writes it as a style
    attribute, which the sanitiser removes and the Content-Security-Policy would block."""
    for token in state.tokens:
        style = token.attrGet("style") if token.type in ("th_open", "td_open") else None
        if isinstance(style, str) and style.startswith("text-align:"):
            del token.attrs["style"]
            token.attrSet("class", "align-" + style.removeprefix("text-align:"))


_markdown.core.ruler.push("table_alignment_classes", table_alignment_classes)


def render_markdown(text: str) -> SafeString:
    html = _markdown.render(text)
    return mark_safe(
        nh3.clean(html, allowed_classes=ALLOWED_CLASSES, link_rel="noopener noreferrer nofollow")
    )


# Block structure only (no inline parsing): where each top-level block starts.
_blocks = MarkdownIt("commonmark").enable(["table"]).disable(["inline", "text_join"])
_line_end = re.compile(r"\r\n?|\n")


def stable_length(text: str) -> int:
    """How much of `text`, an answer being written, is finished Markdown blocks.

    Only complete lines count; the last top-level block among them may still grow (a paragraph
    turning into a setext heading, a list or table gaining rows, an unclosed fence), so it and
    anything after it are not finished. Everything before its first line is: the blocks there
    render now as they will once the answer ends.
    """
    end = text.rfind("\n") + 1
    if not end:
        return 0
    starts = [token.map[0] for token in _blocks.parse(text[:end]) if token.level == 0 and token.map]
    if len(starts) < 2 or not starts[-1]:
        return 0
    line_ends = itertools.islice(_line_end.finditer(text), starts[-1] - 1, None)
    return next(line_ends).end()


@dataclass(frozen=True, slots=True)
class StreamingText:
    """A text part as a page shows it while it is written: finished blocks, then the rest."""

    stable: SafeString
    tail: str


def render_streaming(text: str, *, finished: bool = False) -> StreamingText:
    """`text` split where `stable_length` says; a `finished` part is Markdown throughout."""
    at = len(text) if finished else stable_length(text)
    return StreamingText(render_markdown(text[:at]) if at else mark_safe(""), text[at:])
