"""The deployer's own tools (CHAT_TOOLS): offered beside the built-ins, called like them (cards,
validation, approval), and a bad entry stops the server before it starts."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from conversations import runner
from conversations.models import Message
from conversations.toolbox import toolbox_for
from examples import deployer_tools
from tests.helpers.chat import (
    Connect,
    assistant_message,
    calls_of,
    finished,
    new_conversation,
    opened,
    receive_until,
    send_and_wait,
)
from tests.helpers.fake_openai import FakeOpenAI, sse, text_stream, tool_calls_stream

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ["examples.deployer_tools.convert_units", "examples.deployer_tools.SAVE_NOTE"]
TOOL_CALL = re.compile(r'name="tool_call" value="(\d+:\d+:\d+)"')


@pytest.fixture
def deployed(settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    settings.CHAT_TOOLS = TOOLS
    settings.CHAT_APPROVAL_TIMEOUT = 5
    notes = tmp_path / "notes.txt"
    monkeypatch.setattr(deployer_tools, "NOTES_FILE", notes)
    return notes


async def test_the_deployers_tools_are_offered_with_their_schemas(
    deployed: Path, connect: Connect, user: User, model_server: FakeOpenAI
) -> None:
    arguments = json.dumps({"value": 5, "unit": "km", "to": "mi"})
    model_server.queue(sse(tool_calls_stream([("convert_units", arguments)])))
    model_server.queue(sse(text_stream("About 3.1 miles.")))
    conversation = await new_conversation(user)
    page = await opened(connect, conversation, user)

    frames = await send_and_wait(page, "5 km in miles?")
    await runner.wait_for_local_runs()

    offered = {tool["function"]["name"]: tool for tool in model_server.requests[0]["tools"]}
    assert {"calculator", "convert_units", "save_note"} <= set(offered)
    assert offered["convert_units"]["function"]["parameters"]["properties"]["unit"]["enum"][:2] == [
        "m",
        "km",
    ]
    [call] = await calls_of(await assistant_message(conversation))
    assert (call.name, call.status, call.output) == (
        "convert_units",
        "succeeded",
        "5 km = 3.10686 mi",
    )
    assert "5 km = 3.10686 mi" in "".join(frames)
    # The output went back to the model with the call.
    assert model_server.requests[1]["messages"][-1]["content"] == "5 km = 3.10686 mi"


async def test_a_bad_call_is_an_error_the_model_reads(
    deployed: Path, connect: Connect, user: User, model_server: FakeOpenAI
) -> None:
    model_server.queue(
        sse(
            tool_calls_stream(
                [("convert_units", json.dumps({"value": 1, "unit": "kg", "to": "m"}))]
            )
        )
    )
    model_server.queue(sse(text_stream("Those do not convert.")))
    conversation = await new_conversation(user)
    page = await opened(connect, conversation, user)

    await send_and_wait(page, "1 kg in metres?")
    await runner.wait_for_local_runs()

    [call] = await calls_of(await assistant_message(conversation))
    assert call.status == "failed"
    assert "cannot convert mass (kg) to length (m)" in call.output
    assert "cannot convert mass" in model_server.requests[1]["messages"][-1]["content"]


async def test_a_tool_that_asks_first_runs_only_once_approved(
    deployed: Path, connect: Connect, user: User, model_server: FakeOpenAI
) -> None:
    model_server.queue(sse(tool_calls_stream([("save_note", json.dumps({"text": "Buy milk"}))])))
    model_server.queue(sse(text_stream("Saved.")))
    conversation = await new_conversation(user)
    page = await opened(connect, conversation, user)

    await page.send_json_to({"message": "Note: buy milk"})
    frames = await receive_until(page, lambda frame: 'data-status="awaiting_approval"' in frame)
    assert not await asyncio.to_thread(deployed.exists)
    [tool_call] = set(TOOL_CALL.findall(frames[-1]))
    await page.send_json_to({"action": "approve", "tool_call": tool_call})
    await receive_until(page, finished)
    await runner.wait_for_local_runs()

    [call] = await calls_of(await assistant_message(conversation))
    assert (call.status, call.decision, call.decided_by) == ("succeeded", "approved", "alice")
    assert (await asyncio.to_thread(deployed.read_text)).endswith(" Buy milk\n")
    assert (await assistant_message(conversation)).status == Message.Status.COMPLETE


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        ("examples.deployer_tools.no_such_tool", "cannot be imported"),
        ("examples.deployer_tools.UNITS", "is a dict, not a function or a Tool"),
        ("conversations.streaming.builtin_tools.CALCULATOR", "is named 'calculator', as another"),
    ],
)
def test_an_entry_that_is_no_tool_fails_the_checks(settings: Any, entry: str, says: str) -> None:
    settings.CHAT_TOOLS = [entry]
    with pytest.raises(SystemCheckError, match=re.escape(says)):
        call_command("check")


def test_the_same_tool_twice_fails_the_checks(settings: Any) -> None:
    settings.CHAT_TOOLS = [TOOLS[0], TOOLS[0]]
    with pytest.raises(SystemCheckError, match="is named 'convert_units', as another"):
        call_command("check")


def test_serve_does_not_start_with_a_bad_entry(user: User) -> None:
    result = subprocess.run(
        [sys.executable, "manage.py", "serve", "--port", "0"],
        cwd=ROOT,
        env={**os.environ, "SECRET_KEY": "test", "CHAT_TOOLS": "examples.deployer_tools.nope"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "CHAT_TOOLS: 'examples.deployer_tools.nope' cannot be imported" in result.stderr


def test_the_tools_are_the_built_ins_without_the_setting(settings: Any) -> None:
    settings.CHAT_TOOLS = []
    names = toolbox_for(user_id=1, conversation_id=1).names
    assert names == (
        "calculator",
        "current_time",
        "search_conversations",
        "rename_conversation",
        "delete_conversation",
    )
