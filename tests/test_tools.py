"""Tests for the tool registry and the built-in tools."""

from __future__ import annotations

import asyncio
import threading
from datetime import datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

import pytest

from conversations.streaming.builtin_tools import CALCULATOR, CURRENT_TIME, format_time
from conversations.streaming.tools import Tool, Toolbox, ToolResult

EMPTY_OBJECT: dict[str, Any] = {
    "type": "object",
    "properties": {},
    "required": [],
    "additionalProperties": False,
}


def search(
    query: Annotated[str, "What to look for."],
    limit: int = 5,
    scale: float | None = None,
    exact: bool = False,
    tags: list[str] | None = None,
    order: Literal["newest", "oldest"] = "newest",
) -> list[str]:
    """Search the notes.

    This second paragraph is not part of the description.
    """
    return [query]


def builtin_toolbox() -> Toolbox:
    return Toolbox([CALCULATOR, CURRENT_TIME])


def test_schema_is_derived_from_type_hints() -> None:
    tool = Tool.from_function(search)

    assert tool.name == "search"
    assert tool.description == "Search the notes."
    assert tool.parameters == {
        "type": "object",
        "properties": {
            "query": {"type": "string", "description": "What to look for."},
            "limit": {"type": "integer", "default": 5},
            "scale": {"type": ["number", "null"], "default": None},
            "exact": {"type": "boolean", "default": False},
            "tags": {"type": ["array", "null"], "items": {"type": "string"}, "default": None},
            "order": {"type": "string", "enum": ["newest", "oldest"], "default": "newest"},
        },
        "required": ["query"],
        "additionalProperties": False,
    }


def test_from_function_overrides_name_description_and_timeout() -> None:
    tool = Tool.from_function(search, name="find_notes", description="Find notes.", timeout=3)

    assert (tool.name, tool.description, tool.timeout) == ("find_notes", "Find notes.", 3)


def test_from_function_refuses_what_it_cannot_describe() -> None:
    def untyped(value):  # type: ignore[no-untyped-def]
        return value

    def odd(value: set[int]) -> None:
        pass

    with pytest.raises(TypeError, match="needs a type hint"):
        Tool.from_function(untyped)
    with pytest.raises(TypeError, match="cannot derive a JSON Schema"):
        Tool.from_function(odd)
    with pytest.raises(ValueError, match="tool name"):
        Tool.from_function(lambda: None)


def test_toolbox_refuses_duplicate_names() -> None:
    with pytest.raises(ValueError, match="duplicate tool name 'calculator'"):
        Toolbox([CALCULATOR, CALCULATOR])


def test_chat_completions_schema() -> None:
    toolbox = builtin_toolbox()

    schema = toolbox.chat_completions_schema()

    assert toolbox.names == ("calculator", "current_time")
    assert toolbox.get("calculator") is CALCULATOR
    assert toolbox.get("nope") is None
    assert [entry["type"] for entry in schema] == ["function", "function"]
    calculator = schema[0]["function"]
    assert set(calculator) == {"name", "description", "parameters"}
    assert calculator["name"] == "calculator"
    assert calculator["description"].startswith("Evaluate an arithmetic expression")
    assert calculator["parameters"]["required"] == ["expression"]
    assert calculator["parameters"]["additionalProperties"] is False
    assert "IANA" in schema[1]["function"]["parameters"]["properties"]["timezone"]["description"]


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("17*23", "391"),
        ("2 + 3 * 4", "14"),
        ("(2 + 3) * 4", "20"),
        ("-2 ** 2", "-4"),
        ("2 ** 10", "1024"),
        ("10 // 3", "3"),
        ("10 % 3", "1"),
        ("7 / 2", "3.5"),
        ("6 / 3", "2"),
        ("0.1 + 0.2", "0.3"),
        ("1.5 * -(4)", "-6"),
        ("2 ** -2", "0.25"),
    ],
)
async def test_calculator(expression: str, expected: str) -> None:
    result = await builtin_toolbox().run("calculator", f'{{"expression": "{expression}"}}')

    assert result == ToolResult(ok=True, output=expected)


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("__import__('os')", "unsupported expression: function calls are not allowed"),
        ("x + 1", "unsupported expression: names are not allowed ('x')"),
        ("(1).real", "unsupported expression: attribute access is not allowed"),
        ("'a' * 3", "unsupported expression: 'a' is not a number"),
        ("2 ^ 3", "unsupported expression: '^' is not a power; use '**'"),
        ("2 ** 100000", "exponent 100000 is too large"),
        ("(2 ** 5000) ** 3", "result is too large"),
        ("1.5 ** 5000", "result is too large"),
        ("1 / 0", "division by zero"),
        ("5 % 0", "division by zero"),
        ("0 ** -1", "division by zero"),
        ("2 +", "invalid expression"),
    ],
)
async def test_calculator_refuses(expression: str, reason: str) -> None:
    result = await builtin_toolbox().run("calculator", f'{{"expression": "{expression}"}}')

    assert not result.ok
    assert result.output.startswith(f"Error: ValueError: {reason}")
    assert result.error.startswith(f"ValueError: {reason}")


