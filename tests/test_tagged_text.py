"""The <think> / <tool_call> scanner, fed whole and split at every character."""

from __future__ import annotations

import json

import pytest

from conversations.streaming.tagged_text import Segment, TaggedTextScanner, parse_tool_call

CALL = '{"name": "calculator", "arguments": {"expression": "2+2"}}'
TRANSCRIPT = (
    "<think>\nThe user wants a sum. I will use the calculator.\n</think>\n\n"
    "Let me work that out.\n"
    f"<tool_call>\n{CALL}\n</tool_call>\n"
    '<tool_call>\n{"name": "current_time", "arguments": {"timezone": "UTC"}}\n</tool_call>'
    "\nDone, a < b and <b>bold</b>."
)
EXPECTED = [
    Segment("reasoning", "The user wants a sum. I will use the calculator.\n"),
    Segment("text", "Let me work that out.\n"),
    Segment("tool_call", CALL),
    Segment("tool_call", '{"name": "current_time", "arguments": {"timezone": "UTC"}}'),
    Segment("text", "Done, a < b and <b>bold</b>."),
]


def scan(pieces: list[str]) -> list[Segment]:
    scanner = TaggedTextScanner()
    segments = [segment for piece in pieces for segment in scanner.feed(piece)]
    return merged(segments + scanner.flush())


def merged(segments: list[Segment]) -> list[Segment]:
    """Adjacent text (or reasoning) pieces joined, as a reader would see them."""
    out: list[Segment] = []
    for segment in segments:
        if out and out[-1].kind == segment.kind != "tool_call":
            out[-1] = Segment(segment.kind, out[-1].text + segment.text)
        else:
            out.append(segment)
    return out


def test_a_whole_transcript_splits_into_reasoning_text_and_calls() -> None:
    assert scan([TRANSCRIPT]) == EXPECTED


def test_a_split_at_any_character_gives_the_same_segments() -> None:
    for cut in range(1, len(TRANSCRIPT)):
        assert scan([TRANSCRIPT[:cut], TRANSCRIPT[cut:]]) == EXPECTED, f"split at {cut}"


def test_one_character_at_a_time_gives_the_same_segments() -> None:
    assert scan(list(TRANSCRIPT)) == EXPECTED


def test_plain_text_passes_through_at_once() -> None:
    scanner = TaggedTextScanner()

    assert scanner.feed("Hello, ") == [Segment("text", "Hello, ")]
    assert scanner.feed("world.") == [Segment("text", "world.")]
    assert scanner.flush() == []


def test_only_a_possible_tag_start_is_held_back() -> None:
    scanner = TaggedTextScanner()

    assert scanner.feed("Sure <tool") == [Segment("text", "Sure ")]
    assert scanner.feed("box> is not a tag") == [Segment("text", "<toolbox> is not a tag")]
    assert scanner.feed("; x <") == [Segment("text", "; x ")]
    assert scanner.feed("= y") == [Segment("text", "<= y")]


def test_reasoning_streams_before_its_closing_tag_arrives() -> None:
    scanner = TaggedTextScanner()

    assert scanner.feed("<think>Step one") == [Segment("reasoning", "Step one")]
    assert scanner.feed(", step two</th") == [Segment("reasoning", ", step two")]
    assert scanner.feed("ink>Answer") == [Segment("text", "Answer")]


def test_a_tool_call_body_is_held_until_it_closes() -> None:
    scanner = TaggedTextScanner()

    assert scanner.feed("<tool_call>") == []
    assert scanner.feed('{"name": "calculator", ') == []
    assert scanner.feed('"arguments": {}}</tool_') == []
    assert scanner.feed("call>") == [
        Segment("tool_call", '{"name": "calculator", "arguments": {}}')
    ]


def test_what_is_still_open_at_the_end_is_flushed_as_its_kind() -> None:
    assert scan(["<think>unfinished thought"]) == [Segment("reasoning", "unfinished thought")]
    assert scan(["<tool_call>", '{"name": "calculator"}']) == [
        Segment("tool_call", '{"name": "calculator"}')
    ]
    assert scan(["x <tool_ca"]) == [Segment("text", "x <tool_ca")]
    assert scan(["<tool_call>\n</tool_call>"]) == []


def test_parse_tool_call_returns_the_name_and_arguments_as_json() -> None:
    assert parse_tool_call(CALL) == ("calculator", '{"expression": "2+2"}')
    # Llama-style "parameters", arguments already encoded as a string, and none at all.
    assert parse_tool_call('{"name": "clock", "parameters": {"tz": "UTC"}}') == (
        "clock",
        '{"tz": "UTC"}',
    )
    assert parse_tool_call('{"name": "clock", "arguments": "{\\"tz\\": 1}"}') == (
        "clock",
        '{"tz": 1}',
    )
    assert parse_tool_call('{"name": "clock"}') == ("clock", "{}")


def test_malformed_json_keeps_its_raw_text_as_the_arguments() -> None:
    body = '{"name": "calculator", "arguments": {"expression": "2+2"}'

    name, arguments = parse_tool_call(body) or ("", "")

    assert name == "calculator"
    assert arguments == body
    with pytest.raises(json.JSONDecodeError):
        json.loads(arguments)


@pytest.mark.parametrize("body", ["not json at all", '["calculator"]', '{"arguments": {}}'])
def test_a_body_that_names_no_tool_is_not_a_call(body: str) -> None:
    assert parse_tool_call(body) is None


def test_leading_spaces_of_the_first_piece_are_kept() -> None:
    assert TaggedTextScanner().feed("    indented code") == [Segment("text", "    indented code")]
