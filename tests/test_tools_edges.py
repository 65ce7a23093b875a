"""Tools at their edges: what a tool's result, error or schema looks like in the odd cases."""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

import pytest

from conversations.streaming.builtin_tools import CALCULATOR, calculator, format_time
from conversations.streaming.tools import Tool, Toolbox, ToolResult

OBJECT: dict[str, Any] = {"type": "object", "properties": {}}


def noop() -> None:
    pass


async def test_a_tool_returning_a_datetime_or_decimal_gives_readable_text() -> None:
    def invoice() -> dict[str, Any]:
        return {"due": datetime(2026, 1, 2, 3, 4, 5), "total": Decimal("12.50")}

    def moment() -> datetime:
        return datetime(2026, 1, 2, 3, 4, 5)

    toolbox = Toolbox([Tool.from_function(invoice), Tool.from_function(moment)])

    assert await toolbox.run("invoice", "{}") == ToolResult(
        ok=True, output='{"due": "2026-01-02 03:04:05", "total": "12.50"}'
    )
    assert await toolbox.run("moment", "{}") == ToolResult(ok=True, output='"2026-01-02 03:04:05"')


async def test_a_long_error_is_shortened_for_display_but_sent_whole_to_the_model() -> None:
    reason = "x" * 300

    def fails() -> str:
        raise ValueError(reason)

    result = await Toolbox([Tool.from_function(fails)]).run("fails", "{}")

    assert result.output == f"Error: ValueError: {reason}"
    assert result.error == f"ValueError: {reason}"[:199] + "…"
    assert len(result.error) == 200


def test_an_error_of_exactly_the_display_limit_is_kept_whole() -> None:
    reason = "y" * 200

    assert ToolResult.failure(reason) == ToolResult(
        ok=False, output=f"Error: {reason}", error=reason
    )
    assert ToolResult.failure(reason + "z").error == "y" * 199 + "…"


async def test_an_exception_without_a_message_is_named() -> None:
    def fails() -> str:
        raise LookupError

    result = await Toolbox([Tool.from_function(fails)]).run("fails", "{}")

    assert result == ToolResult(ok=False, output="Error: LookupError", error="LookupError")


@pytest.mark.parametrize("timeout", [0, -1, float("nan")])
def test_a_timeout_that_is_not_positive_is_refused(timeout: float) -> None:
    with pytest.raises(ValueError, match="timeout of tool 'noop' must be positive"):
        Tool("noop", "Nothing.", OBJECT, noop, timeout=timeout)


def test_a_tool_has_ten_seconds_unless_told_otherwise() -> None:
    assert Tool.from_function(noop).timeout == 10.0
    assert Tool("noop", "", OBJECT, noop).timeout == 10.0


def test_a_tiny_positive_timeout_is_accepted() -> None:
    assert Tool("noop", "Nothing.", OBJECT, noop, timeout=0.001).timeout == 0.001


@pytest.mark.parametrize("name", ["a" * 64, "A-b_9", "x"])
def test_names_of_letters_digits_underscores_and_hyphens_are_accepted(name: str) -> None:
    assert Tool(name, "", OBJECT, noop).name == name


@pytest.mark.parametrize("name", ["", "a" * 65, "has space", "dotted.name", "näme"])
def test_other_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="must be 1-64 letters, digits, underscores or hyphens"):
        Tool(name, "", OBJECT, noop)


def test_parameters_must_be_a_valid_object_schema() -> None:
    with pytest.raises(ValueError, match="parameters of tool 'noop' must be a JSON Schema object"):
        Tool("noop", "", {"type": "array"}, noop)
    with pytest.raises(Exception, match="is not valid under any of the given schemas"):
        Tool("noop", "", {"type": "object", "properties": {"a": {"type": "nonsense"}}}, noop)


@pytest.mark.parametrize(
    ("arguments", "got"),
    [('"text"', "a string"), ("true", "a boolean"), ("3", "a number"), ("1.5", "a number")],
)
async def test_arguments_that_are_not_an_object_say_what_they_are(arguments: str, got: str) -> None:
    result = await Toolbox([Tool.from_function(noop)]).run("noop", arguments)

    assert result.output == f"Error: arguments are not valid JSON: expected an object, got {got}"


async def test_null_arguments_are_refused_as_null() -> None:
    result = await Toolbox([Tool.from_function(noop)]).run("noop", "null")

    assert result.output == "Error: arguments are not valid JSON: expected an object, got null"


async def test_an_unknown_tool_in_an_empty_toolbox_lists_none() -> None:
    result = await Toolbox().run("anything", "{}")

    assert result.output == "Error: unknown tool 'anything'; available tools: none"


async def test_an_invalid_nested_argument_says_where() -> None:
    def tag(labels: list[str]) -> str:
        return ",".join(labels)

    result = await Toolbox([Tool.from_function(tag)]).run("tag", '{"labels": ["ok", 7]}')

    assert result.output == "Error: invalid arguments: labels/1: 7 is not of type 'string'"


def test_a_toolbox_counts_and_lists_its_tools() -> None:
    first, second = Tool("first", "", OBJECT, noop), Tool("second", "", OBJECT, noop)
    toolbox = Toolbox([first, second])

    assert len(toolbox) == 2
    assert list(toolbox) == [first, second]
    assert len(Toolbox()) == 0


