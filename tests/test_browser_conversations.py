"""The conversations beside the chat in a real browser: the sidebar with the current one and a
running answer's badge, search, renaming by keyboard (seen live in a second tab), delete, the
model's title, and the phone layout."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.helpers.browser import MARKS, chromium, conversation_page, site
from tests.helpers.fake_openai import Completion, FakeOpenAI, json_body, sse, text_stream

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Page


pytestmark = MARKS

WORDS = " ".join(f"word{number}" for number in range(40))


@pytest.fixture
def server(tmp_path: Path, fake_openai: FakeOpenAI) -> Iterator[str]:
    """Daphne on a fresh SQLite file, its model the loopback server, titles generated."""
    with site(tmp_path / "db.sqlite3", fake_openai, CHAT_GENERATE_TITLES="1") as url:
        yield url


@pytest.fixture
def context(server: str) -> Iterator[BrowserContext]:
    with chromium() as browser:
        yield browser.new_context()


@pytest.fixture
def page(context: BrowserContext, server: str) -> Iterator[Page]:
    """A new conversation's page, signed up; at the end, no script error and nothing the
    Content-Security-Policy blocked."""
    with conversation_page(context, server) as page:
        yield page


def title_reply(text: str) -> object:
    return json_body(Completion().whole({"role": "assistant", "content": text}))


def test_the_sidebar_marks_the_current_one_shows_running_gets_the_title_and_search_opens_it(
    page: Page, fake_openai: FakeOpenAI
) -> None:
    from playwright.sync_api import expect

    fake_openai.queue(sse(text_stream("Penguins waddle. " + WORDS), delay=0.05))
    fake_openai.queue(title_reply('"Waddling Penguins."'))
    sidebar = page.locator("#sidebar")
    current = sidebar.locator('a[aria-current="page"]')
    expect(current).to_have_count(1)

    page.locator("#composer textarea").fill("Tell me about penguins")
    page.keyboard.press("Enter")
    expect(current.locator(".badge")).to_have_text("Running", timeout=15_000)
    expect(current.locator(".sidebar-title")).to_have_text("Tell me about penguins")
    assistant = page.locator(".message.role-assistant")
    expect(assistant).to_have_attribute("data-status", "complete", timeout=15_000)
    expect(current.locator(".badge")).to_have_count(0)

    # The model's title follows the answer: the heading, the entry and the tab.
    expect(page.locator("#conversation-title")).to_have_text("Waddling Penguins", timeout=10_000)
    expect(current.locator(".sidebar-title")).to_have_text("Waddling Penguins")
    expect(page).to_have_title("Waddling Penguins")
    conversation_url = page.url

    # A second conversation; the first is listed, not current.
    sidebar.get_by_role("button", name="New conversation").click()
    expect(page).not_to_have_url(conversation_url)
    expect(sidebar.locator(".sidebar-title")).to_have_text(
        [re.compile(r"Conversation \d+"), "Waddling Penguins"]
    )

    # Live results as one types, then the search page with Enter; a result opens the conversation.
    search = sidebar.get_by_role("searchbox", name="Search conversations")
    search.fill("WADDLE")
    live = sidebar.locator("#sidebar-search-results")
    expect(live.locator("mark")).to_have_text("waddle")
    search.press("Enter")
    expect(page).to_have_url(re.compile(r"/search/\?q=WADDLE"))
    result = page.locator("main .search-results a")
    expect(result).to_have_text("Waddling Penguins")
    expect(page.locator("main .snippet mark")).to_have_text("waddle")
    result.click()
    expect(page).to_have_url(conversation_url)
    expect(page.locator(".message.role-user")).to_contain_text("Tell me about penguins")


def test_rename_by_keyboard_reaches_a_second_tab_and_delete_asks_first(
    page: Page, context: BrowserContext
) -> None:
    from playwright.sync_api import expect

    other_tab = context.new_page()
    other_tab.goto(page.url)
    expect(other_tab.locator("#connection")).to_have_attribute("data-state", "connected")

    opener = page.get_by_role("button", name="Rename")
    opener.focus()
    page.keyboard.press("Enter")
    field = page.get_by_role("textbox", name="New title")
    expect(field).to_be_focused()
    page.keyboard.type("Not this")
    page.keyboard.press("Escape")
    expect(field).to_be_hidden()
    expect(opener).to_be_focused()
    expect(page.locator("#connection")).to_have_attribute("data-state", "connected")

    page.keyboard.press("Enter")
    expect(field).to_be_focused()
    page.keyboard.press("Control+A")
    page.keyboard.type("Plans for <Kyoto>")
    page.keyboard.press("Enter")
    for tab in (page, other_tab):
        expect(tab.locator("#conversation-title")).to_have_text("Plans for <Kyoto>")
        expect(tab.locator('#sidebar a[aria-current="page"]')).to_have_text("Plans for <Kyoto>")
        expect(tab).to_have_title("Plans for <Kyoto>")
    expect(opener).to_be_focused()

    # An empty title is refused, in the error line.
    page.keyboard.press("Enter")
    page.keyboard.press("Control+A")
    page.keyboard.press("Delete")
    page.keyboard.press("Enter")
    expect(page.locator("#chat-error")).to_contain_text("The title is empty")
    expect(other_tab.locator("#conversation-title")).to_have_text("Plans for <Kyoto>")

    questions: list[str] = []

    def accept(dialog: object) -> None:
        questions.append(dialog.message)  # type: ignore[attr-defined]
        dialog.accept()  # type: ignore[attr-defined]

    page.on("dialog", accept)
    page.locator(".toolbar").get_by_role("button", name="Delete").focus()
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"/$"))
    assert questions == ["Delete this conversation?"]
    expect(page.locator("main h1")).to_have_text("Conversations")


def test_on_a_phone_nothing_scrolls_sideways_the_composer_stays_and_the_sidebar_folds(
    page: Page, fake_openai: FakeOpenAI
) -> None:
    from playwright.sync_api import expect

    long_answer = "\n\n".join(
        [
            "A" + "verylongword" * 30,
            "```\n" + "code_line_that_is_long " * 20 + "\n```",
            "| a | b | c | d |\n| - | - | - | - |\n| " + " | ".join(["cellcontent" * 5] * 4) + " |",
            *(f"Paragraph {number}: " + WORDS for number in range(25)),
        ]
    )
    fake_openai.queue(sse(text_stream(long_answer)))
    page.set_viewport_size({"width": 390, "height": 844})
    page.locator("#composer textarea").fill("https://example.com/" + "x" * 300)
    page.keyboard.press("Enter")
    expect(page.locator(".message.role-assistant")).to_have_attribute(
        "data-status", "complete", timeout=15_000
    )

    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    for scroll in ("0", "document.body.scrollHeight / 2", "document.body.scrollHeight"):
        page.evaluate(f"window.scrollTo(0, {scroll})")
        box = page.locator("#composer textarea").bounding_box()
        assert box is not None
        assert box["y"] >= 0 and box["y"] + box["height"] <= 844, (scroll, box)

    page.evaluate("window.scrollTo(0, 0)")
    toggle = page.get_by_role("button", name="Conversations")
    panel = page.locator("#sidebar-panel")
    expect(toggle).to_have_attribute("aria-expanded", "false")
    expect(panel).to_be_hidden()
    toggle.focus()
    page.keyboard.press("Enter")
    expect(toggle).to_have_attribute("aria-expanded", "true")
    expect(panel).to_be_visible()
    expect(panel.locator('a[aria-current="page"]')).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.keyboard.press("Space")
    expect(toggle).to_have_attribute("aria-expanded", "false")
    expect(panel).to_be_hidden()
