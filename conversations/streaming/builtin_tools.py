"""Offline tools every chat can use: a safe calculator and the current time in a time zone."""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .tools import Tool

Number = int | float

_MAX_EXPRESSION_LENGTH = 1000
_MAX_EXPONENT = 10_000
# Keeps every integer well under Python's 4300-digit limit for str(int).
_MAX_INT_BITS = 10_000

_BINARY_OPERATORS: dict[type[ast.operator], Callable[[Number, Number], Number]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
}

_UNSUPPORTED_HINTS: dict[type[ast.AST], str] = {
    ast.Name: "names are not allowed",
    ast.Call: "function calls are not allowed",
    ast.Attribute: "attribute access is not allowed",
    ast.Subscript: "subscripts are not allowed",
    ast.BitXor: "'^' is not a power; use '**'",
}


def calculator(
    expression: Annotated[
        str,
        "An arithmetic expression using numbers, + - * / // % ** and parentheses, "
        "e.g. '(17 * 23) / 4' or '2 ** 10'.",
    ],
) -> str:
    """Evaluate an arithmetic expression and return the result.

    Use it for any arithmetic instead of computing in your head. Only numbers,
    + - * / // % ** (power), unary minus and parentheses are understood.
    """
    if len(expression) > _MAX_EXPRESSION_LENGTH:
        raise ValueError(f"expression is longer than {_MAX_EXPRESSION_LENGTH} characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"invalid expression: {exc.msg}") from None
    try:
        result = _evaluate(tree.body)
    except RecursionError:
        raise ValueError("expression is too deeply nested") from None
    return _format_number(result)


def _evaluate(node: ast.expr) -> Number:
    match node:
        case ast.Constant(value=bool() | complex()):
            raise ValueError(f"unsupported expression: {node.value!r} is not a real number")
        case ast.Constant(value=int() | float() as value):
            return _checked(value)
        case ast.UnaryOp(op=ast.UAdd(), operand=operand):
            return _evaluate(operand)
        case ast.UnaryOp(op=ast.USub(), operand=operand):
            return -_evaluate(operand)
        case ast.BinOp(left=left, op=ast.Pow(), right=right):
            return _power(_evaluate(left), _evaluate(right))
        case ast.BinOp(left=left, op=op, right=right) if type(op) in _BINARY_OPERATORS:
            a, b = _evaluate(left), _evaluate(right)
            try:
                return _checked(_BINARY_OPERATORS[type(op)](a, b))
            except ZeroDivisionError:
                raise ValueError("division by zero") from None
            except OverflowError:
                raise ValueError("result is too large") from None
        case ast.BinOp(op=op):
            raise ValueError(f"unsupported expression: {_unsupported(op)}")
    raise ValueError(f"unsupported expression: {_unsupported(node)}")


def _power(base: Number, exponent: Number) -> Number:
    if abs(exponent) > _MAX_EXPONENT:
        raise ValueError(f"exponent {exponent} is too large (the limit is {_MAX_EXPONENT})")
    if (
        isinstance(base, int)
        and isinstance(exponent, int)
        and exponent > 0
        and (abs(base).bit_length() - 1) * exponent > _MAX_INT_BITS
    ):
        raise ValueError("result is too large")
    try:
        result = base**exponent
    except ZeroDivisionError:
        raise ValueError("division by zero: 0 cannot be raised to a negative power") from None
    except OverflowError:
        raise ValueError("result is too large") from None
    if isinstance(result, complex):
        raise ValueError("result is not a real number")
    return _checked(result)


def _checked(value: Number) -> Number:
    if isinstance(value, int) and value.bit_length() > _MAX_INT_BITS:
        raise ValueError("result is too large")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("result is too large" if math.isinf(value) else "result is not a number")
    return value


def _unsupported(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return f"names are not allowed ({node.id!r})"
    if isinstance(node, ast.Constant):
        return f"{node.value!r} is not a number"
    for kind, hint in _UNSUPPORTED_HINTS.items():
        if isinstance(node, kind):
            return hint
    return f"{type(node).__name__} is not allowed"


def _format_number(value: Number) -> str:
    if isinstance(value, int):
        return str(value)
    # 15 significant digits hide binary noise such as 0.1 + 0.2 = 0.30000000000000004.
    return format(value, ".15g")


def current_time(
    timezone: Annotated[
        str, "An IANA time zone name such as 'Asia/Tokyo', 'Europe/Paris' or 'UTC'."
    ],
) -> str:
    """Tell the current date, time and weekday in a time zone.

    Use it whenever the answer depends on today's date or the time somewhere.
    """
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(
            f"unknown time zone {timezone!r}; use an IANA name such as 'Asia/Tokyo'"
        ) from None
    return format_time(datetime.now(UTC).astimezone(zone))


def format_time(moment: datetime) -> str:
    """E.g. '2026-11-24 01:31:05 JST (UTC+09:00), Tuesday; ISO 8601: 2026-11-24T01:31:05+09:00'."""
    iso = moment.isoformat(timespec="seconds")
    offset = iso[-6:] if iso[-6] in "+-" else "+00:00"
    return (
        f"{moment:%Y-%m-%d %H:%M:%S} {moment.tzname()} (UTC{offset}), {moment:%A}; ISO 8601: {iso}"
    )


CALCULATOR = Tool.from_function(calculator)
CURRENT_TIME = Tool.from_function(current_time)