async def test_current_time_in_tokyo() -> None:
    result = await builtin_toolbox().run("current_time", '{"timezone": "Asia/Tokyo"}')

    assert result.ok
    assert "JST (UTC+09:00)" in result.output
    assert "+09:00" in result.output


async def test_current_time_unknown_zone() -> None:
    result = await builtin_toolbox().run("current_time", '{"timezone": "Mars/Olympus"}')

    assert result == ToolResult(
        ok=False,
        output="Error: ValueError: unknown time zone 'Mars/Olympus'; "
        "use an IANA name such as 'Asia/Tokyo'",
        error="ValueError: unknown time zone 'Mars/Olympus'; use an IANA name such as 'Asia/Tokyo'",
    )


def test_format_time() -> None:
    moment = datetime(2026, 11, 24, 1, 31, 5, tzinfo=ZoneInfo("Asia/Tokyo"))

    assert format_time(moment) == (
        "2026-11-24 01:31:05 JST (UTC+09:00), Tuesday; ISO 8601: 2026-11-24T01:31:05+09:00"
    )


@pytest.mark.parametrize(
    ("name", "arguments", "output"),
    [
        ("calculator", "{}", "Error: invalid arguments: 'expression' is a required property"),
        ("calculator", "", "Error: invalid arguments: 'expression' is a required property"),
        (
            "calculator",
            '{"expression": 5}',
            "Error: invalid arguments: expression: 5 is not of type 'string'",
        ),
        (
            "calculator",
            '{"expression": "1", "precision": 2}',
            "Error: invalid arguments: Additional properties are not allowed "
            "('precision' was unexpected)",
        ),
        (
            "calculator",
            '{"expression": "1',
            "Error: arguments are not valid JSON: "
            "Unterminated string starting at: line 1 column 16 (char 15)",
        ),
        (
            "calculator",
            '["1 + 1"]',
            "Error: arguments are not valid JSON: expected an object, got an array",
        ),
        (
            "weather",
            "{}",
            "Error: unknown tool 'weather'; available tools: calculator, current_time",
        ),
    ],
)
async def test_bad_calls_become_error_results(name: str, arguments: str, output: str) -> None:
    result = await builtin_toolbox().run(name, arguments)

    assert result == ToolResult(ok=False, output=output, error=output.removeprefix("Error: "))


async def test_return_values_become_text() -> None:
    def as_text() -> str:
        return "plain text"

    async def as_json() -> dict[str, Any]:
        return {"answer": 42, "units": ["m"]}

    toolbox = Toolbox([Tool.from_function(as_text), Tool.from_function(as_json)])

    assert await toolbox.run("as_text", "") == ToolResult(ok=True, output="plain text")
    assert await toolbox.run("as_json", " ") == ToolResult(
        ok=True, output='{"answer": 42, "units": ["m"]}'
    )


