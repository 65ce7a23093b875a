"""A streaming answer in a real browser: Markdown while it is written, with the blocks shown kept
through the finish; a selection, opened and closed cards and the scroll position respected; long
tool output cut with "Show all"; the token total live."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.helpers.browser import MARKS, chromium, conversation_page, send, site
from tests.helpers.fake_openai import FakeOpenAI, sse, text_stream, tool_calls_stream

if TYPE_CHECKING:
    from playwright.sync_api import Page


pytestmark = MARKS

ANSWER = (
    "## Findings\n\n"
    "The first paragraph says something worth selecting.\n\n"
    "```python\nprint('hello')\n```\n\n"
    "| city | people |\n|---|---|\n| Lyon | 500 |\n| Nice | 340 |\n\n"
    + " ".join(f"word{number}" for number in range(60))
    + "\n\nThe last words."
)


@pytest.fixture
def server(tmp_path: Path, fake_openai: FakeOpenAI) -> Iterator[str]:
    """Daphne on a fresh SQLite file, its model the loopback server."""
    with site(tmp_path / "db.sqlite3", fake_openai) as url:
        yield url


@pytest.fixture
def page(server: str) -> Iterator[Page]:
    """A new conversation's page, signed up, in a short window; at the end, no script error and
    nothing the Content-Security-Policy blocked."""
    with chromium() as browser:
        context = browser.new_context(viewport={"width": 900, "height": 600})
        with conversation_page(context, server) as page:
            yield page


def test_markdown_appears_while_streaming_and_the_finish_keeps_its_blocks_and_the_selection(
    page: Page, fake_openai: FakeOpenAI
) -> None:
    from playwright.sync_api import expect

    fake_openai.queue(sse(text_stream(ANSWER), delay=0.04))
    send(page, "tell me")
    answer = page.locator(".message.role-assistant")
    expect(answer).to_have_attribute("data-status", "streaming", timeout=15_000)
    heading = answer.locator(".markdown h2")
    expect(heading).to_have_text("Findings")
    expect(answer.locator(".markdown p")).to_have_count(1)
    # Tag the nodes shown now, and select words in the paragraph.
    page.evaluate(
        """() => {
          const answer = document.querySelector(".message.role-assistant");
          answer.querySelector(".markdown h2").shownBefore = "h2";
          const text = answer.querySelector(".markdown p").firstChild;
          const range = document.createRange();
          range.setStart(text, 4);
          range.setEnd(text, 24);
          getSelection().removeAllRanges();
          getSelection().addRange(range);
        }"""
    )
    assert page.evaluate("getSelection().toString()") == "first paragraph says"
    states = set()
    while answer.get_attribute("data-status") == "streaming":
        states.add(page.evaluate("document.querySelector('.message.role-assistant').textContent"))
        if answer.locator(".markdown table").count():
            break
        page.wait_for_timeout(50)
    # A table and highlighted code as Markdown, before the answer ends.
    expect(answer.locator(".markdown table td").first).to_have_text("Lyon")
    expect(answer.locator(".markdown pre.highlight")).to_be_visible()
    expect(answer.locator(".markdown .copy-code")).to_have_count(1)
    assert answer.get_attribute("data-status") == "streaming"
    assert len(states) >= 3
    assert page.evaluate("getSelection().toString()") == "first paragraph says"

    expect(answer).to_have_attribute("data-status", "complete", timeout=15_000)
    expect(answer.locator(".markdown p").last).to_have_text("The last words.")
    expect(answer.locator(".tail")).to_have_count(0)
    # The heading is the very node shown while streaming; the selection is still there.
    assert answer.locator(".markdown h2").evaluate("node => node.shownBefore") == "h2"
    assert page.evaluate("getSelection().toString()") == "first paragraph says"
    expect(answer.locator(".markdown .copy-code")).to_have_count(1)
    # The conversation's total, without a reload.
    expect(page.locator("#conversation-usage")).to_have_text("30 tokens so far (10 in / 20 out)")
    footer = answer.locator("footer")
    expect(footer).to_have_attribute(
        "title",
        "10 input and 20 output tokens, written in " + (footer.inner_text().split(" · ")[1]),
    )


def test_cards_keep_what_the_reader_opened_or_closed_and_show_long_output_and_arguments(
    page: Page, fake_openai: FakeOpenAI
) -> None:
    from playwright.sync_api import expect

    filters = {"year": 2024, "tags": ["a", "b"]}
    fake_openai.queue(
        sse(
            tool_calls_stream(
                [
                    ("rename_conversation", json.dumps({"title": "Renamed by the model"})),
                    ("calculator", json.dumps({"expression": "2**9999"})),
                    ("lookup", json.dumps({"query": "lyon", "filters": filters})),
                ],
                interleave=False,
                pieces=6,
            ),
            delay=0.15,
        )
    )
    fake_openai.queue(sse(text_stream("All " * 60 + "done."), delay=0.05))
    send(page, "do things")
    answer = page.locator(".message.role-assistant")
    rename = page.locator(".tool-card").nth(0)
    expect(rename).to_have_attribute("data-status", "streaming", timeout=15_000)
    # The reader closes the card while its arguments stream; it stays closed although it
    # comes to wait for approval, which the server shows open.
    rename.locator("summary").click()
    expect(page.locator(".tool-card")).to_have_count(3, timeout=10_000)
    expect(rename).to_have_attribute("data-status", "awaiting_approval", timeout=10_000)
    assert rename.evaluate("card => card.open") is False

    calculator = page.locator(".tool-card").nth(1)
    lookup = page.locator(".tool-card").nth(2)
    rename.locator("summary").click()
    rename.locator("button.approve").click()
    expect(calculator).to_have_attribute("data-status", "succeeded", timeout=10_000)
    expect(lookup).to_have_attribute("data-status", "failed")
    # Finished cards are closed: the reader opens the calculator's, which stays open through
    # the finish.
    assert calculator.evaluate("card => card.open") is False
    calculator.locator("summary").click()
    expect(answer).to_have_attribute("data-status", "complete", timeout=15_000)
    assert calculator.evaluate("card => card.open") is True
    assert rename.evaluate("card => card.open") is True
    assert lookup.evaluate("card => card.open") is False

    # Long output is cut, all of it there; "Show all" works from the keyboard.
    output = calculator.locator("pre.output")
    assert len(output.inner_text()) > 3000
    cut = output.evaluate("pre => pre.clientHeight < pre.scrollHeight")
    assert cut is True
    show = calculator.locator("button.show-all")
    expect(show).to_have_accessible_name("Show all")
    show.focus()
    page.keyboard.press("Enter")
    expect(show).to_have_attribute("aria-expanded", "true")
    expect(show).to_have_accessible_name("Show less")
    assert output.evaluate("pre => pre.clientHeight >= pre.scrollHeight") is True

    # Arguments: text as text, an object as indented JSON.
    lookup.locator("summary").click()
    expect(lookup.locator("dd").first).to_have_text("lyon")
    expect(lookup.locator("dd pre.argument")).to_have_text(json.dumps(filters, indent=2))
    expect(page.locator("#conversation-usage")).to_have_text("60 tokens so far (20 in / 40 out)")


def test_the_view_follows_the_answer_until_the_reader_scrolls_up(
    page: Page, fake_openai: FakeOpenAI
) -> None:
    from playwright.sync_api import expect

    lines = "\n\n".join(f"Line {number} done." for number in range(90))
    fake_openai.queue(sse(text_stream(lines), delay=0.03))
    send(page, "a long one")
    answer = page.locator(".message.role-assistant")
    jump = page.get_by_role("button", name="Jump to latest")
    at_end = "() => scrollY + innerHeight >= document.documentElement.scrollHeight - 4"
    expect(answer).to_contain_text("Line 45", timeout=15_000)
    # Taller than the window by far, and still followed.
    assert page.evaluate("document.documentElement.scrollHeight > 2 * innerHeight")
    assert page.evaluate(at_end)
    expect(jump).to_be_hidden()

    page.mouse.move(450, 300)
    page.mouse.wheel(0, -400)
    expect(jump).to_be_visible()
    where = page.evaluate("scrollY")
    expect(answer).to_contain_text("Line 60")
    assert abs(page.evaluate("scrollY") - where) < 40
    assert not page.evaluate(at_end)

    jump.focus()
    page.keyboard.press("Enter")
    assert page.evaluate(at_end)
    expect(jump).to_be_hidden()
    expect(answer).to_contain_text("Line 75")
    assert page.evaluate(at_end)
    expect(answer).to_have_attribute("data-status", "complete", timeout=15_000)
    assert page.evaluate(at_end)

    # Opened again, the conversation shows its latest message.
    page.goto(page.url)
    expect(page.locator("#connection")).to_have_attribute("data-state", "connected")
    expect(answer).to_contain_text("Line 89 done.")
    page.wait_for_function(at_end)
    expect(jump).to_be_hidden()
