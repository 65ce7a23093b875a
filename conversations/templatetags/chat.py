"""Template filters for chat pages."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from django import template
from django.utils.safestring import SafeString

from ..live.draft import AnswerDraft
from ..markdown import render_markdown
from ..models import Message
from ..services import answer_cut_off

register = template.Library()


@register.filter
def markdown(text: str) -> SafeString:
    return render_markdown(text)


@register.filter
def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)


@register.filter
def seconds(value: timedelta | None) -> str:
    if value is None:
        return ""
    return f"{value.total_seconds():.2f} s"


@register.filter
def cut_off(message: Message | AnswerDraft) -> bool:
    """Whether the answer was cut off at the token limit (it can be continued)."""
    return answer_cut_off(message)