def test_schemas_for_mappings_lists_any_and_optional_choices() -> None:
    def shapes(
        counts: dict[str, int],
        extra: dict,  # type: ignore[type-arg]
        items: list,  # type: ignore[type-arg]
        anything: Any,
        mode: Literal["a", "b"] | None,
        mixed: Literal[1, "one"],
        number_or_text: Annotated[int, "a count"] | Annotated[str, "a word"],
        maybe_note: Annotated[str | None, "a note"] = None,
        when: datetime | None = None,  # type: ignore[assignment]
    ) -> None:
        pass

    shapes.__annotations__["when"] = "int | None"

    properties = Tool.from_function(shapes).parameters["properties"]

    assert properties["counts"] == {"type": "object", "additionalProperties": {"type": "integer"}}
    assert properties["extra"] == {"type": "object"}
    assert properties["items"] == {"type": "array"}
    assert properties["anything"] == {}
    assert properties["mode"] == {"type": ["string", "null"], "enum": ["a", "b", None]}
    assert properties["mixed"] == {"enum": [1, "one"]}
    assert properties["number_or_text"] == {
        "anyOf": [{"type": "integer"}, {"type": "string"}],
        "description": "a count",
    }
    assert properties["maybe_note"] == {
        "type": ["string", "null"],
        "description": "a note",
        "default": None,
    }
    assert properties["when"] == {"type": ["integer", "null"], "default": None}
    assert Tool.from_function(shapes).parameters["required"] == [
        "counts",
        "extra",
        "items",
        "anything",
        "mode",
        "mixed",
        "number_or_text",
    ]


def test_a_nullable_union_of_several_types_offers_null_as_a_choice() -> None:
    def pick(
        value: int | str | None,
        choice: Literal[1, "one"] | None,
        anything: Any | None,
    ) -> None:
        pass

    properties = Tool.from_function(pick).parameters["properties"]

    assert properties["anything"] == {"anyOf": [{}, {"type": "null"}]}

    assert properties["value"] == {
        "anyOf": [{"type": "integer"}, {"type": "string"}, {"type": "null"}]
    }
    assert properties["choice"] == {"enum": [1, "one", None]}


def test_a_default_that_is_not_json_is_left_out_of_the_schema() -> None:
    def since(day: str = datetime(2026, 1, 1)) -> None:  # type: ignore[assignment]
        pass

    assert Tool.from_function(since).parameters["properties"]["day"] == {"type": "string"}
    assert Tool.from_function(since).parameters["required"] == []


def test_parameters_that_cannot_be_passed_by_keyword_are_refused() -> None:
    def positional(value: int, /) -> None:
        pass

    def star(*values: int) -> None:
        pass

    for function in (positional, star):
        with pytest.raises(TypeError, match="cannot be passed by keyword"):
            Tool.from_function(function)


def test_unresolvable_type_hints_are_refused() -> None:
    def broken(value: NoSuchType) -> None:  # type: ignore[name-defined]  # noqa: F821
        pass

    with pytest.raises(TypeError, match="cannot resolve the type hints"):
        Tool.from_function(broken)


def test_the_description_is_the_docstrings_first_paragraph_on_one_line() -> None:
    def documented() -> None:
        """Look things
        up, quickly.

        Not this part.

        Nor this one.
        """

    assert Tool.from_function(documented).description == "Look things up, quickly."
    assert Tool.from_function(noop).description == ""


@pytest.mark.parametrize(
    ("expression", "reason"),
    [("[1, 2]", "List is not allowed"), ("1 < 2", "Compare is not allowed")],
)
async def test_the_calculator_names_what_it_does_not_understand(
    expression: str, reason: str
) -> None:
    result = await Toolbox([CALCULATOR]).run("calculator", json.dumps({"expression": expression}))

    assert result.output == f"Error: ValueError: unsupported expression: {reason}"


def test_a_moment_without_a_time_zone_is_shown_as_utc() -> None:
    shown = format_time(datetime(2026, 1, 2, 3, 4, 5))

    assert "(UTC+00:00), Friday; ISO 8601: 2026-01-02T03:04:05" in shown


@pytest.mark.parametrize(
    ("expression", "output"),
    [
        ("9" * 1000, "9" * 1000),
        ("+5", "5"),
        ("1 ** 10000", "1"),
        ("10.0 ** 20", "1e+20"),
    ],
)
def test_the_calculator_at_its_limits(expression: str, output: str) -> None:
    assert calculator(expression) == output


def test_the_largest_integer_allowed_is_shown_whole() -> None:
    assert calculator("2 ** 9999") == str(2**9999)


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("1" * 1001, "expression is longer than 1000 characters"),
        ("-" * 998 + "1", "expression is too deeply nested"),
        ("True", "unsupported expression: True is not a real number"),
        ("2j", "unsupported expression: 2j is not a real number"),
        ("(2 ** 6000) * (2 ** 6000)", "result is too large"),
        ("(2 ** 9999) ** 9999", "result is too large"),
        ("1e308 * 10", "result is too large"),
        ("10 ** 400 / 3", "result is too large"),
        ("(-8) ** 0.5", "result is not a real number"),
        ("1 ** 10001", "exponent 10001 is too large (the limit is 10000)"),
    ],
)
def test_the_calculator_says_exactly_why_it_refuses(expression: str, reason: str) -> None:
    with pytest.raises(ValueError) as refused:
        calculator(expression)

    assert str(refused.value) == reason
