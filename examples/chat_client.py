"""A terminal client for the chat's JSON API (docs/api.md): ask one question, print the answer live.

    python examples/chat_client.py --url http://127.0.0.1:8000 --token TOKEN "What is 17 * 23?"

Starts a new conversation unless --conversation names one. The answer streams to standard output;
tool calls show as progress lines on standard error; a tool that asks first is approved or denied
at a y/n prompt. A dropped connection is reopened and the answer resumed from the last event
received, so nothing is printed twice or lost. Exits 0 when the answer completes, 1 when it ends
otherwise (failed, cancelled, interrupted), 2 when the server refuses the request.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

FINAL = {"complete", "failed", "cancelled", "interrupted"}
# Waits between attempts to reopen a dropped connection, in seconds; the last one repeats.
RECONNECT_WAITS = (0.2, 0.5, 1, 2, 5)
RECONNECT_ATTEMPTS = 30


class Refused(Exception):
    """The server said no (a bad token, a missing conversation, bad input): exit 2."""


@dataclass
class Call:
    name: str
    arguments: str = ""
    started: float | None = None


@dataclass
class Answer:
    """What has been shown of the answer being followed."""

    message_id: int | None = None
    seq: int = 0
    printed: int = 0
    status: str = ""
    error: str = ""
    calls: dict[str, Call] = field(default_factory=dict)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--url", required=True, help="the site, e.g. http://127.0.0.1:8000")
    parser.add_argument("--token", required=True, help="an API token (the API tokens page)")
    parser.add_argument("--conversation", type=int, help="continue this conversation")
    parser.add_argument("question")
    options = parser.parse_args()
    try:
        return asyncio.run(
            ask(options.url.rstrip("/"), options.token, options.conversation, options.question)
        )
    except Refused as refused:
        print(f"error: {refused}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


async def ask(url: str, token: str, conversation: int | None, question: str) -> int:
    if conversation is None:
        conversation = await asyncio.to_thread(conversation_create, url, token)
        note(f"[conversation {conversation}]")
    answer = Answer()
    sent = False
    # The latest answer before ours: after a drop before `message.created`, a newer one is ours.
    known_before: int | None = None
    for attempt in range(RECONNECT_ATTEMPTS):
        try:
            async with connect(
                socket_url(url, conversation),
                additional_headers={"Authorization": f"Bearer {token}"},
                max_size=None,
            ) as socket:
                ready = await receive(socket)
                if ready["type"] != "ready":
                    raise Refused(describe(ready))
                latest = (ready["answer"] or {}).get("message_id")
                if known_before is None:
                    known_before = latest or 0
                if answer.message_id is None and sent and latest and latest > known_before:
                    answer.message_id = latest
                if answer.message_id is not None:
                    await command(
                        socket, type="resume", message_id=answer.message_id, after=answer.seq
                    )
                elif not sent:
                    await command(socket, type="send", text=question)
                    sent = True
                else:
                    # The question was sent but never stored (no newer answer): send it again.
                    await command(socket, type="send", text=question)
                await follow(socket, answer)
                return 0 if answer.status == "complete" else 1
        except InvalidStatus as refused:
            status = refused.response.status_code
            raise Refused(f"the server answered the handshake with {status}") from None
        except (ConnectionClosed, OSError) as dropped:
            if isinstance(dropped, ConnectionClosed) and dropped.rcvd and dropped.rcvd.code >= 4000:
                raise Refused(dropped.rcvd.reason or f"closed with {dropped.rcvd.code}") from None
            wait = RECONNECT_WAITS[min(attempt, len(RECONNECT_WAITS) - 1)]
            note(f"\n[connection lost; reconnecting in {wait:g} s]")
            await asyncio.sleep(wait)
    note("[gave up reconnecting]")
    return 1


async def follow(socket: ClientConnection, answer: Answer) -> None:
    """Apply the answer's events until it ends."""
    while answer.status not in FINAL:
        event = await receive(socket)
        kind = event["type"]
        if kind == "error":
            if event["code"] in (
                "unauthorized",
                "not_found",
                "invalid_input",
                "busy",
                "rate_limited",
            ):
                raise Refused(describe(event))
            note(f"[server: {describe(event)}]")
            continue
        if kind in ("ready", "pong"):
            continue
        if kind == "message.created" and answer.message_id is None:
            answer.message_id = event["message_id"]
        if event.get("message_id") != answer.message_id:
            continue
        if kind in ("message.created", "snapshot"):
            if event["seq"] > answer.seq or kind == "snapshot":
                restore(answer, event["message"])
                answer.seq = max(answer.seq, event["seq"])
            continue
        if event["seq"] <= answer.seq:
            continue  # had it already, before the connection dropped
        answer.seq = event["seq"]
        await apply(socket, answer, event)


