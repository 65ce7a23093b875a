"""The configured model: where it is served and an `openai` client for it, wrapped as a provider."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import openai
from django.conf import settings

from . import metrics
from .streaming.chat_completions import stream_chat_completion
from .streaming.events import ProviderEvent
from .streaming.loop import Provider
from .streaming.retries import RetryPolicy, retrying
from .streaming.timeouts import StreamTimeouts

logger = logging.getLogger(__name__)

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


def http_timeout() -> openai.Timeout:
    """The HTTP client's limits: connecting, and a backstop per socket read or write.

    The stream's own limits (first event, quiet between events) are kept by the adapters.
    """
    longest = max(settings.LLM_FIRST_EVENT_TIMEOUT, settings.LLM_IDLE_TIMEOUT)
    connect = settings.LLM_CONNECT_TIMEOUT
    return openai.Timeout(connect=connect, read=longest, write=longest, pool=connect)


def chat_client(configured: Endpoint) -> openai.AsyncOpenAI:
    """The running event loop's client for the endpoint, with its connection pool.

    It makes one try per call: `retry_policy` retries, so that a page can say it is waiting.
    """
    clients = _clients.setdefault(asyncio.get_running_loop(), {})
    timeout = http_timeout()
    key = (configured.base_url, configured.api_key, timeout.connect, timeout.read)
    client = clients.get(key)
    if client is None:
        client = clients[key] = openai.AsyncOpenAI(
            base_url=configured.base_url,
            api_key=configured.api_key,
            max_retries=0,
            timeout=timeout,
        )
    return client


def retry_policy() -> RetryPolicy:
    return RetryPolicy(
        max_retries=settings.LLM_MAX_RETRIES,
        budget=settings.LLM_TIMEOUT,
        timeouts=StreamTimeouts(settings.LLM_FIRST_EVENT_TIMEOUT, settings.LLM_IDLE_TIMEOUT),
    )


def retried(
    attempt: Callable[[StreamTimeouts], AsyncIterator[ProviderEvent]],
) -> AsyncIterator[ProviderEvent]:
    """One model call, tried again as the settings allow when it fails before answering."""
    return retrying(metrics.timed(attempt), retry_policy())


def chat_provider(client: openai.AsyncOpenAI, configured: Endpoint) -> Provider:
    def provider(
        messages: list[dict[str, Any]], tools: list[dict[str, Any]]
    ) -> AsyncIterator[ProviderEvent]:
        return retried(
            lambda timeouts: stream_chat_completion(
                client,
                model=configured.model,
                messages=messages,
                tools=tools,
                max_tokens=configured.max_tokens,
                timeouts=timeouts,
            )
        )

    return provider


def responses_store(configured: Endpoint) -> bool:
    """Whether Responses calls are stored and continued by id: LLM_RESPONSES_STORE, or when it
    is unset, for OpenAI's own endpoint only (a proxy may store nothing it can continue from)."""
    if settings.LLM_RESPONSES_STORE is not None:
        return bool(settings.LLM_RESPONSES_STORE)
    return configured.base_url is None or urlsplit(configured.base_url).hostname == OPENAI_HOST


OPENAI_HOST = "api.openai.com"


API_STYLES = {"chat_completions": "Chat Completions", "responses": "Responses"}
MODEL_LIST_TTL = 60.0
MODEL_LIST_TIMEOUT = 10.0
# Per endpoint: when the list was last fetched (or tried), and the names it had.
_listed: dict[tuple[str | None, str], tuple[float, list[str]]] = {}
_listing: dict[tuple[str | None, str], threading.Thread] = {}
_listed_lock = threading.Lock()


def listed_models(configured: Endpoint) -> list[str]:
    """The models the server lists at /v1/models, as last fetched; [] until the first fetch.

    Never waits for the server: a missing or minute-old list is fetched again in a thread of
    its own, so a slow or hanging /v1/models delays no page, message or socket.
    """
    key = (configured.base_url, configured.api_key)
    with _listed_lock:
        fetched_at, names = _listed.get(key, (None, []))
        fresh = fetched_at is not None and time.monotonic() - fetched_at < MODEL_LIST_TTL
        if not fresh and key not in _listing:
            fetch = threading.Thread(
                target=fetch_model_list, args=(configured,), name="model-list", daemon=True
            )
            _listing[key] = fetch
            fetch.start()
    return names


def fetch_model_list(configured: Endpoint) -> None:
    """Ask the server for its models and keep the answer (a failure keeps the last list)."""
    key = (configured.base_url, configured.api_key)
    names: list[str] | None = None
    try:
        with openai.OpenAI(
            base_url=configured.base_url,
            api_key=configured.api_key,
            max_retries=0,
            timeout=openai.Timeout(MODEL_LIST_TIMEOUT, connect=settings.LLM_CONNECT_TIMEOUT),
        ) as client:
            names = sorted(model.id for model in client.models.list())
    except openai.OpenAIError as error:
        logger.info("could not list the models at %s: %s", configured.base_url, error)
    finally:
        with _listed_lock:
            kept = _listed.get(key, (0.0, []))[1]
            _listed[key] = (time.monotonic(), kept if names is None else names)
            _listing.pop(key, None)


def wait_for_model_list(configured: Endpoint, timeout: float | None = None) -> None:
    """Wait for a fetch of the model list under way, if any (for tests)."""
    fetch = _listing.get((configured.base_url, configured.api_key))
    if fetch is not None:
        fetch.join(timeout)


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