async def test_arguments_are_passed_as_keywords() -> None:
    tool = Tool.from_function(search)

    result = await Toolbox([tool]).run("search", '{"query": "cats", "order": "oldest"}')

    assert result == ToolResult(ok=True, output='["cats"]')


async def test_async_callable_object() -> None:
    class Echo:
        async def __call__(self, text: str) -> str:
            return text

    tool = Tool(
        name="echo",
        description="Echo the text.",
        parameters={
            "type": "object",
            "properties": {"text": {"type": "string"}},
            "required": ["text"],
        },
        function=Echo(),
    )

    assert await Toolbox([tool]).run("echo", '{"text": "hi"}') == ToolResult(ok=True, output="hi")


async def test_slow_sync_tool_times_out() -> None:
    release = threading.Event()

    def slow() -> str:
        release.wait(5)
        return "late"

    toolbox = Toolbox([Tool.from_function(slow, timeout=0.2)])
    try:
        result = await toolbox.run("slow", "{}")
    finally:
        release.set()

    assert result == ToolResult(
        ok=False,
        output="Error: the tool timed out after 0.2 s",
        error="the tool timed out after 0.2 s",
    )


async def test_slow_async_tool_times_out() -> None:
    async def slow() -> str:
        await asyncio.sleep(10)
        return "late"

    result = await Toolbox([Tool.from_function(slow, timeout=0.2)]).run("slow", "{}")

    assert result.output == "Error: the tool timed out after 0.2 s"
    assert not result.ok


async def test_a_tools_own_timeout_error_is_not_mistaken_for_ours() -> None:
    async def fetch() -> str:
        raise TimeoutError("upstream did not answer")

    result = await Toolbox([Tool.from_function(fetch)]).run("fetch", "{}")

    assert result.output == "Error: TimeoutError: upstream did not answer"


@pytest.mark.parametrize("asynchronous", [False, True])
async def test_exception_becomes_error_result(asynchronous: bool) -> None:
    def boom_sync() -> str:
        raise RuntimeError("the disk is on fire")

    async def boom_async() -> str:
        raise RuntimeError("the disk is on fire")

    tool = Tool.from_function(boom_async if asynchronous else boom_sync, name="boom")

    result = await Toolbox([tool]).run("boom", "{}")

    assert result == ToolResult(
        ok=False,
        output="Error: RuntimeError: the disk is on fire",
        error="RuntimeError: the disk is on fire",
    )


async def test_cancelling_a_run_cancels_the_tool() -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def slow() -> str:
        started.set()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "late"

    task = asyncio.create_task(Toolbox([Tool.from_function(slow)]).run("slow", "{}"))
    async with asyncio.timeout(5):
        await started.wait()
    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await task
    assert cancelled.is_set()


async def test_async_tools_run_concurrently() -> None:
    ping_seen = asyncio.Event()
    pong_seen = asyncio.Event()

    # Each tool waits for the other: run one after the other, the first would time out.
    async def ping() -> str:
        ping_seen.set()
        await pong_seen.wait()
        return "ping"

    async def pong() -> str:
        pong_seen.set()
        await ping_seen.wait()
        return "pong"

    toolbox = Toolbox([Tool.from_function(ping, timeout=5), Tool.from_function(pong, timeout=5)])

    async with asyncio.timeout(10):
        results = await asyncio.gather(toolbox.run("ping", "{}"), toolbox.run("pong", "{}"))

    assert results == [ToolResult(ok=True, output="ping"), ToolResult(ok=True, output="pong")]


async def test_sync_tools_run_concurrently() -> None:
    barrier = threading.Barrier(2, timeout=5)

    def left() -> str:
        barrier.wait()
        return "left"

    def right() -> str:
        barrier.wait()
        return "right"

    toolbox = Toolbox([Tool.from_function(left), Tool.from_function(right)])

    results = await asyncio.gather(toolbox.run("left", "{}"), toolbox.run("right", "{}"))

    assert results == [ToolResult(ok=True, output="left"), ToolResult(ok=True, output="right")]
