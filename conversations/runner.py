"""The generation runner: owns one assistant turn, detached from any socket.

It runs the tool loop, keeps the Message and ToolCall rows up to date with coalesced
checkpoints, and after each checkpoint tells the conversation's group that there is news.
Pages re-read the rows, so a lost wake-up or a reconnect never loses text.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import weakref
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import openai
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import DatabaseError
from django.utils import timezone

from . import llm, local_model
from .models import Conversation, Message, ToolCall
from .services import alast_answer, aprovider_history
from .streaming.chat_completions import CONNECTION_LOST, UNREACHABLE
from .streaming.events import ProviderEvent, Usage
from .streaming.loop import (
    ChatCompletionsSession,
    LoopOutcome,
    ProviderSession,
    ResponsesSession,
    run_tool_loop,
)
from .streaming.partial_json import parse_partial_arguments
from .streaming.responses import chat_messages_to_input, stream_response
from .streaming.tools import ToolResult
from .toolbox import toolbox_for

logger = logging.getLogger(__name__)

HEARTBEAT_INTERVAL = 10.0

# Strong references: the event loop only keeps weak ones to running tasks.
_runs: dict[int, tuple[int, asyncio.Task[None]]] = {}
# The local model answers one request at a time; asyncio.Lock hands it out first come, first served.
_local_model_slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)


def conversation_group(conversation_id: int) -> str:
    return f"conversation-{conversation_id}"


def start_generation(message: Message) -> asyncio.Task[None]:
    """Run the answer for `message` as its own task on the running event loop."""
    task = asyncio.create_task(run_generation(message.pk), name=f"generation-{message.pk}")
    _runs[message.pk] = (message.conversation_id, task)
    task.add_done_callback(lambda _: _runs.pop(message.pk, None))
    return task


def cancel_local_runs(*, conversation_id: int) -> None:
    """Cancel this process's runs for a conversation; safe to call from any thread."""
    for message_id, (owner_id, task) in list(_runs.items()):
        if owner_id == conversation_id:
            task.get_loop().call_soon_threadsafe(cancel_if_running, message_id)


def cancel_if_running(message_id: int) -> None:
    # Checked on the loop itself: a run that is already writing its final state is left alone.
    run = _runs.get(message_id)
    if run is not None:
        run[1].cancel()


async def wait_for_local_runs() -> None:
    """Wait until every run in this process has finished (used by tests and shutdown)."""
    while _runs:
        await asyncio.gather(*(task for _, task in list(_runs.values())), return_exceptions=True)


async def broadcast_update(conversation_id: int, message_id: int) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    await layer.group_send(
        conversation_group(conversation_id),
        {"type": "generation.update", "message_id": message_id},
    )


