"""The configured model: where it is served and an `openai` client for it, wrapped as a provider."""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import openai
from django.conf import settings

from .streaming.chat_completions import stream_chat_completion
from .streaming.events import ProviderEvent
from .streaming.loop import Provider

SETUP_HINT = (
    "No model is configured. Set OPENAI_API_KEY (and optionally LLM_MODEL) to use OpenAI, or "
    "OPENAI_BASE_URL and LLM_MODEL to use an OpenAI-compatible server such as Ollama "
    "(OPENAI_BASE_URL=http://127.0.0.1:11434/v1 LLM_MODEL=llama3.2), or unset all of them and "
    "LLM_BACKEND to use the embedded local model; then restart the server."
)


@dataclass(frozen=True, slots=True)
class Endpoint:
    model: str
    base_url: str | None
    api_key: str
    local: bool
    max_tokens: int | None


def local_base_url() -> str:
    return f"http://{settings.LOCAL_LLM_HOST}:{settings.LOCAL_LLM_PORT}/v1"


def endpoint() -> Endpoint | None:
    """Where the configured model is served, or None when no model is configured."""
    remote = bool(settings.OPENAI_API_KEY or settings.OPENAI_BASE_URL)
    if settings.LLM_BACKEND == "local" or (settings.LLM_BACKEND == "auto" and not remote):
        return Endpoint(
            model=settings.LOCAL_LLM_MODEL,
            base_url=local_base_url(),
            # llama.cpp's server ignores the key; the SDK insists on one.
            api_key="local",
            local=True,
            max_tokens=settings.LLM_MAX_TOKENS or settings.LOCAL_LLM_MAX_TOKENS,
        )
    if not remote or not settings.LLM_MODEL:
        return None
    return Endpoint(
        model=settings.LLM_MODEL,
        base_url=settings.OPENAI_BASE_URL or None,
        api_key=settings.OPENAI_API_KEY or "not-needed",
        local=False,
        max_tokens=settings.LLM_MAX_TOKENS,
    )


def model_name() -> str:
    """The configured model's name, or "" when no model is configured."""
    configured = endpoint()
    return configured.model if configured else ""


# One client per endpoint and settings per event loop: building one (and its SSL context) for
# every answer cost a fifth of the server's CPU under load, and reuse keeps connections alive.
_clients: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[tuple[Any, ...], openai.AsyncOpenAI]
] = weakref.WeakKeyDictionary()


def chat_client(configured: Endpoint) -> openai.AsyncOpenAI:
    """The running event loop's client for the endpoint, with its connection pool."""
    clients = _clients.setdefault(asyncio.get_running_loop(), {})
    key = (configured.base_url, configured.api_key, settings.LLM_MAX_RETRIES, settings.LLM_TIMEOUT)
    client = clients.get(key)
    if client is None:
        client = clients[key] = openai.AsyncOpenAI(
            base_url=configured.base_url,
            api_key=configured.api_key,
            max_retries=settings.LLM_MAX_RETRIES,
            timeout=settings.LLM_TIMEOUT,
        )
    return client


def chat_provider(client: openai.AsyncOpenAI, configured: Endpoint) -> Provider:
    def provider(
        messages: list[dict[str, Any]], tools: list[dict[str, Any]]
    ) -> AsyncIterator[ProviderEvent]:
        return stream_chat_completion(
            client,
            model=configured.model,
            messages=messages,
            tools=tools,
            max_tokens=configured.max_tokens,
        )

    return provider


API_STYLES = {"chat_completions": "Chat Completions", "responses": "Responses"}
MODEL_LIST_TTL = 60.0
_listed: dict[tuple[str | None, str], tuple[float, list[str]]] = {}


def listed_models(configured: Endpoint) -> list[str]:
    """The models the server lists at /v1/models (cached for a minute; [] if it lists none)."""
    key = (configured.base_url, configured.api_key)
    cached = _listed.get(key)
    if cached and time.monotonic() - cached[0] < MODEL_LIST_TTL:
        return cached[1]
    try:
        with openai.OpenAI(
            base_url=configured.base_url, api_key=configured.api_key, max_retries=0, timeout=2
        ) as client:
            names = sorted(model.id for model in client.models.list())
    except openai.OpenAIError:
        names = []
    _listed[key] = (time.monotonic(), names)
    return names


def model_choices() -> list[str]:
    """The models a conversation may pick: the configured one first."""
    configured = endpoint()
    if configured is None:
        return []
    if configured.local:
        return [configured.model]
    extra = [*settings.LLM_MODELS, *listed_models(configured)]
    return list(dict.fromkeys([configured.model, *extra]))


def api_style_choices() -> dict[str, str]:
    configured = endpoint()
    if configured is None:
        return {}
    if configured.local:
        # llama-cpp-python's server speaks Chat Completions only.
        return {"chat_completions": API_STYLES["chat_completions"]}
    return API_STYLES


def default_api_style() -> str:
    configured = endpoint()
    return "chat_completions" if configured is None or configured.local else settings.LLM_API_STYLE
