"""The generation runner: owns one assistant turn, detached from any socket.

It runs the tool loop with the answer's in-memory draft as the observer; the draft tells every
change as a numbered event, which the answer's `live.hub.RunStream` delivers to whoever
follows it. A `Checkpoint` saves the draft to the Message and ToolCall rows, coalesced, so the
rows are the record for reloads and for a process that dies; the final state is saved before
the final event is published.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import openai
from django.conf import settings

from . import llm, local_model, metrics, titles
from .history import aprovider_history
from .live.draft import AnswerDraft
from .live.hub import RunStream, hub
from .models import Message
from .services import Saved, aanswer_save, alast_answer
from .streaming.chat_completions import CONNECTION_LOST, UNREACHABLE
from .streaming.events import ProviderEvent
from .streaming.loop import (
    ChatCompletionsSession,
    LoopOutcome,
    ProviderSession,
    ResponsesSession,
    run_tool_loop,
)
from .streaming.responses import chat_messages_to_input, stream_response
from .toolbox import atoolbox_for

logger = logging.getLogger(__name__)

# Tries to save an answer's end before giving up (the rows then say it was interrupted).
FINAL_SAVE_RETRIES = (0.5, 1.0, 2.0)


async def start_generation(message: Message) -> RunStream:
    """Run the answer for `message` as its own task on this event loop.

    Its stream is registered before this returns, so whoever hears of the new message next can
    follow it. `message.conversation` must be loaded.
    """
    draft = AnswerDraft(
        message_id=message.pk,
        created_at=message.created_at,
        model=message.model,
        status=message.status,
    )
    run = await hub().start_run(message.conversation_id, draft)
    run.task = asyncio.create_task(run_generation(message, run), name=f"generation-{message.pk}")
    return run


async def wait_for_local_runs() -> None:
    """Wait until every run in this process has finished, and the titles they asked for (used by
    tests and shutdown)."""
    while tasks := [run.task for run in hub().runs.values() if run.task and not run.task.done()]:
        await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.gather(*titles.title_tasks(), return_exceptions=True)


class Checkpoint:
    """Saves a running answer's draft to its rows: coalesced, never once per token."""

    def __init__(self, draft: AnswerDraft) -> None:
        self.draft = draft
        self.saved_seq = draft.seq
        self.saved_calls = draft.calls_version
        self.saved_at = time.monotonic()
        self.wake = asyncio.Event()
        draft.save_soon = self.wake.set

    async def save(self, *, final: bool = False) -> Saved:
        draft = self.draft
        seq, calls_version = draft.seq, draft.calls_version
        checkpoint = draft.checkpoint(with_calls=calls_version != self.saved_calls)
        saved = await aanswer_save(message_id=draft.id, checkpoint=checkpoint, final=final)
        metrics.CHECKPOINT_WRITES.inc()
        if saved == Saved.SAVED:
            self.saved_seq, self.saved_calls = seq, calls_version
            self.saved_at = time.monotonic()
        return saved

    async def save_periodically(self, run: asyncio.Task[Any]) -> None:
        """Save what changed every CHAT_CHECKPOINT_INTERVAL; stop the run if told to stop."""
        while True:
            # Woken early by a change that should show in the rows at once (a call waiting for
            # the user's approval, so a reload and the admin show it).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(settings.CHAT_CHECKPOINT_INTERVAL):
                    await self.wake.wait()
            self.wake.clear()
            stale = time.monotonic() - self.saved_at >= settings.CHAT_HEARTBEAT_INTERVAL
            if self.draft.seq == self.saved_seq and not stale:
                continue
            try:
                saved = await self.save()
            except Exception:
                logger.warning("saving message %s failed; retrying", self.draft.id, exc_info=True)
                continue
            if saved != Saved.SAVED:
                # Stopped from another process, ended as one no process ran, or deleted:
                # run_generation sorts it out.
                run.cancel()
                return

    async def save_end(self) -> None:
        """Save the final state, retrying a failing database a few times."""
        for delay in (*FINAL_SAVE_RETRIES, None):
            try:
                saved = await self.save(final=True)
                if saved == Saved.GONE:
                    logger.info("message %s was deleted while it was being written", self.draft.id)
                elif saved == Saved.ENDED:
                    logger.warning("message %s was ended as if its run had died", self.draft.id)
                return
            except Exception:
                if delay is None:
                    logger.exception("could not save the end of message %s", self.draft.id)
                    return
                logger.warning("saving the end of message %s failed; retrying", self.draft.id)
                await asyncio.sleep(delay)


@contextlib.asynccontextmanager
async def model_slot(configured: llm.Endpoint, draft: AnswerDraft) -> AsyncIterator[int]:
    """Wait for the local model if another answer is using it or it is restarting.

    Yields the supervised server's generation (0 when none is supervised, or for remote models,
    which need no turn).
    """
    if not configured.local:
        yield 0
        return
    lock = local_model.local_model_lock()
    supervisor = local_model.supervisor()
    queued = lock.locked() or (
        supervisor is not None and supervisor.state == local_model.ServerState.RESTARTING
    )
    if queued:
        draft.set_status(Message.Status.QUEUED)
    async with lock:
        generation = await supervisor.wait_until_up() if supervisor is not None else 0
        if queued:
            draft.set_status(Message.Status.STREAMING)
        yield generation