class Recorder:
    """Receives the loop's reports and checkpoints them to the database."""

    def __init__(self, message: Message) -> None:
        self.message = message
        self.chunks: list[str] = []
        self.reasoning_chunks: list[str] = []
        self.text_length = 0
        self.calls: dict[tuple[int, int], ToolCall] = {}
        self.dirty_calls: set[tuple[int, int]] = set()
        self.dirty = False
        self.lock = asyncio.Lock()

    async def step_started(self, step: int) -> None:
        self.message.steps = step
        self.dirty = True

    async def text(self, delta: str) -> None:
        self.chunks.append(delta)
        self.text_length += len(delta)
        self.dirty = True

    async def reasoning(self, delta: str) -> None:
        self.reasoning_chunks.append(delta)
        self.dirty = True

    async def tool_started(self, step: int, index: int, call_id: str, name: str) -> None:
        self.calls[(step, index)] = ToolCall(
            message=self.message,
            step=step,
            index=index,
            call_id=call_id,
            name=name,
            text_offset=self.text_length,
            status=ToolCall.Status.STREAMING,
        )
        self.touch(step, index)

    async def tool_arguments(self, step: int, index: int, delta: str) -> None:
        self.calls[(step, index)].arguments += delta
        self.touch(step, index)

    async def tool_ready(
        self, step: int, index: int, call_id: str, name: str, arguments: str
    ) -> None:
        call = self.calls.get((step, index))
        if call is None:
            await self.tool_started(step, index, call_id, name)
            call = self.calls[(step, index)]
        call.arguments = arguments
        call.parsed_arguments = parse_arguments(arguments)
        call.status = ToolCall.Status.PENDING
        self.touch(step, index)
        await self.flush()

    async def tool_running(self, step: int, index: int) -> None:
        call = self.calls[(step, index)]
        call.status = ToolCall.Status.RUNNING
        call.started_at = timezone.now()
        self.touch(step, index)
        await self.flush()

    async def tool_finished(self, step: int, index: int, result: ToolResult) -> None:
        call = self.calls[(step, index)]
        call.status = ToolCall.Status.SUCCEEDED if result.ok else ToolCall.Status.FAILED
        call.output = result.output
        call.error = result.error
        call.finished_at = timezone.now()
        self.touch(step, index)
        await self.flush()

    async def usage(self, usage: Usage) -> None:
        message = self.message
        message.input_tokens = (message.input_tokens or 0) + usage.input_tokens
        message.output_tokens = (message.output_tokens or 0) + usage.output_tokens
        message.total_tokens = (message.total_tokens or 0) + usage.total_tokens
        self.dirty = True

    def touch(self, step: int, index: int) -> None:
        self.dirty_calls.add((step, index))
        self.dirty = True

    async def flush(self, *, heartbeat: bool = False) -> bool:
        """Write what changed since the last checkpoint and wake the pages; False if nothing did."""
        async with self.lock:
            changed = self.dirty
            if not changed and not heartbeat:
                return False
            # Taken before the first await: changes made while writing wait for the next flush.
            keys = sorted(self.dirty_calls)
            self.dirty_calls.clear()
            self.dirty = False
            for key in keys:
                call = self.calls[key]
                if call.status == ToolCall.Status.STREAMING:
                    call.parsed_arguments = parse_partial_arguments(call.arguments)
                await call.asave()
            message = self.message
            message.content = "".join(self.chunks)
            message.reasoning = "".join(self.reasoning_chunks)
            message.heartbeat_at = timezone.now()
            await message.asave(
                update_fields=[
                    "content",
                    "reasoning",
                    "response_id",
                    "status",
                    "error",
                    "steps",
                    "input_tokens",
                    "output_tokens",
                    "total_tokens",
                    "heartbeat_at",
                    "finished_at",
                ]
            )
        if changed:
            await broadcast_update(message.conversation_id, message.pk)
        return changed

    async def set_status(self, status: Message.Status) -> None:
        self.message.status = status
        self.dirty = True
        await self.flush()

    async def finish(self, status: Message.Status, error: str = "") -> None:
        now = timezone.now()
        for key, call in self.calls.items():
            if call.status not in ToolCall.FINISHED:
                call.status = ToolCall.Status.CANCELLED
                call.finished_at = now
                self.touch(*key)
        self.message.status = status
        self.message.error = error
        self.message.finished_at = now
        self.dirty = True
        await self.flush()
        await Conversation.objects.filter(pk=self.message.conversation_id).aupdate(updated_at=now)


def parse_arguments(text: str) -> Any:
    try:
        return json.loads(text) if text.strip() else {}
    except ValueError:
        return parse_partial_arguments(text)


async def checkpoint_periodically(recorder: Recorder, run: asyncio.Task[Any]) -> None:
    """Flush on a fixed beat, keep the heartbeat fresh and notice a Stop from another process."""
    interval = settings.CHAT_CHECKPOINT_INTERVAL
    since_heartbeat = 0.0
    while True:
        await asyncio.sleep(interval)
        since_heartbeat += interval
        beat = since_heartbeat >= HEARTBEAT_INTERVAL
        if beat:
            since_heartbeat = 0.0
        try:
            await recorder.flush(heartbeat=beat)
            stop = await Message.objects.filter(
                pk=recorder.message.pk, stop_requested=True
            ).aexists()
        except DatabaseError:
            # Most often the conversation was deleted mid-run; run_generation sorts it out.
            logger.info("checkpoint of message %s failed; stopping", recorder.message.pk)
            stop = True
        if stop:
            run.cancel()
            return


