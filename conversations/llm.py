"""The configured model: an `openai` client built from settings, wrapped as a loop provider."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import openai
from django.conf import settings

from .streaming.chat_completions import stream_chat_completion
from .streaming.events import ProviderEvent
from .streaming.loop import Provider

SETUP_HINT = (
    "No model is configured. Set OPENAI_API_KEY (and optionally LLM_MODEL) to use OpenAI, or "
    "OPENAI_BASE_URL and LLM_MODEL to use an OpenAI-compatible server such as Ollama "
    "(OPENAI_BASE_URL=http://127.0.0.1:11434/v1 LLM_MODEL=llama3.2), then restart the server."
)


def model_name() -> str:
    """The configured model name, or "" when no model is configured."""
    if not (settings.OPENAI_API_KEY or settings.OPENAI_BASE_URL):
        return ""
    return str(settings.LLM_MODEL)


def chat_client() -> openai.AsyncOpenAI:
    """A client for one generation; the caller closes it (its connections belong to one loop)."""
    return openai.AsyncOpenAI(
        base_url=settings.OPENAI_BASE_URL or None,
        # OpenAI-compatible local servers accept any key; the SDK insists on one.
        api_key=settings.OPENAI_API_KEY or "not-needed",
        max_retries=settings.LLM_MAX_RETRIES,
        timeout=settings.LLM_TIMEOUT,
    )


def chat_provider(client: openai.AsyncOpenAI, model: str) -> Provider:
    def provider(
        messages: list[dict[str, Any]], tools: list[dict[str, Any]]
    ) -> AsyncIterator[ProviderEvent]:
        return stream_chat_completion(client, model=model, messages=messages, tools=tools)

    return provider
