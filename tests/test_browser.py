"""A real browser on the chat page served by Daphne: the htmx WebSocket wiring end to end."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.browser import MARKS, chromium, site
from tests.helpers.chat import browser_sign_up
from tests.helpers.fake_openai import FakeOpenAI, sse, text_stream, tool_calls_stream

pytestmark = MARKS


@pytest.fixture
def daphne_server(tmp_path: Path, fake_openai: FakeOpenAI) -> Iterator[str]:
    """Daphne serving the project on a fresh SQLite file, its model the loopback server."""
    with site(tmp_path / "db.sqlite3", fake_openai) as url:
        yield url


def test_a_message_streams_back_with_a_tool_card(
    daphne_server: str, fake_openai: FakeOpenAI
) -> None:
    from playwright.sync_api import expect

    fake_openai.queue(
        sse(
            tool_calls_stream([("calculator", json.dumps({"expression": "17*23"}))]),
            delay=0.05,
        )
    )
    answer = "The product of seventeen and twenty-three is 391, computed with the calculator."
    fake_openai.queue(sse(text_stream(answer), delay=0.12))

    with chromium() as browser:
        page = browser.new_page()
        # Whatever the Content-Security-Policy blocks, as the console and the page see it.
        console: list[str] = []
        signup = browser_sign_up(page, daphne_server)
        assert signup is not None
        assert "script-src 'self' 'nonce-" in signup.headers["content-security-policy"]
        expect(page.locator("textarea[name=message]")).to_be_visible()
        # Record every distinct text the answer shows while it streams.
        page.evaluate(
            """() => {
              window.seenTexts = [];
              new MutationObserver(() => {
                const parts = document.querySelectorAll('.message.role-assistant .text');
                const text = Array.from(parts, (part) => part.textContent).join('');
                if (text && window.seenTexts.at(-1) !== text) window.seenTexts.push(text);
              }).observe(document.body, {subtree: true, childList: true, characterData: true});
            }"""
        )
        page.fill("textarea[name=message]", "what is 17*23?")
        page.keyboard.press("Enter")

        card = page.locator(".tool-card")
        expect(card).to_have_attribute("data-status", "succeeded", timeout=15_000)
        expect(card).to_contain_text("391")
        assistant = page.locator(".message.role-assistant")
        expect(assistant).to_have_attribute("data-status", "complete", timeout=15_000)
        expect(assistant.locator(".text")).to_have_text(answer)
        seen = page.evaluate("window.seenTexts")
        partial = [text for text in seen if text != answer and answer.startswith(text)]
        assert len(partial) >= 3, f"expected the answer in several steps, saw {seen}"
        # The composer was cleared for the next message.
        expect(page.locator("textarea[name=message]")).to_have_value("")
        assert page.evaluate("window.cspViolations") == []
        assert not [line for line in console if "Content Security Policy" in line], console


def test_a_call_that_asks_first_is_denied_then_approved_from_the_page(
    daphne_server: str, fake_openai: FakeOpenAI
) -> None:
    from playwright.sync_api import expect

    for title, answer in (("Nope", "I left the title alone."), ("Kyoto", "Renamed it.")):
        fake_openai.queue(
            sse(tool_calls_stream([("rename_conversation", json.dumps({"title": title}))]))
        )
        fake_openai.queue(sse(text_stream(answer)))

    with chromium() as browser:
        page = browser.new_page()
        browser_sign_up(page, daphne_server)

        page.fill("textarea[name=message]", "call it Nope")
        page.keyboard.press("Enter")
        card = page.locator(".tool-card").first
        expect(card).to_have_attribute("data-status", "awaiting_approval", timeout=15_000)
        expect(card).to_contain_text("Waiting for your approval")
        card.locator("input[name=reason]").fill("Not <that> one.")
        card.locator("button", has_text="Deny").click()
        expect(card).to_have_attribute("data-status", "denied", timeout=15_000)
        expect(card).to_contain_text("Denied by walter: Not <that> one.")
        expect(card.locator("button")).to_have_count(0)
        assistant = page.locator(".message.role-assistant").first
        expect(assistant).to_have_attribute("data-status", "complete", timeout=15_000)

        page.fill("textarea[name=message]", "call it Kyoto")
        page.keyboard.press("Enter")
        second = page.locator(".tool-card").nth(1)
        expect(second).to_have_attribute("data-status", "awaiting_approval", timeout=15_000)
        second.locator("button", has_text="Approve").click()
        expect(second).to_have_attribute("data-status", "succeeded", timeout=15_000)
        expect(second).to_contain_text("Approved by walter")
        expect(page.locator(".message.role-assistant").nth(1)).to_contain_text("Renamed it.")
        page.reload()
        expect(page.locator("#conversation-title")).to_have_text("Kyoto")
        expect(page.locator(".tool-card").first).to_contain_text("Not <that> one.")
        assert page.evaluate("window.cspViolations") == []


def test_a_finished_answer_shows_highlighted_code_a_copy_button_a_table_and_a_dark_scheme(
    daphne_server: str, fake_openai: FakeOpenAI
) -> None:
    from playwright.sync_api import expect

    code = 'def area(radius: float) -> float:\n    return 3.14159 * radius ** 2  # "<pi>"\n'
    answer = (
        f"Here is the function:\n\n```python\n{code}```\n\n"
        "| Shape | Area |\n| --- | --- |\n| circle | πr² |\n| square | a² |\n"
    )
    fake_openai.queue(sse(text_stream(answer), delay=0.02))

    with chromium() as browser:
        context = browser.new_context(permissions=["clipboard-read", "clipboard-write"])
        page = context.new_page()
        browser_sign_up(page, daphne_server)
        messages = page.locator("#messages")
        expect(messages).to_have_attribute("role", "log")
        expect(messages).to_have_attribute("aria-live", "polite")

        page.fill("textarea[name=message]", "the area of a circle, in Python?")
        page.keyboard.press("Enter")
        assistant = page.locator(".message.role-assistant")
        expect(assistant).to_have_attribute("aria-busy", "true", timeout=15_000)
        expect(assistant).to_have_attribute("data-status", "complete", timeout=15_000)
        expect(assistant).not_to_have_attribute("aria-busy", "true")
        # The list was swapped over the socket (connect, then the new turn): still a log.
        expect(messages).to_have_attribute("role", "log")
        expect(messages).to_have_attribute("aria-live", "polite")

        block = assistant.locator(".code-block")
        expect(block.locator("pre.highlight span.k").first).to_have_text("def")
        expect(block.locator("span.nf")).to_have_text("area")
        expect(block.locator("pre")).to_have_text(code)
        expect(assistant.locator("table th")).to_have_text(["Shape", "Area"])
        expect(assistant.locator("table td")).to_have_count(4)

        copy = block.locator("button.copy-code")
        expect(copy).to_have_accessible_name("Copy")
        copy.click()
        expect(copy).to_have_text("Copied")
        assert page.evaluate("navigator.clipboard.readText()") == code
        expect(copy).to_have_text("Copy", timeout=5_000)
        # The button is a real button: the keyboard reaches it and Enter presses it.
        page.evaluate("navigator.clipboard.writeText('')")
        copy.focus()
        page.keyboard.press("Enter")
        expect(copy).to_have_text("Copied")
        assert page.evaluate("navigator.clipboard.readText()") == code

        def colour(selector: str, property: str = "backgroundColor") -> tuple[int, ...]:
            value = page.eval_on_selector(
                selector, f"(element) => getComputedStyle(element).{property}"
            )
            return tuple(int(part) for part in value[4:-1].split(",")[:3])

        assert sum(colour("body")) > 600
        keyword_light = colour("span.k", "color")
        page.emulate_media(color_scheme="dark")
        assert sum(colour("body")) < 150
        assert sum(colour(".message.role-assistant")) < 150
        assert sum(colour(".code-block pre")) < 150
        assert colour("span.k", "color") != keyword_light
        assert page.evaluate("window.cspViolations") == []