def restore(answer: Answer, message: dict[str, Any]) -> None:
    """Catch up from the whole answer: print the text not yet printed."""
    content = message["content"]
    if len(content) > answer.printed:
        write(content[answer.printed :])
        answer.printed = len(content)
    answer.status = message["status"]
    answer.error = message["error"]
    if answer.status in FINAL:
        finish(answer)


async def apply(socket: ClientConnection, answer: Answer, event: dict[str, Any]) -> None:
    match event["type"]:
        case "text.delta":
            write(event["text"])
            answer.printed += len(event["text"])
        case "tool.created":
            answer.calls[event["tool_call_id"]] = Call(event["name"])
        case "tool.status":
            await tool_status(socket, answer, event)
        case "tool.progress":
            call = answer.calls.setdefault(event["tool_call_id"], Call("tool"))
            done = f"{event['progress']:g}"
            if event["total"]:
                done += f"/{event['total']:g}"
            note(f"[{call.name}: {done}{' ' + event['message'] if event['message'] else ''}]")
        case "message.status" if event["status"] == "queued":
            note("[queued: waiting for the model]")
        case "retrying":
            note(
                f"[{event['reason']}; retrying in {event['delay']:.0f} s, "
                f"try {event['attempt']} of {event['attempts']}]"
            )
        case "message.finished":
            answer.status, answer.error = event["status"], event["error"]
            finish(answer)


async def tool_status(socket: ClientConnection, answer: Answer, event: dict[str, Any]) -> None:
    call = answer.calls.setdefault(event["tool_call_id"], Call("tool"))
    status = event["status"]
    if event.get("arguments") is not None:
        call.arguments = event["arguments"]
    if status == "awaiting_approval":
        allowed = await asyncio.to_thread(confirm, f"Allow {call.name}({call.arguments})? [y/N] ")
        kind = "approve" if allowed else "deny"
        extra = {} if allowed else {"reason": "Denied at the terminal."}
        await command(socket, type=kind, tool_call_id=event["tool_call_id"], **extra)
    elif status == "running":
        call.started = time.monotonic()
        note(f"\n[{call.name}({call.arguments}) running…]")
    elif status in ("succeeded", "failed", "denied", "cancelled"):
        took = f" in {time.monotonic() - call.started:.2f} s" if call.started else ""
        outcome = "done" if status == "succeeded" else status
        if reason := (event.get("error") or event.get("reason")) if status != "succeeded" else "":
            outcome = f"{outcome} ({reason})"
        note(f"[{call.name} {outcome}{took}]")


def finish(answer: Answer) -> None:
    write("\n")
    if answer.status != "complete" or answer.error:
        note(f"[{answer.status}{': ' + answer.error if answer.error else ''}]")


def confirm(prompt: str) -> bool:
    print(prompt, end="", file=sys.stderr, flush=True)
    line = sys.stdin.readline()
    return line.strip().lower() in ("y", "yes")


async def command(socket: ClientConnection, **frame: Any) -> None:
    await socket.send(json.dumps(frame))


async def receive(socket: ClientConnection) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(await socket.recv())
    return data


def describe(event: dict[str, Any]) -> str:
    return f"{event.get('message') or event.get('type')} ({event.get('code', '')})"


def conversation_create(url: str, token: str) -> int:
    request = urllib.request.Request(
        f"{url}/api/conversations/",
        data=b"{}",
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(json.load(response)["id"])
    except urllib.error.HTTPError as refused:
        try:
            reason = json.load(refused)["error"]["message"]
        except (ValueError, KeyError, TypeError):
            reason = f"HTTP {refused.code}"
        raise Refused(reason) from None


def socket_url(url: str, conversation: int) -> str:
    scheme, rest = url.split("://", 1)
    return f"{'wss' if scheme == 'https' else 'ws'}://{rest}/ws/api/conversations/{conversation}/"


def write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def note(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
