"""Titles the conversation's model writes for it after its first exchange."""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import replace
from typing import TYPE_CHECKING

import openai
from django.conf import settings

from . import actions, llm, local_model, services

if TYPE_CHECKING:
    from .models import Message

logger = logging.getLogger(__name__)

# Titles being written after a first answer: kept here so that they are not collected.
_title_tasks: set[asyncio.Task[None]] = set()

TITLE_INSTRUCTION = (
    "Write a title for the conversation below: at most 6 words, no quotes, no Markdown, no "
    "punctuation at the end. Reply with the title only."
)
# How much of the first question and answer the model is shown.
EXCERPT_LENGTH = 2000
TITLE_MAX_CHARACTERS = 80
# A reply longer than this is not a title (a small model answering the conversation instead):
# the first words are kept.
TITLE_MAX_WORDS = 10
# A local model writes one thing at a time: a title is short.
LOCAL_MAX_TOKENS = 32

QUOTES = "\"'`“”‘’«»„"
LEADING_LABEL = re.compile(r"^(title|conversation title)\s*:\s*", re.IGNORECASE)


def title_clean(text: str) -> str:
    """The title in a model's reply: its first line, without a "Title:" label, quotes, Markdown
    emphasis or headings, or punctuation at the end; at most TITLE_MAX_CHARACTERS. "" if none,
    or if that line has more than TITLE_MAX_WORDS words (it is not a title)."""
    line = next((line for line in text.splitlines() if line.strip()), "")
    line = line.strip().lstrip("#>-").strip()
    previous = None
    while previous != line:
        previous = line
        line = line.strip().strip("*_~" + QUOTES).strip().rstrip(".!?,;:。")
        line = LEADING_LABEL.sub("", line)
    words = line.split()
    if len(words) > TITLE_MAX_WORDS:
        return ""
    return " ".join(words)[:TITLE_MAX_CHARACTERS].rstrip()


def exchange_prompt(exchange: services.FirstExchange) -> str:
    return (
        f"User: {exchange.question[:EXCERPT_LENGTH]}\n\n"
        f"Assistant: {exchange.answer[:EXCERPT_LENGTH]}"
    )


async def title_ask(
    exchange: services.FirstExchange, configured: llm.Endpoint, api_style: str
) -> str:
    """The model's reply to the title instruction: one call without tools, not streamed."""
    client = llm.chat_client(configured)
    max_tokens = LOCAL_MAX_TOKENS if configured.local else None
    async with asyncio.timeout(settings.LLM_TIMEOUT):
        if api_style == "responses":
            response = await client.responses.create(
                model=configured.model,
                instructions=TITLE_INSTRUCTION,
                input=exchange_prompt(exchange),
                store=False,
                max_output_tokens=openai.omit if max_tokens is None else max_tokens,
            )
            return str(response.output_text)
        completion = await client.chat.completions.create(
            model=configured.model,
            messages=[
                {"role": "system", "content": TITLE_INSTRUCTION},
                {"role": "user", "content": exchange_prompt(exchange)},
            ],
            max_tokens=openai.omit if max_tokens is None else max_tokens,
        )
        if not completion.choices:
            return ""
        return completion.choices[0].message.content or ""


async def title_generate(*, answer_id: int, model: str, api_style: str) -> None:
    """Give the conversation a title its model wrote, if `answer_id` completed its first
    exchange and nobody renamed it since; tell its open pages. A failure keeps the title it has
    (the first message's first words), logged only."""
    if not settings.CHAT_GENERATE_TITLES:
        return
    configured = llm.endpoint()
    exchange = await services.afirst_exchange(answer_id=answer_id)
    if configured is None or exchange is None:
        return
    configured = replace(configured, model=model or configured.model)
    try:
        if configured.local:
            async with local_model.local_model_lock():
                reply = await title_ask(exchange, configured, api_style)
        else:
            reply = await title_ask(exchange, configured, api_style)
    except (openai.OpenAIError, TimeoutError) as error:
        logger.info("no title for conversation %s: %s", exchange.conversation_id, error)
        return
    except Exception:
        logger.exception("asking for conversation %s's title failed", exchange.conversation_id)
        return
    title = title_clean(reply)
    if not title:
        logger.info(
            "no title for conversation %s: the model's reply was empty", exchange.conversation_id
        )
        return
    stored = await services.aconversation_title_generated(
        conversation_id=exchange.conversation_id,
        fallback_title=exchange.fallback_title,
        title=title,
    )
    if stored:
        await actions.conversation_changed(conversation_id=exchange.conversation_id)


def title_tasks() -> set[asyncio.Task[None]]:
    """The titles being written on this event loop."""
    loop = asyncio.get_running_loop()
    return {task for task in _title_tasks if task.get_loop() is loop and not task.done()}


def title_soon(message: Message) -> None:
    """Have the model title the conversation after its first answer, in a task of its own: the
    answer has been saved and shown; the title follows when it comes."""
    task = asyncio.create_task(
        title_generate(answer_id=message.pk, model=message.model, api_style=message.api_style),
        name=f"title-{message.conversation_id}",
    )
    _title_tasks.add(task)
    task.add_done_callback(_title_tasks.discard)
