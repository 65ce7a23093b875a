"""The composer and the connection indicator in a real browser: the box keeps its focus and what
was typed, Send turns into Stop, and a dropped connection shows, comes back and loses nothing."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.helpers.browser import MARKS, chromium, conversation_page
from tests.helpers.fake_openai import FakeOpenAI, sse, text_stream
from tests.helpers.servers import CuttableProxy, cuttable_proxy, daphne, migrate, site_env

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Page


pytestmark = MARKS

WORDS = " ".join(f"word{number}" for number in range(60))


@pytest.fixture
def proxy(tmp_path: Path, fake_openai: FakeOpenAI) -> Iterator[CuttableProxy]:
    """Daphne on a fresh SQLite file, its model the loopback server, behind a proxy that can
    drop the page's socket."""
    env = site_env(fake_openai, tmp_path / "db.sqlite3", SECRET_KEY="browser-test")
    migrate(env)
    with daphne(env) as url, cuttable_proxy(url) as proxy:
        yield proxy


@pytest.fixture
def context(proxy: CuttableProxy) -> Iterator[BrowserContext]:
    with chromium() as browser:
        yield browser.new_context()


@pytest.fixture
def page(context: BrowserContext, proxy: CuttableProxy) -> Iterator[Page]:
    """A new conversation's page, signed up; at the end, no script error and nothing the
    Content-Security-Policy blocked."""
    with conversation_page(context, proxy.url) as page:
        yield page


def test_the_box_keeps_focus_and_what_was_typed_and_send_turns_into_stop(
    page: Page, fake_openai: FakeOpenAI
) -> None:
    from playwright.sync_api import expect

    fake_openai.queue(sse(text_stream(WORDS), delay=0.1))
    fake_openai.queue(sse(text_stream("Second answer.")))
    box = page.locator("#composer textarea")
    send = page.locator(".composer-bar button.send")
    stop = page.locator(".composer-bar button.stop")
    error = page.locator("#chat-error")

    box.fill("count to sixty")
    box.press("Enter")
    page.keyboard.type("and then")

    assistant = page.locator(".message.role-assistant")
    expect(assistant).to_have_attribute("data-status", "streaming", timeout=15_000)
    # Only what was sent is cleared; the focus never left the box.
    expect(box).to_have_value("and then")
    assert page.evaluate("document.activeElement.name") == "message"
    expect(send).to_be_hidden()
    expect(stop).to_be_visible()

    box.press("Enter")
    expect(error).to_contain_text("still being written")
    expect(box).to_have_value("and then")

    page.keyboard.press("Escape")
    expect(assistant).to_have_attribute("data-status", "cancelled")
    expect(stop).to_be_hidden()
    expect(send).to_be_visible()
    expect(error).to_be_empty()
    assert page.evaluate("document.activeElement.name") == "message"

    send.click()
    expect(assistant.nth(1)).to_have_attribute("data-status", "complete", timeout=15_000)
    expect(page.locator(".message.role-user .text").nth(1)).to_have_text("and then")
    expect(box).to_have_value("")
    assert page.evaluate("document.activeElement.name") == "message"


def test_a_dropped_connection_shows_comes_back_and_loses_nothing(
    page: Page, context: BrowserContext, proxy: CuttableProxy, fake_openai: FakeOpenAI
) -> None:
    from playwright.sync_api import expect

    fake_openai.queue(sse(text_stream(WORDS), delay=0.08))
    fake_openai.queue(sse(text_stream("Sent after the drop.")))
    indicator = page.locator("#connection")
    box = page.locator("#composer textarea")
    note = page.locator("#composer-note")

    box.fill("count to sixty")
    box.press("Enter")
    assistant = page.locator(".message.role-assistant")
    expect(assistant).to_contain_text("word5", timeout=15_000)
    proxy.refusing = True
    proxy.cut()
    expect(indicator).to_have_attribute("data-state", "reconnecting")
    expect(indicator).to_have_text(re.compile(r"Reconnecting in \d s"))
    context.set_offline(True)
    expect(indicator).to_have_attribute("data-state", "offline")
    expect(indicator).to_have_text("Offline")
    # Tries at 0.5, 1.5 and 3.5 s have failed; the next waits 3 s, but `online` tries at once.
    page.wait_for_timeout(4_000)
    proxy.refusing = False
    context.set_offline(False)
    expect(indicator).to_have_attribute("data-state", "connected", timeout=1_500)
    expect(assistant).to_have_attribute("data-status", "complete", timeout=15_000)
    expect(assistant.locator(".text")).to_have_text(WORDS)
    expect(assistant).to_have_count(1)

    # A message typed while the socket is down waits, shown as such, and goes once it is back.
    proxy.refusing = True
    proxy.cut()
    expect(indicator).to_have_attribute("data-state", "reconnecting")
    box.fill("are you there?")
    box.press("Enter")
    expect(note).to_contain_text("Not sent yet")
    expect(box).to_have_value("are you there?")
    proxy.refusing = False
    expect(indicator).to_have_attribute("data-state", "connected", timeout=5_000)
    expect(assistant.nth(1)).to_have_attribute("data-status", "complete", timeout=15_000)
    expect(assistant.nth(1)).to_contain_text("Sent after the drop.")
    expect(page.locator(".message.role-user .text")).to_have_text(
        ["count to sixty", "are you there?"]
    )
    expect(box).to_have_value("")
    expect(note).to_be_empty()

    # Offline before the socket has noticed: the message waits in the browser, and says so.
    fake_openai.queue(sse(text_stream("Sent once back online.")))
    context.set_offline(True)
    expect(indicator).to_have_attribute("data-state", "offline")
    box.fill("still there?")
    box.press("Enter")
    expect(note).to_contain_text("Not sent yet")
    expect(box).to_have_value("still there?")
    context.set_offline(False)
    expect(assistant.nth(2)).to_contain_text("Sent once back online.", timeout=15_000)
    expect(note).to_be_empty()
    expect(box).to_have_value("")


def test_esc_closes_the_rename_form_or_the_sidebar_before_it_stops_an_answer(
    page: Page, fake_openai: FakeOpenAI
) -> None:
    from playwright.sync_api import expect

    fake_openai.queue(sse(text_stream(WORDS), delay=0.1))
    fake_openai.queue(sse(text_stream(WORDS), delay=0.1))
    page.set_viewport_size({"width": 480, "height": 800})  # the sidebar folds behind its toggle
    box = page.locator("#composer textarea")
    box.fill("count to sixty")
    box.press("Enter")
    assistant = page.locator(".message.role-assistant")
    expect(assistant).to_have_attribute("data-status", "streaming", timeout=15_000)

    page.get_by_role("button", name="Rename").click()
    field = page.get_by_role("textbox", name="New title")
    expect(field).to_be_focused()
    page.keyboard.press("Escape")
    expect(field).to_be_hidden()

    toggle = page.locator(".sidebar-toggle")
    toggle.click()
    expect(toggle).to_have_attribute("aria-expanded", "true")
    page.keyboard.press("Escape")
    expect(toggle).to_have_attribute("aria-expanded", "false")
    expect(toggle).to_be_focused()
    # Neither Esc stopped the answer.
    expect(assistant).to_have_attribute("data-status", "complete", timeout=15_000)

    # Elsewhere, Esc stops a running answer.
    box.fill("once more")
    box.press("Enter")
    expect(assistant.nth(1)).to_have_attribute("data-status", "streaming", timeout=15_000)
    page.keyboard.press("Escape")
    expect(assistant.nth(1)).to_have_attribute("data-status", "cancelled")
