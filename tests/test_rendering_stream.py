"""Answers shown as they are written: finished blocks as Markdown while the last one is plain text,
rendered as the finished answer will be, and tool cards' arguments and long output."""

from __future__ import annotations

import html
import json
import re
from datetime import UTC, datetime

import pytest

from conversations.dom_ids import dom_id
from conversations.live.draft import AnswerDraft, CallDraft
from conversations.live.events import (
    Event,
    MessageStatus,
    TextDelta,
    ToolCreated,
    ToolStatus,
    Usage,
)
from conversations.markdown import render_markdown, render_streaming, stable_length
from conversations.rendering import render, render_events, render_message

TABLE = "| a | b |\n|---|---|\n| 1 | 2 |\n"


@pytest.mark.parametrize(
    ("text", "stable"),
    [
        ("", ""),
        ("One line without its end", ""),
        ("A paragraph\n", ""),
        ("A paragraph\nstill it\n", ""),
        ("A paragraph\n\n", ""),
        ("A paragraph\n\nAnother", ""),
        ("A paragraph\n\nAnother\n", "A paragraph\n\n"),
        ("One\n\nTwo\n\nThree\n", "One\n\nTwo\n\n"),
        ("# Heading\nA paragraph\n", "# Heading\n"),
        # A paragraph may still become a setext heading; the heading is done once a block follows.
        ("Title\n", ""),
        ("Title\n---\n", ""),
        ("Title\n---\nNext\n", "Title\n---\n"),
        ("Title\n===\n\nNext\n", "Title\n===\n\n"),
        # A list or a table is the last block while it grows.
        ("- one\n- two\n", ""),
        ("- one\n\n- two\n", ""),
        ("Intro\n\n- one\n- two\n", "Intro\n\n"),
        ("- one\n- two\n\nAfter\n", "- one\n- two\n\n"),
        (TABLE, ""),
        ("Intro\n\n" + TABLE, "Intro\n\n"),
        (TABLE + "| 3 | 4 |\n", ""),
        (TABLE + "\nAfter\n", TABLE + "\n"),
        # An unclosed fence runs to the end, blank lines and all.
        ("```python\nx = 1\n\n\ny = 2\n", ""),
        ("Intro\n```python\nx = 1\n\n", "Intro\n"),
        ("```python\nx = 1\n```\n", ""),
        ("```python\nx = 1\n```\nAfter\n", "```python\nx = 1\n```\n"),
        ("\n\n\nOne\n\nTwo\n", "\n\n\nOne\n\n"),
        ("One\r\n\r\nTwo\r\n", "One\r\n\r\n"),
        ("word " * 2000, ""),
        ("word " * 2000 + "\n\nNext\n", "word " * 2000 + "\n\n"),
    ],
)
def test_the_stable_part_ends_where_the_last_top_level_block_starts(text: str, stable: str) -> None:
    assert text[: stable_length(text)] == stable


ANSWER = (
    "## Results\n\nSome *text* with `code` and a [link](https://example.com).\n\n"
    "Setext title\n------------\n\n"
    "- one\n- two\n  continued\n- three\n\n" + TABLE + "| 3 | 4 |\n\n"
    "```python\ndef f():\n    return 1\n```\n\n"
    "> quoted\n> more\n\n"
    "1. first\n2. second\n\n"
    "Last paragraph, no newline"
)


def streamed_pieces(text: str, size: int) -> list[str]:
    return [text[at : at + size] for at in range(0, len(text), size)]


class ShownAnswer:
    """The text elements of one answer as the fragments leave them on the page."""

    def __init__(self, message_id: int) -> None:
        self.markdown = ""
        self.tail = ""
        self.markdown_id = dom_id("message-text-md", message_id, 0)
        self.tail_id = dom_id("message-text-tail", message_id, 0)

    def apply(self, fragments: str) -> None:
        # Neither Markdown nor escaped text has a <div> of its own.
        for swap, target, inner in re.findall(
            r'<div hx-swap-oob="(\w+):#([\w-]+)">(.*?)</div>', fragments, re.S
        ):
            if target == self.markdown_id:
                assert swap == "beforeend"
                self.markdown += inner
            elif target == self.tail_id:
                text = html.unescape(inner)
                self.tail = self.tail + text if swap == "beforeend" else text