@contextlib.asynccontextmanager
async def model_slot(configured: llm.Endpoint, recorder: Recorder) -> AsyncIterator[int]:
    """Wait for the local model if another answer is using it or it is restarting.

    Yields the supervised server's generation (0 when none is supervised, or for remote models,
    which need no turn).
    """
    if not configured.local:
        yield 0
        return
    lock = _local_model_slots.setdefault(asyncio.get_running_loop(), asyncio.Lock())
    supervisor = local_model.supervisor()
    queued = lock.locked() or (
        supervisor is not None and supervisor.state == local_model.ServerState.RESTARTING
    )
    if queued:
        await recorder.set_status(Message.Status.QUEUED)
    async with lock:
        generation = await supervisor.wait_until_up() if supervisor is not None else 0
        if queued:
            await recorder.set_status(Message.Status.STREAMING)
        yield generation


async def run_generation(message_id: int) -> None:
    message = await Message.objects.select_related("conversation").aget(pk=message_id)
    recorder = Recorder(message)
    this_task = asyncio.current_task()
    assert this_task is not None
    ticker = asyncio.create_task(checkpoint_periodically(recorder, this_task))
    status, error = Message.Status.FAILED, ""
    try:
        configured = llm.endpoint()
        if configured is None:
            error = llm.SETUP_HINT
        else:
            # The model was checked against those on offer when the turn started.
            configured = replace(configured, model=message.model or configured.model)
            async with model_slot(configured, recorder) as generation:
                outcome = await answer(message, configured, recorder)
                error = outcome.error
                if configured.local and outcome.details.get("kind") == CONNECTION_LOST:
                    error = await local_model_failure(error, generation)
            status = (
                Message.Status.FAILED if outcome.status == "failed" else Message.Status.COMPLETE
            )
    except local_model.LocalModelUnavailable as unavailable:
        status, error = Message.Status.FAILED, str(unavailable)
    except asyncio.CancelledError:
        status, error = Message.Status.CANCELLED, ""
    except Exception:
        logger.exception("generation %s failed", message_id)
        status, error = Message.Status.FAILED, "An internal error stopped this answer."
    finally:
        # Stop further cancels (a second Stop press) from interrupting the final write.
        _runs.pop(message_id, None)
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
        try:
            await recorder.finish(status, error)
        except DatabaseError:
            if await Message.objects.filter(pk=message_id).aexists():
                raise
            logger.info("message %s was deleted while it was being written", message_id)


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


async def answer(message: Message, configured: llm.Endpoint, recorder: Recorder) -> LoopOutcome:
    conversation = message.conversation
    history = await aprovider_history(conversation=conversation, before=message)
    async with llm.chat_client(configured) as client:
        if message.api_style == "responses":
            session: ProviderSession = await responses_session(message, configured, client, history)
        else:
            session = ChatCompletionsSession(llm.chat_provider(client, configured), history)
        outcome = await run_tool_loop(
            session=session,
            toolbox=toolbox_for(user_id=conversation.owner_id),
            observer=recorder,
            max_steps=settings.LLM_MAX_STEPS,
        )
    if isinstance(session, ResponsesSession):
        recorder.message.response_id = session.last_response_id
    return outcome


async def responses_session(
    message: Message,
    configured: llm.Endpoint,
    client: openai.AsyncOpenAI,
    history: list[dict[str, Any]],
) -> ResponsesSession:
    """Continue from the previous answer's stored response when possible, else replay it all."""
    store = settings.LLM_RESPONSES_STORE
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
        return stream_response(
            client, model=configured.model, max_output_tokens=configured.max_tokens, **options
        )

    return ResponsesSession(
        stream,
        instructions=instructions,
        input=items,
        previous_response_id=previous.response_id if continues and previous else None,
        store=store,
    )
