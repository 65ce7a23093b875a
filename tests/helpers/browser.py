"""What the browser tests share: the site on Daphne with the loopback model, Debian's Chromium,
and a new user's page that fails its test on a script error or a Content-Security-Policy block."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.helpers.chat import browser_sign_up
from tests.helpers.fake_openai import FakeOpenAI
from tests.helpers.servers import daphne, migrate, site_env

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]

# A browser test file's `pytestmark`.
MARKS = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not os.path.exists(CHROMIUM) and not os.environ.get("CI"),
        reason="Debian's chromium package is not installed (make test installs it as root)",
    ),
]


@contextlib.contextmanager
def site(database: Path, fake_openai: FakeOpenAI, **settings: str) -> Iterator[str]:
    """Daphne serving the project (migrated) on `database`; its address."""
    env = site_env(fake_openai, database, SECRET_KEY="browser-test", **settings)
    migrate(env)
    with daphne(env) as url:
        yield url


@contextlib.contextmanager
def chromium() -> Iterator[Browser]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            yield browser
        finally:
            browser.close()


def signed_up(context: BrowserContext, base_url: str) -> Page:
    """A new user's new conversation, connected; its script errors collect in `page.errors`."""
    from playwright.sync_api import expect

    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.errors = errors  # type: ignore[attr-defined]
    browser_sign_up(page, base_url)
    expect(page.locator("#connection")).to_have_attribute("data-state", "connected")
    return page


def assert_clean(page: Page) -> None:
    """No script error on the page and nothing its Content-Security-Policy blocked."""
    assert page.evaluate("window.cspViolations") == []
    assert page.errors == []  # type: ignore[attr-defined]


@contextlib.contextmanager
def conversation_page(context: BrowserContext, base_url: str) -> Iterator[Page]:
    """`signed_up`, checked with `assert_clean` at the end."""
    page = signed_up(context, base_url)
    yield page
    assert_clean(page)


def send(page: Page, text: str) -> None:
    box = page.locator("#composer textarea")
    box.fill(text)
    box.press("Enter")