def new_answer() -> AnswerDraft:
    return AnswerDraft(message_id=7, created_at=datetime(2026, 1, 1, tzinfo=UTC))


def text_events(answer: AnswerDraft, pieces: list[str]) -> list[list[Event]]:
    seq = answer.seq
    batches = []
    for piece in pieces:
        seq += 1
        batches.append([TextDelta(seq, piece)])
    return batches


@pytest.mark.parametrize("size", [1, 3, 7, 40, 1000])
def test_streamed_blocks_are_rendered_as_the_finished_answer_renders_them(size: int) -> None:
    answer = new_answer()
    page = ShownAnswer(answer.id)
    states = set()
    for batch in text_events(answer, streamed_pieces(ANSWER, size)):
        page.apply(render_events(answer, batch))
        states.add(page.markdown)
        shown = answer.content
        # Everything is shown once: Markdown for the finished blocks, the rest as it came.
        assert shown.endswith(page.tail)
        stable = shown[: len(shown) - len(page.tail)]
        assert page.markdown == render_markdown(stable)
        # A page loaded now shows the same.
        loaded = render_streaming(shown)
        assert (loaded.stable, loaded.tail) == (page.markdown, page.tail)
    if size < 40:
        assert len(states) > 5
    final = str(render_markdown(ANSWER))
    # The finish adds the last block; the ones shown already stay as they are.
    assert final.startswith(page.markdown)
    assert "<h2>Results</h2>" in page.markdown
    assert "<table>" in page.markdown
    assert '<pre class="highlight">' in page.markdown
    # The last line is not complete: the list before it may still go on.
    assert page.tail == "1. first\n2. second\n\nLast paragraph, no newline"


def test_text_without_a_new_line_is_only_appended() -> None:
    answer = new_answer()
    first = render_events(answer, [TextDelta(1, "# Title\n\nSome\n")])
    markdown, tail = dom_id("message-text-md", 7, 0), dom_id("message-text-tail", 7, 0)
    assert f'<div hx-swap-oob="beforeend:#{markdown}"><h1>Title</h1>' in first
    more = render_events(answer, [TextDelta(2, "words"), TextDelta(3, " more")])
    assert more == f'<div hx-swap-oob="beforeend:#{tail}">words more</div>'


def test_text_before_tool_calls_becomes_markdown_when_they_start() -> None:
    answer = new_answer()
    page = ShownAnswer(answer.id)
    page.apply(render_events(answer, [TextDelta(1, "Let me *check*")]))
    assert page.markdown == ""
    fragments = render_events(
        answer,
        [ToolCreated(2, 1, 0, "call_1", "calculator", 14), TextDelta(3, "Done: **4**")],
    )
    page.apply(fragments)
    assert page.markdown == str(render_markdown("Let me *check*"))
    assert page.tail == ""
    tail = dom_id("message-text-tail", 7, 1)
    assert f'<div hx-swap-oob="beforeend:#{tail}">Done: **4**</div>' in fragments


def test_a_page_that_joins_late_continues_from_the_split_it_was_shown() -> None:
    answer = new_answer()
    render_events(answer, [TextDelta(1, "One\n\nTwo")])
    # A page shown the answer from its state (a reconnect) mirrors a new draft.
    mirror = AnswerDraft.from_state(answer.state(), seq=answer.seq)
    loaded = render_streaming(mirror.content)
    page = ShownAnswer(mirror.id)
    page.markdown, page.tail = str(loaded.stable), loaded.tail
    page.apply(render_events(mirror, [TextDelta(2, "\n\nThree\n")]))
    assert page.markdown == str(render_markdown("One\n\nTwo\n\n"))
    assert page.tail == "Three\n"


