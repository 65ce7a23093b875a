"""Optimistic parsing of half-streamed tool-call arguments."""

from __future__ import annotations

import pytest

from conversations.streaming.partial_json import parse_partial_arguments

ARGUMENTS = '{"expression": "17*23", "n": [1, 2'


@pytest.mark.parametrize(
    ("prefix", "parsed"),
    [
        ("{", {}),
        ('{"expression": "17', {"expression": "17"}),
        ('{"expression": "17*23", ', {"expression": "17*23"}),
        ('{"expression": "17*23", "n": [1', {"expression": "17*23", "n": [1]}),
        (ARGUMENTS, {"expression": "17*23", "n": [1, 2]}),
        (ARGUMENTS + "]}", {"expression": "17*23", "n": [1, 2]}),
    ],
)
def test_prefixes_parse_to_the_fields_so_far(prefix: str, parsed: dict[str, object]) -> None:
    assert parse_partial_arguments(prefix) == parsed


def test_growing_text_never_loses_fields() -> None:
    seen = [parse_partial_arguments(ARGUMENTS[:end]) for end in range(1, len(ARGUMENTS) + 1)]

    assert all(isinstance(parsed, dict) for parsed in seen)
    key_counts = [len(parsed or {}) for parsed in seen]
    assert key_counts == sorted(key_counts)
    assert key_counts[-1] == 2


@pytest.mark.parametrize("text", ["", "   ", "garbage", "}{", "nul", "\ud800"])
def test_garbage_gives_none(text: str) -> None:
    assert parse_partial_arguments(text) is None


@pytest.mark.parametrize("text", ["[1, 2", '"half a str', "42", "null"])
def test_a_value_that_is_not_an_object_gives_none(text: str) -> None:
    assert parse_partial_arguments(text) is None
