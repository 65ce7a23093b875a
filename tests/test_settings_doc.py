"""The docs against the code: docs/settings.md lists exactly the environment variables that
chatsite/settings.py reads, and every relative link in README.md and docs/*.md resolves inside
the repository. Reads files only: no Django, no database."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = ROOT / "chatsite" / "settings.py"
SETTINGS_DOC = ROOT / "docs" / "settings.md"
NAME = re.compile(r"`([A-Z][A-Z0-9_]*)`")


def is_environ(node: ast.AST) -> bool:
    """`os.environ` (or a bare `environ` imported from os)."""
    if isinstance(node, ast.Attribute):
        return node.attr == "environ" and isinstance(node.value, ast.Name) and node.value.id == "os"
    return isinstance(node, ast.Name) and node.id == "environ"


def environment_reads(node: ast.AST) -> list[ast.expr]:
    """The key expressions of every environment read under `node`: `os.environ.get(key, ...)`,
    `os.environ[key]`, `os.getenv(key, ...)`, `key in os.environ`."""
    keys: list[ast.expr] = []
    for child in ast.walk(node):
        if isinstance(child, ast.Call) and child.args:
            function = child.func
            if isinstance(function, ast.Attribute) and (
                (function.attr in {"get", "pop", "setdefault"} and is_environ(function.value))
                or (
                    function.attr == "getenv"
                    and isinstance(function.value, ast.Name)
                    and function.value.id == "os"
                )
            ):
                keys.append(child.args[0])
        elif isinstance(child, ast.Subscript) and is_environ(child.value):
            keys.append(child.slice)
        elif (
            isinstance(child, ast.Compare)
            and len(child.ops) == 1
            and isinstance(child.ops[0], ast.In | ast.NotIn)
            and is_environ(child.comparators[0])
        ):
            keys.append(child.left)
    return keys


def read_variables(source: str) -> set[str]:
    """Every environment variable `source` reads, directly or through a helper of its own (a
    function that reads the variable named by one of its parameters, such as `env_bool(name)`)."""
    tree = ast.parse(source)
    helpers: dict[str, int] = {}  # helper name -> position of the parameter naming the variable
    for function in ast.walk(tree):
        if not isinstance(function, ast.FunctionDef):
            continue
        parameters = [argument.arg for argument in function.args.args]
        for key in environment_reads(function):
            if isinstance(key, ast.Name) and key.id in parameters:
                helpers[function.name] = parameters.index(key.id)
    helper_parameters = {
        argument.arg
        for function in ast.walk(tree)
        if isinstance(function, ast.FunctionDef) and function.name in helpers
        for argument in function.args.args
    }
    names: set[str] = set()
    # A name computed at run time could not be checked against the docs.
    unread: list[str] = []
    for key in environment_reads(tree):
        if isinstance(key, ast.Constant) and isinstance(key.value, str):
            names.add(key.value)
        elif not (isinstance(key, ast.Name) and key.id in helper_parameters):
            unread.append(ast.unparse(key))
    for call in ast.walk(tree):
        if (
            isinstance(call, ast.Call)
            and isinstance(call.func, ast.Name)
            and call.func.id in helpers
            and len(call.args) > helpers[call.func.id]
        ):
            key = call.args[helpers[call.func.id]]
            if isinstance(key, ast.Constant) and isinstance(key.value, str):
                names.add(key.value)
            else:
                unread.append(ast.unparse(key))
    assert not unread, f"settings.py reads variables whose names are not literals: {unread}"
    return names


def documented_variables(markdown: str) -> list[str]:
    """The variables the tables of `markdown` document: each backticked NAME in a row's first
    cell (a row may name two, as `A`, `B`). Header and separator rows name none."""
    names: list[str] = []
    in_code = False
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            in_code = not in_code
        if in_code or not line.startswith("|"):
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        first = cells[0]
        if set(first) <= set("-: ") or first == "variable":
            continue
        found = NAME.findall(first)
        assert found, f"a settings row names no variable: {line}"
        assert len(cells) >= 3 and all(cells[:3]), f"a row lacks a default or meaning: {line}"
        names.extend(found)
    return names


def test_the_reader_finds_what_settings_py_reads() -> None:
    # The parser itself, on a small module using every form it must recognise.
    source = (
        "import os\n"
        "def env_flag(name, default=False):\n"
        "    return os.environ.get(name, '') == '1'\n"
        "A = os.environ.get('ALPHA', '')\n"
        "B = os.environ['BETA']\n"
        "C = env_flag('GAMMA')\n"
        "D = os.getenv('DELTA')\n"
        "E = 'EPSILON' in os.environ\n"
    )
    assert read_variables(source) == {"ALPHA", "BETA", "GAMMA", "DELTA", "EPSILON"}
    table = (
        "| variable | default | meaning |\n| --- | --- | --- |\n"
        "| `ALPHA` | empty | The first. |\n| `BETA`, `GAMMA` | off | Two. |\n"
    )
    assert documented_variables(table) == ["ALPHA", "BETA", "GAMMA"]


def test_docs_settings_lists_exactly_the_variables_settings_py_reads() -> None:
    read = read_variables(SETTINGS.read_text())
    documented = documented_variables(SETTINGS_DOC.read_text())
    # settings.py reads dozens: finding only a few means the reader above missed its way of reading.
    assert len(read) >= 40 and {"SECRET_KEY", "DATABASE_URL", "LLM_TIMEOUT"} <= read

    repeated = sorted({name for name in documented if documented.count(name) > 1})
    assert not repeated, f"docs/settings.md documents these more than once: {repeated}"
    missing = sorted(read - set(documented))
    assert not missing, f"chatsite/settings.py reads these, docs/settings.md lacks a row: {missing}"
    unknown = sorted(set(documented) - read)
    assert not unknown, f"docs/settings.md documents these, settings.py never reads: {unknown}"


LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HTML_LINK = re.compile(r"""<(?:a|img)\b[^>]*?\b(?:href|src)=["']([^"']+)["']""", re.IGNORECASE)
AUTOLINK = re.compile(r"<((?:[a-z][a-z0-9+.-]*):[^>\s]+)>", re.IGNORECASE)
SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)


def prose(markdown: str) -> str:
    """`markdown` without fenced code blocks and inline code, where brackets are not links."""
    kept: list[str] = []
    in_code = False
    for line in markdown.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            in_code = not in_code
            continue
        if not in_code:
            kept.append(re.sub(r"`+[^`]*`+", "", line))
    return "\n".join(kept)


def anchors(markdown: str) -> set[str]:
    """The anchors of `markdown`'s headings, as GitHub makes them."""
    found: set[str] = set()
    in_code = False
    for line in markdown.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            in_code = not in_code
        elif not in_code and (heading := re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)):
            text = heading.group(1).lower().replace("`", "")
            found.add(re.sub(r"[^\w\- ]", "", text).replace(" ", "-"))
    return found


def test_every_link_in_the_docs_stays_in_the_repository_and_resolves() -> None:
    documents = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    problems: list[str] = []
    links = 0
    for document in documents:
        text = prose(document.read_text())
        targets = LINK.findall(text) + HTML_LINK.findall(text) + AUTOLINK.findall(text)
        for target in targets:
            links += 1
            where = f"{document.relative_to(ROOT)}: {target}"
            if SCHEME.match(target) or target.startswith("//"):
                problems.append(f"{where} leaves the repository")
                continue
            path, _, anchor = target.partition("#")
            resolved = (document.parent / path).resolve() if path else document
            if not resolved.is_relative_to(ROOT):
                problems.append(f"{where} points outside the repository")
            elif not resolved.exists():
                problems.append(f"{where} does not exist")
            elif (
                resolved.suffix == ".md" and anchor and anchor not in anchors(resolved.read_text())
            ):
                problems.append(f"{where}: no such heading")
    assert links >= 10, "no links found: the link pattern is broken"
    assert not problems, "\n".join(problems)