def test_the_streaming_message_and_the_finished_one_share_their_text_elements() -> None:
    answer = new_answer()
    render_events(answer, [TextDelta(1, "## Heading\n\nSecond paragraph\n\nThe end")])
    streaming = render_message(answer)
    text, markdown = dom_id("message-text", 7, 0), dom_id("message-text-md", 7, 0)
    # The template breaks long tags between attributes.
    elements = rf'<div class="text" id="{text}"\s*><div\s+class="markdown" id="{markdown}"\s*>'
    assert re.search(elements + "<h2>Heading</h2>", streaming)
    tail = dom_id("message-text-tail", 7, 0)
    assert f'class="tail plain" id="{tail}">Second paragraph\n\nThe end</div>' in streaming
    finished = render_events(
        answer, [MessageStatus(2, "complete", "", "2026-01-01T00:00:05+00:00")]
    )
    assert 'hx-swap-oob="morph"' in finished
    shown = "<h2>Heading</h2>\n<p>Second paragraph</p>\n<p>The end</p>\n</div></div>"
    assert re.search(elements + re.escape(shown), finished)
    assert "-tail" not in finished


def test_usage_and_changed_cards_are_morphed() -> None:
    answer = new_answer()
    render_events(answer, [ToolCreated(1, 1, 0, "call_1", "calculator", 0)])
    fragments = render_events(
        answer,
        [
            ToolStatus(2, 1, 0, "succeeded", output="4", arguments='{"expression": "2+2"}'),
            Usage(3, 10, 20, 30),
        ],
    )
    card, footer = dom_id("tool-call", 7, 1, 0), dom_id("message-footer", 7)
    assert re.search(rf'<details id="{card}"[^>]*hx-swap-oob="morph"', fragments)
    assert re.search(rf'<footer id="{footer}"[^>]*hx-swap-oob="morph"', fragments)
    assert 'title="10 input and 20 output tokens"' in fragments


def test_the_conversation_total_is_a_partial_the_socket_replaces() -> None:
    html_ = render(
        "conversation-usage", {"usage": {"input": 3, "output": 4, "total": 7}, "morph": True}
    )
    assert f'id="{dom_id("conversation-usage")}"' in html_ and 'hx-swap-oob="morph"' in html_
    assert "7 tokens so far (3 in / 4 out)" in html_


def card(**fields: object) -> str:
    call = CallDraft(7, 1, 0, "call_1", "search", 0, **fields)  # type: ignore[arg-type]
    return render("tool-card", {"call": call})


def test_arguments_show_text_as_text_and_structures_as_indented_json() -> None:
    arguments = {"query": "café <b>", "filters": {"year": 2024, "tags": ["a", "b"]}, "limit": 5}
    shown = card(arguments=json.dumps(arguments), parsed_arguments=arguments, status="running")
    assert "<dt>query</dt><dd>café &lt;b&gt;</dd>" in shown
    assert "<dt>limit</dt><dd>5</dd>" in shown
    indented = html.escape(json.dumps(arguments["filters"], indent=2), quote=True)
    assert f'<dt>filters</dt><dd><pre class="argument">{indented}</pre></dd>' in shown


@pytest.mark.parametrize(
    ("output", "long"),
    [
        ("short", False),
        ("x" * 1500, False),
        ("x" * 1501, True),
        ("\n".join(["line"] * 20), False),
        ("\n".join(["line"] * 21), True),
    ],
)
def test_long_output_is_cut_with_a_show_all_button(output: str, long: bool) -> None:
    shown = card(status="succeeded", output=output)
    assert ('class="show-all' in shown) is long
    assert html.escape(output) in shown  # all of it, either way


def test_a_second_call_of_a_step_joins_its_group() -> None:
    answer = new_answer()
    render_events(answer, [ToolCreated(1, 1, 0, "call_1", "calculator", 0)])
    fragments = render_events(answer, [ToolCreated(2, 1, 1, "call_2", "calculator", 0)])
    group = dom_id("message-calls", 7, 1)
    assert fragments.startswith(f'\n<div hx-swap-oob="beforeend:#{group}">')
    assert f'id="{dom_id("tool-call", 7, 1, 1)}"' in fragments