async def run_generation(message: Message, run: RunStream) -> None:
    draft = run.draft
    metrics.answer_started(draft)
    checkpoint = Checkpoint(draft)
    this_task = asyncio.current_task()
    assert this_task is not None
    saver = asyncio.create_task(checkpoint.save_periodically(this_task))
    status, error = Message.Status.FAILED, ""
    try:
        configured = llm.endpoint()
        if configured is None:
            error = llm.SETUP_HINT
        else:
            # The model was checked against those on offer when the turn started.
            configured = replace(configured, model=message.model or configured.model)
            async with model_slot(configured, draft) as generation:
                outcome = await answer(message, configured, run)
                error = outcome.error
                if configured.local and outcome.details.get("kind") == CONNECTION_LOST:
                    error = await local_model_failure(error, generation)
            status = (
                Message.Status.FAILED if outcome.status == "failed" else Message.Status.COMPLETE
            )
    except local_model.LocalModelUnavailable as unavailable:
        status, error = Message.Status.FAILED, str(unavailable)
    except asyncio.CancelledError:
        # Stopped by someone, or interrupted by this process shutting down (drain).
        if run.interrupted:
            status, error = Message.Status.INTERRUPTED, run.interrupted
        else:
            status, error = Message.Status.CANCELLED, ""
    except Exception:
        logger.exception("generation %s failed", message.pk)
        status, error = Message.Status.FAILED, "An internal error stopped this answer."
    finally:
        # From here on a Stop has nothing to stop, and must not interrupt the final save.
        run.ending = True
        saver.cancel()
        with contextlib.suppress(BaseException):
            await saver
        events = draft.finish(status, error)
        metrics.answer_ended(draft)
        await checkpoint.save_end()
        run.finish(events)
        if status == Message.Status.COMPLETE and settings.CHAT_GENERATE_TITLES:
            titles.title_soon(message)


LOCAL_MODEL_HINT = (
    "The embedded local model runs alongside the site when it is started with `make run` "
    "(or `manage.py serve`)."
)


async def local_model_failure(error: str, generation: int) -> str:
    """The local model's connection failed: say it crashed, if it did, or how to start it."""
    supervisor = local_model.supervisor()
    if supervisor is not None:
        return await supervisor.crash_during(generation) or error
    if error.startswith(UNREACHABLE):
        return f"{error} {LOCAL_MODEL_HINT}"
    return error


async def answer(message: Message, configured: llm.Endpoint, run: RunStream) -> LoopOutcome:
    conversation = message.conversation
    history = await aprovider_history(conversation=conversation, before=message)
    client = llm.chat_client(configured)
    if message.api_style == "responses":
        session: ProviderSession = await responses_session(message, configured, client, history)
    else:
        session = ChatCompletionsSession(llm.chat_provider(client, configured), history)
    draft = run.draft
    toolbox = await atoolbox_for(user_id=conversation.owner_id, conversation_id=conversation.pk)
    draft.tool_servers = {tool.name: tool.server for tool in toolbox if tool.server}
    draft.progress_interval = settings.CHAT_PROGRESS_INTERVAL
    outcome = await run_tool_loop(
        session=session,
        toolbox=toolbox,
        observer=draft,
        max_steps=settings.LLM_MAX_STEPS,
        approver=run,
        approval_timeout=settings.CHAT_APPROVAL_TIMEOUT,
    )
    if isinstance(session, ResponsesSession):
        draft.response_id = session.last_response_id
    return outcome


async def responses_session(
    message: Message,
    configured: llm.Endpoint,
    client: openai.AsyncOpenAI,
    history: list[dict[str, Any]],
) -> ResponsesSession:
    """Continue from the previous answer's stored response when possible, else replay it all."""
    store = llm.responses_store(configured)
    previous = await alast_answer(conversation=message.conversation, before=message)
    continues = (
        store
        and previous is not None
        and previous.api_style == "responses"
        and previous.response_id
        and previous.model == configured.model
        and previous.status == Message.Status.COMPLETE
    )
    instructions, items = chat_messages_to_input(history)
    if continues:
        # The server already holds everything up to the stored response: send the new user
        # message only.
        items = items[-1:]

    def stream(**options: Any) -> AsyncIterator[ProviderEvent]:
        return llm.retried(
            lambda timeouts: stream_response(
                client,
                model=configured.model,
                max_output_tokens=configured.max_tokens,
                timeouts=timeouts,
                **options,
            )
        )

    return ResponsesSession(
        stream,
        instructions=instructions,
        input=items,
        previous_response_id=previous.response_id if continues and previous else None,
        store=store,
    )
