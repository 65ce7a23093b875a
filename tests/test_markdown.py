"""Finished answers as HTML: highlighted code, tables, and what the sanitiser lets through."""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser

import pytest

from conversations.markdown import render_markdown


@dataclass
class Element:
    tag: str
    attributes: dict[str, str | None]
    text: str = ""
    children: list[Element] = field(default_factory=list)


class Tree(HTMLParser):
    """The elements of an HTML fragment, each with the text inside it."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.elements: list[Element] = []
        self.open: list[Element] = []
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, dict(attrs))
        if self.open:
            self.open[-1].children.append(element)
        self.elements.append(element)
        if tag not in {"br", "hr", "img"}:
            self.open.append(element)

    def handle_endtag(self, tag: str) -> None:
        while self.open and self.open.pop().tag != tag:
            pass

    def handle_data(self, data: str) -> None:
        for element in self.open:
            element.text += data

    def find(self, tag: str) -> list[Element]:
        return [element for element in self.elements if element.tag == tag]


def rendered(markdown: str) -> Tree:
    return Tree(str(render_markdown(markdown)))


def assert_no_style_or_handlers(tree: Tree) -> None:
    for element in tree.elements:
        for name in element.attributes:
            assert name != "style" and not name.startswith("on"), (element.tag, name)


def test_a_python_block_is_highlighted_with_pygments_classes() -> None:
    code = 'def greet(name):\n    return "hello " + name  # friendly\n'
    tree = rendered(f"Here:\n\n```python\n{code}```\n")

    (pre,) = tree.find("pre")
    assert pre.attributes == {"class": "highlight"}
    assert pre.text == code
    spans = {(span.attributes["class"], span.text) for span in tree.find("span")}
    assert {("k", "def"), ("nf", "greet"), ("s2", '"hello "'), ("c1", "# friendly")} <= spans
    assert_no_style_or_handlers(tree)


def test_the_language_name_is_not_case_sensitive() -> None:
    tree = rendered("```Python\nimport os\n```\n")
    assert ("kn", "import") in {(span.attributes["class"], span.text) for span in tree.find("span")}


@pytest.mark.parametrize(
    "fence",
    [
        '```"><script>alert(1)</script>\n<script>alert(2)</script>\n```\n',
        '```python" onmouseover="alert(1)\n<script>alert(2)</script>\n```\n',
        "```javascript\n<script>alert(2)</script>\n```\n",
        "```html\n<script>alert(2)</script><img src=x onerror=alert(3)>\n```\n",
    ],
)
def test_hostile_code_and_language_names_stay_text(fence: str) -> None:
    html = str(render_markdown(fence))
    tree = Tree(html)

    assert not tree.find("script") and not tree.find("img")
    assert "<script" not in html
    (pre,) = tree.find("pre")
    assert "<script>alert(2)</script>" in pre.text
    for element in tree.elements:
        assert set(element.attributes) <= {"class"}, element
    assert_no_style_or_handlers(tree)


@pytest.mark.parametrize("language", ["", "no-such-language", "text/x-weird"])
def test_a_block_in_an_unknown_or_no_language_is_escaped_plain_text(language: str) -> None:
    code = "if a < b && c > d:\n    print('<b>')\n"
    tree = rendered(f"```{language}\n{code}```\n")

    (pre,) = tree.find("pre")
    assert pre.attributes == {}
    assert [child.tag for child in pre.children] == ["code"]
    assert pre.children[0].attributes == {}
    assert pre.text == code
    assert not tree.find("span") and not tree.find("b")


def test_an_indented_block_is_plain_text_too() -> None:
    tree = rendered("Code:\n\n    x = '<i>'\n")
    (pre,) = tree.find("pre")
    assert pre.text == "x = '<i>'\n"
    assert not tree.find("span") and not tree.find("i")


def test_a_table_renders_with_its_header_and_cells() -> None:
    tree = rendered(
        "| Language | Typing |\n| :--- | ---: |\n| Python | dynamic |\n| Rust | **static** |\n"
    )

    (table,) = tree.find("table")
    assert [th.text for th in tree.find("th")] == ["Language", "Typing"]
    assert [td.text for td in tree.find("td")] == ["Python", "dynamic", "Rust", "static"]
    assert [strong.text for strong in tree.find("strong")] == ["static"]
    # markdown-it aligns columns with style="text-align: …": the sanitiser drops it.
    assert_no_style_or_handlers(tree)
    assert table.attributes == {}


def test_raw_html_and_script_links_do_not_survive() -> None:
    html = str(
        render_markdown(
            '<span style="color: red" onclick="alert(1)">hi</span>\n\n'
            "[click](javascript:alert(1)) ![x](x onerror=alert(1))\n\n"
            '<pre class="highlight" style="x"><span class="k" onclick="y">z</span></pre>\n'
        )
    )
    tree = Tree(html)

    assert not tree.find("script")
    assert all("javascript:" not in (a.attributes.get("href") or "") for a in tree.find("a"))
    assert not tree.find("pre") and not tree.find("span")
    assert_no_style_or_handlers(tree)


def test_a_tables_column_alignment_becomes_a_class_not_a_style() -> None:
    html = render_markdown("| a | b | c |\n|:--|:-:|--:|\n| 1 | 2 | 3 |")

    assert '<th class="align-left">a</th>' in html
    assert '<th class="align-center">b</th>' in html
    assert '<td class="align-right">3</td>' in html
    assert "style" not in html
