"""The chat page as a whole in a real browser: an axe-core scan finds no serious or critical
problem (light and dark), hostile text in messages, answers and tool calls runs nothing, and the
main states are saved as screenshots (test-artifacts/screenshots/, or $TEST_ARTIFACTS)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.helpers.browser import MARKS, chromium, site
from tests.helpers.browser import signed_up as new_conversation
from tests.helpers.fake_openai import FakeOpenAI, sse, text_stream, tool_calls_stream

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS", Path(__file__).parent.parent / "test-artifacts"))

pytestmark = MARKS

ANSWER = """## A table and some code

| Fruit | Price |
|-------|------:|
| Apple | 1.20 |
| Pear | 0.95 |

```python
def total(prices):
    return sum(prices)
```

Done: **two** fruits, see [the docs](https://example.com/docs).
"""

# Each sets window.xss if it ever runs.
PAYLOADS = [
    '<img src=x onerror="window.xss=1">',
    "<script>window.xss=2</script>",
    '<svg onload="window.xss=3"></svg>',
    '"><iframe srcdoc="<script>parent.xss=4</script>"></iframe>',
    "[click me](javascript:window.xss=5)",
    '<a href="javascript:window.xss=6">link</a>',
    "{{ 7*7 }} {% debug %}",
]
HOSTILE = "\n\n".join(PAYLOADS)


@pytest.fixture
def server(tmp_path: Path, fake_openai: FakeOpenAI) -> Iterator[str]:
    with site(tmp_path / "db.sqlite3", fake_openai) as url:
        yield url


@pytest.fixture
def browser() -> Iterator[Browser]:
    with chromium() as browser:
        yield browser


def signed_up(browser: Browser, server: str, **context_options: Any) -> Page:
    """A new user's new conversation in a new context, connected."""
    return new_conversation(browser.new_context(**context_options), server)


def ask(page: Page, text: str, *, answers: int) -> None:
    from playwright.sync_api import expect

    box = page.locator("#composer textarea")
    box.fill(text)
    box.press("Enter")
    expect(page.locator(".message.role-assistant")).to_have_count(answers, timeout=15_000)
    expect(page.locator(".message.role-assistant").last).not_to_have_attribute(
        "data-status", "streaming", timeout=15_000
    )


def screenshot(page: Page, name: str) -> None:
    folder = ARTIFACTS / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


def serious_violations(page: Page) -> list[str]:
    from axe_playwright_python.sync_playwright import Axe

    # A transition caught halfway (a footer fading in) is measured at its partial opacity: scan
    # the page as it settles, not as it moves.
    page.evaluate(
        "Promise.all(document.getAnimations()"
        ".filter(a => a instanceof CSSTransition).map(a => a.finished.catch(() => null)))"
    )
    results = Axe().run(page)
    assert results.response["passes"], "axe-core checked nothing"
    found = results.response["violations"]
    for violation in found:
        print(violation["impact"], violation["id"], violation["help"], len(violation["nodes"]))
    return [
        f"{v['id']}: {v['help']} ({[node['target'] for node in v['nodes']]})"
        for v in found
        if v["impact"] in ("serious", "critical")
    ]


def conversation_with_everything(page: Page, fake_openai: FakeOpenAI) -> None:
    """An answer with a table and code, and a tool call with its result."""
    fake_openai.queue(sse(text_stream(ANSWER)))
    fake_openai.queue(sse(tool_calls_stream([("calculator", json.dumps({"expression": "17*23"}))])))
    fake_openai.queue(sse(text_stream("17 × 23 = **391**.")))
    ask(page, "Show me a table and some code", answers=1)
    ask(page, "What is 17*23?", answers=2)


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_an_axe_scan_of_the_chat_page_finds_nothing_serious(
    browser: Browser, server: str, fake_openai: FakeOpenAI, scheme: str
) -> None:
    page = signed_up(browser, server, color_scheme=scheme, viewport={"width": 1280, "height": 900})
    conversation_with_everything(page, fake_openai)
    screenshot(page, f"chat-{scheme}")
    assert serious_violations(page) == []

    page.goto(f"{server}/")
    screenshot(page, f"list-{scheme}")
    assert serious_violations(page) == []
    assert page.evaluate("window.cspViolations") == []
    assert page.errors == []  # type: ignore[attr-defined]


def test_an_axe_scan_on_a_phone_finds_nothing_serious(
    browser: Browser, server: str, fake_openai: FakeOpenAI
) -> None:
    page = signed_up(
        browser,
        server,
        viewport={"width": 390, "height": 844},
        is_mobile=True,
        has_touch=True,
        device_scale_factor=2,
    )
    conversation_with_everything(page, fake_openai)
    screenshot(page, "chat-phone")
    assert serious_violations(page) == []


def test_hostile_text_in_messages_answers_and_tool_calls_runs_nothing(
    browser: Browser, server: str, fake_openai: FakeOpenAI
) -> None:
    from playwright.sync_api import expect

    page = signed_up(browser, server)
    fake_openai.queue(sse(text_stream(HOSTILE)))
    fake_openai.queue(
        sse(tool_calls_stream([("calculator", json.dumps({"expression": PAYLOADS[0]}))]))
    )
    fake_openai.queue(sse(text_stream(PAYLOADS[2])))
    ask(page, HOSTILE, answers=1)
    ask(page, PAYLOADS[0], answers=2)
    # Reloaded, every message comes from the server's page render rather than the stream.
    page.reload()
    expect(page.locator(".message")).to_have_count(4)
    screenshot(page, "hostile-text")

    assert page.evaluate("window.xss") is None
    for selector in ["img[src=x]", "iframe", "svg[onload]", "script:not([src])", "[onerror]"]:
        assert page.locator(f"#messages {selector}").count() == 0, selector
    assert page.locator('#messages a[href^="javascript:"]').count() == 0
    # The user's text is shown as typed; so is the tool's input.
    expect(page.locator(".message.role-user").first).to_contain_text(
        "<script>window.xss=2</script>"
    )
    expect(page.locator(".tool-card").first).to_contain_text(PAYLOADS[0])
    expect(page.locator(".message.role-assistant").first).to_contain_text("{{ 7*7 }}")
    assert page.evaluate("window.cspViolations") == []
    assert page.errors == []  # type: ignore[attr-defined]
