"""An MCP server's tool in a real browser: the card names the server, asks first, shows the
call's progress as a bar that moves, and Stop ends it; the server heard the cancellation."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.helpers.browser import MARKS, chromium, conversation_page, send, site
from tests.helpers.fake_openai import FakeOpenAI, sse, tool_calls_stream
from tests.helpers.mcp import faults_stdio, marked, servers_file

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = MARKS

ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS", Path(__file__).parent.parent / "test-artifacts"))


@pytest.fixture
def markers(tmp_path: Path) -> Path:
    folder = tmp_path / "markers"
    folder.mkdir()
    return folder


@pytest.fixture
def page(tmp_path: Path, fake_openai: FakeOpenAI, markers: Path) -> Iterator[Page]:
    mcp = servers_file(tmp_path, {"faults": faults_stdio(markers)})
    with (
        site(tmp_path / "db.sqlite3", fake_openai, MCP_SERVERS_FILE=str(mcp)) as url,
        chromium() as browser,
    ):
        context = browser.new_context(viewport={"width": 900, "height": 700})
        with conversation_page(context, url) as page:
            yield page


def test_the_card_asks_first_shows_progress_and_stop_cancels_it_on_the_server(
    page: Page, fake_openai: FakeOpenAI, markers: Path
) -> None:
    from playwright.sync_api import expect

    fake_openai.queue(sse(tool_calls_stream([("faults__slow", json.dumps({"seconds": 60}))])))
    send(page, "Work slowly")
    card = page.locator(".tool-card")
    expect(card).to_have_attribute("data-status", "awaiting_approval", timeout=15_000)
    expect(card.locator(".tool-server")).to_have_text("faults")
    expect(card.locator(".tool-name")).to_have_text("slow")
    assert marked(markers, "slow") == [], "nothing ran before the approval"

    card.locator("button.approve").click()
    bar = card.locator(".tool-progress progress")
    expect(bar).to_be_visible(timeout=15_000)
    first = int(bar.get_attribute("value") or 0)
    expect(card.locator(".progress-message")).to_contain_text("step ")
    deadline = time.monotonic() + 10
    while int(bar.get_attribute("value") or 0) <= first:
        assert time.monotonic() < deadline, "the bar moved"
        page.wait_for_timeout(100)

    folder = ARTIFACTS / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / "mcp-progress.png"))
    page.locator("button.stop").click()
    expect(card).to_have_attribute("data-status", "cancelled", timeout=15_000)
    expect(page.locator(".message.role-assistant")).to_have_attribute(
        "data-status", "cancelled", timeout=15_000
    )
    deadline = time.monotonic() + 10
    while marked(markers, "slow") != ["started", "cancelled"]:
        assert time.monotonic() < deadline, "the server heard the cancellation"
        time.sleep(0.1)
    # The card keeps what it last showed of the call, without the bar.
    expect(card.locator(".tool-progress")).to_have_count(0)
