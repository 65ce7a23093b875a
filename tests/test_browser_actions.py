"""Message actions in a real browser: regenerate, edit and resend, retry, continue, copy, and the
two export downloads."""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.helpers.browser import MARKS, chromium, conversation_page, site
from tests.helpers.fake_openai import FakeOpenAI, error, sse, text_stream

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Page


pytestmark = MARKS


@pytest.fixture
def database(tmp_path: Path) -> Path:
    return tmp_path / "db.sqlite3"


@pytest.fixture
def server(database: Path, fake_openai: FakeOpenAI) -> Iterator[str]:
    """Daphne on a fresh SQLite file, its model the loopback server."""
    with site(database, fake_openai) as url:
        yield url


@pytest.fixture
def context(server: str) -> Iterator[BrowserContext]:
    with chromium() as browser:
        context = browser.new_context(accept_downloads=True)
        context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server)
        yield context


@pytest.fixture
def page(context: BrowserContext, server: str) -> Iterator[Page]:
    """A new conversation's page, signed up; at the end, no script error and nothing the
    Content-Security-Policy blocked."""
    with conversation_page(context, server) as page:
        yield page


def stored(database: Path) -> list[tuple[str, str, bool]]:
    """(role, content, superseded) of every message the server stored, oldest first."""
    with sqlite3.connect(database) as connection:
        found = connection.execute(
            "SELECT role, content, superseded_at IS NOT NULL FROM conversations_message"
            " ORDER BY created_at, id"
        ).fetchall()
    return [(role, content, bool(superseded)) for role, content, superseded in found]


def send(page: Page, text: str) -> None:
    box = page.locator("#composer textarea")
    box.fill(text)
    box.press("Enter")


def test_regenerate_edit_copy_and_export(
    page: Page, fake_openai: FakeOpenAI, database: Path
) -> None:
    from playwright.sync_api import expect

    for text in ("The first answer.", "A better answer.", "The answer to the edit."):
        fake_openai.queue(sse(text_stream(text)))
    answers = page.locator(".message.role-assistant")
    questions = page.locator(".message.role-user")

    send(page, "What is <b>HTML</b>?")
    expect(answers).to_have_attribute("data-status", "complete", timeout=15_000)
    regenerate = page.get_by_role("button", name="Regenerate answer")
    regenerate.focus()
    page.keyboard.press("Enter")

    expect(answers).to_have_count(1)
    expect(answers).to_contain_text("A better answer.", timeout=15_000)
    expect(page.locator("#messages")).not_to_contain_text("The first answer.")
    expect(answers).to_have_attribute("data-status", "complete")
    assert stored(database) == [
        ("user", "What is <b>HTML</b>?", False),
        ("assistant", "The first answer.", True),
        ("assistant", "A better answer.", False),
    ]

    # Copy takes the raw text (the user's message, markup and all).
    questions.get_by_role("button", name="Copy message").click()
    expect(questions.get_by_role("button", name="Copy message")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == "What is <b>HTML</b>?"

    # Edit: Esc cancels and gives the focus back; Save and resend replaces the rest.
    edit = questions.get_by_role("button", name="Edit message")
    edit.click()
    box = questions.get_by_role("textbox", name="Edit message")
    expect(box).to_be_focused()
    # The action bars and the open edit form pass axe's checks.
    from axe_playwright_python.sync_playwright import Axe

    checked = Axe().run(page, context="#messages")
    assert checked.violations_count == 0, checked.generate_report()
    box.fill("changed my mind")
    box.press("Escape")
    expect(box).to_be_hidden()
    expect(edit).to_be_focused()
    expect(edit).to_have_attribute("aria-expanded", "false")
    edit.press("Enter")
    expect(box).to_have_value("What is <b>HTML</b>?")
    box.fill("What is CSS?")
    questions.get_by_role("button", name="Save and resend").click()

    expect(answers).to_contain_text("The answer to the edit.", timeout=15_000)
    expect(questions).to_have_count(1)
    expect(questions).to_have_text(re.compile(r"What is CSS\?"))
    expect(page.locator("#messages")).not_to_contain_text("A better answer.")
    assert stored(database)[-2:] == [
        ("user", "What is CSS?", False),
        ("assistant", "The answer to the edit.", False),
    ]
    assert [row[2] for row in stored(database)[:-2]] == [True, True, True]
    assert fake_openai.requests[-1]["messages"][1:] == [{"role": "user", "content": "What is CSS?"}]

    with page.expect_download() as markdown_download:
        page.get_by_role("link", name="Export Markdown").click()
    with page.expect_download() as json_download:
        page.get_by_role("link", name="Export JSON").click()
    markdown = Path(markdown_download.value.path()).read_text()
    document: dict[str, Any] = json.loads(Path(json_download.value.path()).read_text())
    assert markdown_download.value.suggested_filename.endswith(".md")
    assert "The answer to the edit." in markdown and "A better answer." not in markdown
    assert json_download.value.suggested_filename.endswith(".json")
    assert [m["content"] for m in document["messages"]] == [
        "What is CSS?",
        "The answer to the edit.",
    ]


def test_retry_a_failed_answer_and_continue_a_cut_off_one(
    page: Page, fake_openai: FakeOpenAI, database: Path
) -> None:
    from playwright.sync_api import expect

    fake_openai.queue(error(500, "The model server fell over."))
    fake_openai.queue(sse(text_stream("Once upon a time", finish_reason="length")))
    fake_openai.queue(sse(text_stream(" they lived happily ever after.", pieces=5), delay=0.3))
    answers = page.locator(".message.role-assistant")

    send(page, "Tell me a story")
    expect(answers).to_have_attribute("data-status", "failed", timeout=15_000)
    expect(page.get_by_role("button", name="Regenerate answer")).to_have_count(0)
    page.get_by_role("button", name="Retry answer").click()

    expect(answers).to_have_count(1)
    expect(answers).to_have_attribute("data-status", "complete", timeout=15_000)
    expect(answers).to_contain_text("cut off at the token limit")
    expect(page.locator("#messages")).not_to_contain_text("fell over")
    page.get_by_role("button", name="Continue answer").click()

    expect(answers).to_have_count(2)
    # No actions while an answer is written.
    expect(answers.nth(1)).to_have_attribute("data-status", "streaming")
    expect(page.get_by_role("button", name="Copy message")).to_have_count(0)
    expect(page.get_by_role("button", name="Edit message")).to_have_count(0)
    expect(answers.nth(1)).to_contain_text("happily ever after.", timeout=15_000)
    expect(answers.nth(1)).to_have_attribute("data-status", "complete")
    # Only the latest answer offers Regenerate.
    expect(page.get_by_role("button", name="Regenerate answer")).to_have_count(1)
    expect(page.get_by_role("button", name="Continue answer")).to_have_count(0)
    rows = stored(database)
    assert [(role, superseded) for role, _, superseded in rows] == [
        ("user", False),
        ("assistant", True),
        ("assistant", False),
        ("user", False),
        ("assistant", False),
    ]
    assert rows[1][1] == "" and rows[2][1] == "Once upon a time"
    assert [m["content"] for m in fake_openai.requests[-1]["messages"][1:]] == [
        "Tell me a story",
        "Once upon a time",
        "Continue where you left off.",
    ]
