"""Tools the model may call: JSON Schema from type hints, validation, and safe execution."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import json
import re
import types
import typing
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_ERROR_DISPLAY_LIMIT = 200

_SIMPLE_TYPES: dict[Any, str] = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    type(None): "null",
}


@functools.lru_cache(maxsize=256)
def _check_schema(schema: str) -> None:
    """Raise SchemaError unless `schema` (JSON text) is a valid JSON Schema.

    Remembered: the same schema comes back for every per-user tool, and checking one against
    the metaschema takes milliseconds.
    """
    Draft202012Validator.check_schema(json.loads(schema))


@dataclass(frozen=True)
class Tool:
    """A callable the model may use, described by a JSON Schema for its keyword arguments."""

    name: str
    description: str
    parameters: dict[str, Any]
    function: Callable[..., Any]
    timeout: float = 10.0
    # Asks the user before it runs: the loop waits for a decision (see streaming.loop.Approver).
    needs_approval: bool = False
    # The MCP server the tool comes from (its name), or "" for a tool of this process.
    server: str = ""
    # The timeout counts from the call's last progress report, not from its start (it says so).
    idle_timeout: bool = False

    def __post_init__(self) -> None:
        if not _NAME_PATTERN.match(self.name):
            raise ValueError(
                f"tool name {self.name!r} must be 1-64 letters, digits, underscores or hyphens"
            )
        if self.parameters.get("type") != "object":
            raise ValueError(f"parameters of tool {self.name!r} must be a JSON Schema object")
        _check_schema(json.dumps(self.parameters, sort_keys=True))
        if not self.timeout > 0:
            raise ValueError(f"timeout of tool {self.name!r} must be positive")

    @classmethod
    def from_function(
        cls,
        function: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        timeout: float = 10.0,
        needs_approval: bool = False,
    ) -> Tool:
        """Build a tool whose schema comes from the function's type hints.

        `Annotated[str, "text"]` gives a parameter its description; parameters with a
        default are optional. The description defaults to the docstring's first paragraph.
        """
        return cls(
            name=name if name is not None else function.__name__,
            description=description if description is not None else _first_paragraph(function),
            parameters=_parameters_schema(function),
            function=function,
            timeout=timeout,
            needs_approval=needs_approval,
        )


@dataclass(frozen=True)
class ToolResult:
    """What a tool call produced: `output` goes back to the model, `error` is for display,
    `structured` is the JSON a tool returned beside its text (an MCP tool's structuredContent).

    A tool's function may return one itself: a failure it reports rather than raises.
    """

    ok: bool
    output: str
    error: str = ""
    structured: Any = None
    # Images to show on the card: each {"mime_type": ..., "data": base64}, already checked.
    images: tuple[dict[str, Any], ...] = ()

    @classmethod
    def failure(cls, reason: str) -> ToolResult:
        short = reason
        if len(short) > _ERROR_DISPLAY_LIMIT:
            short = short[: _ERROR_DISPLAY_LIMIT - 1] + "…"
        return cls(ok=False, output=f"Error: {reason}", error=short)


# How a running tool tells how far it has got: progress, total (None if unknown), message.
ProgressReporter = Callable[[float, float | None, str], Awaitable[None]]

_progress_reporter: contextvars.ContextVar[ProgressReporter | None] = contextvars.ContextVar(
    "progress_reporter", default=None
)


def progress_reporter() -> ProgressReporter | None:
    """The running call's progress reporter, for a tool that reports from another task (an MCP
    session's): take it when the call starts. None outside a call."""
    return _progress_reporter.get()


async def report_progress(progress: float, total: float | None = None, message: str = "") -> None:
    """Called by a running async tool: shows how far it has got on its card, and restarts its
    timeout. Does nothing outside a tool call."""
    reporter = _progress_reporter.get()
    if reporter is not None:
        await reporter(progress, total, message)


class Toolbox:
    """The tools offered to the model in one conversation, looked up by name.

    An output longer than `output_limit` characters is cut, with a note saying so, before the
    model or the card sees it.
    """

    def __init__(self, tools: Iterable[Tool] = (), *, output_limit: int = 100_000) -> None:
        self.output_limit = output_limit
        self._tools: dict[str, Tool] = {}
        self._validators: dict[str, Draft202012Validator] = {}
        for tool in tools:
            if tool.name in self._tools:
                raise ValueError(f"duplicate tool name {tool.name!r}")
            self._tools[tool.name] = tool
            self._validators[tool.name] = Draft202012Validator(tool.parameters)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._tools)

    def __len__(self) -> int:
        return len(self._tools)

    def __iter__(self) -> Iterator[Tool]:
        return iter(self._tools.values())

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def chat_completions_schema(self) -> list[dict[str, Any]]:
        """The `tools` parameter of the OpenAI Chat Completions API."""
        return [
            {
                "type": "function",
                "function": {
                    "name": tool.name,
                    "description": tool.description,
                    "parameters": tool.parameters,
                },
            }
            for tool in self._tools.values()
        ]

    def needs_approval(self, name: str, arguments: str) -> bool:
        """Whether the call must wait for the user's decision: a tool that asks first, called
        with valid arguments (a call that cannot run fails without asking)."""
        tool = self._tools.get(name)
        return (
            tool is not None
            and tool.needs_approval
            and isinstance(self._check(name, arguments), dict)
        )

    def _check(self, name: str, arguments: str) -> dict[str, Any] | ToolResult:
        """The call's parsed arguments, or the failure that ends it before it runs."""
        tool = self._tools.get(name)
        if tool is None:
            available = ", ".join(self._tools) or "none"
            return ToolResult.failure(f"unknown tool {name!r}; available tools: {available}")

        try:
            parsed = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError as exc:
            return ToolResult.failure(f"arguments are not valid JSON: {exc}")
        if not isinstance(parsed, dict):
            return ToolResult.failure(
                f"arguments are not valid JSON: expected an object, got {_json_type(parsed)}"
            )

        problem = best_match(self._validators[name].iter_errors(parsed))
        if problem is not None:
            where = "/".join(str(part) for part in problem.absolute_path)
            detail = f"{where}: {problem.message}" if where else problem.message
            return ToolResult.failure(f"invalid arguments: {detail}")
        return parsed

    async def run(
        self, name: str, arguments: str, progress: ProgressReporter | None = None
    ) -> ToolResult:
        """Validate and run one call. Every failure becomes an error result; only cancellation
        propagates, so a Stop can cancel running tools (an MCP call's cancellation then reaches
        its server). `progress` hears the tool's reports (`report_progress`); each one restarts
        the timeout."""
        parsed = self._check(name, arguments)
        if isinstance(parsed, ToolResult):
            return parsed
        tool = self._tools[name]
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(tool.timeout) as deadline:

                async def reported(done: float, total: float | None, message: str) -> None:
                    if not deadline.expired():
                        deadline.reschedule(loop.time() + tool.timeout)
                    if progress is not None:
                        await progress(done, total, message)

                token = _progress_reporter.set(reported)
                try:
                    if _is_async(tool.function):
                        value = await tool.function(**parsed)
                    else:
                        # A thread cannot be interrupted: on timeout it finishes in the background.
                        value = await asyncio.to_thread(tool.function, **parsed)
                finally:
                    _progress_reporter.reset(token)
        except TimeoutError as exc:
            if deadline.expired():
                without = " without progress" if tool.idle_timeout else ""
                return ToolResult.failure(f"the tool timed out after {tool.timeout:g} s{without}")
            return ToolResult.failure(_describe(exc))
        except Exception as exc:
            return ToolResult.failure(_describe(exc))
        if isinstance(value, ToolResult):
            return self._limited(value)
        output = value if isinstance(value, str) else json.dumps(value, default=str)
        return self._limited(ToolResult(ok=True, output=output))

    def _limited(self, result: ToolResult) -> ToolResult:
        """The result with its output cut to `output_limit` characters, saying so; its
        structured JSON is dropped when that is longer (the text says what it held)."""
        if result.structured is not None and (
            len(json.dumps(result.structured, default=str)) > self.output_limit
        ):
            result = replace(result, structured=None)
        size = len(result.output)
        if size <= self.output_limit:
            return result
        note = (
            f"\n[The output was cut: {size:,} characters, of which the first "
            f"{self.output_limit:,} are shown.]"
        )
        return replace(result, output=result.output[: self.output_limit] + note)


def _is_async(function: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(function) or inspect.iscoroutinefunction(
        type(function).__call__
    )


def _describe(exc: BaseException) -> str:
    message = str(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _json_type(value: object) -> str:
    match value:
        case list():
            return "an array"
        case str():
            return "a string"
        case bool():
            return "a boolean"
        case int() | float():
            return "a number"
        case None:
            return "null"
    return type(value).__name__


def _first_paragraph(function: Callable[..., Any]) -> str:
    doc = inspect.getdoc(function) or ""
    return " ".join(doc.split("\n\n", 1)[0].split())


def _parameters_schema(function: Callable[..., Any]) -> dict[str, Any]:
    try:
        hints = typing.get_type_hints(function, include_extras=True)
    except Exception as exc:
        raise TypeError(f"cannot resolve the type hints of {function!r}: {exc}") from exc

    properties: dict[str, Any] = {}
    required: list[str] = []
    for parameter in inspect.signature(function).parameters.values():
        if parameter.kind not in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY):
            raise TypeError(
                f"parameter {parameter.name!r} of {function!r} cannot be passed by keyword"
            )
        if parameter.name not in hints:
            raise TypeError(f"parameter {parameter.name!r} of {function!r} needs a type hint")
        schema = _schema_for(hints[parameter.name])
        if parameter.default is parameter.empty:
            required.append(parameter.name)
        elif _is_json_value(parameter.default):
            schema["default"] = parameter.default
        properties[parameter.name] = schema

    return {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


def _schema_for(annotation: Any) -> dict[str, Any]:
    if annotation is Any:
        return {}
    if annotation in _SIMPLE_TYPES:
        return {"type": _SIMPLE_TYPES[annotation]}

    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        schema = _schema_for(args[0])
        descriptions = [item for item in args[1:] if isinstance(item, str)]
        if descriptions:
            schema["description"] = descriptions[0]
        return schema
    if origin is typing.Literal:
        schema = {"enum": list(args)}
        kinds = {_SIMPLE_TYPES.get(type(value)) for value in args}
        if len(kinds) == 1 and None not in kinds:
            schema["type"] = kinds.pop()
        return schema
    if origin is list or annotation is list:
        return {"type": "array", "items": _schema_for(args[0])} if args else {"type": "array"}
    if origin is dict or annotation is dict:
        if len(args) == 2:
            return {"type": "object", "additionalProperties": _schema_for(args[1])}
        return {"type": "object"}
    if origin in (typing.Union, types.UnionType):
        return _union_schema(args)
    raise TypeError(f"cannot derive a JSON Schema from the type hint {annotation!r}")


def _union_schema(args: tuple[Any, ...]) -> dict[str, Any]:
    members = [_schema_for(arg) for arg in args if arg is not type(None)]
    nullable = len(members) < len(args)
    if len(members) == 1 and nullable:
        schema = members[0]
        if isinstance(schema.get("type"), str):
            schema["type"] = [schema["type"], "null"]
            if "enum" in schema:
                schema["enum"] = [*schema["enum"], None]
            return schema
        if "enum" in schema and "type" not in schema:
            schema["enum"] = [*schema["enum"], None]
            return schema
    descriptions = [member.pop("description") for member in members if "description" in member]
    if nullable:
        members.append({"type": "null"})
    schema = {"anyOf": members}
    if descriptions:
        schema["description"] = descriptions[0]
    return schema


def _is_json_value(value: object) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True
