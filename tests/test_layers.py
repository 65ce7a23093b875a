"""The import-linter contracts in pyproject.toml: kept by the code, broken by an arrow up."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--config", str(ROOT / "pyproject.toml")],
        cwd=tree,
        env={**os.environ, "PYTHONPATH": str(tree)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_code_keeps_the_layers() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


def test_an_import_from_a_higher_layer_breaks_them(tmp_path: Path) -> None:
    shutil.copytree(
        ROOT / "conversations", tmp_path / "conversations", ignore=shutil.ignore_patterns("*.pyc")
    )
    # The stream reaching up to the runner: the kind of import the contract exists to stop.
    events = tmp_path / "conversations" / "live" / "events.py"
    events.write_text(events.read_text() + "\nfrom .. import runner  # noqa: E402, F401\n")
    core = tmp_path / "conversations" / "streaming" / "tools.py"
    core.write_text(core.read_text() + "\nimport django  # noqa: E402, F401\n")
    result = lint_imports(tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "0 kept, 2 broken" in result.stdout
    assert "conversations.live.events -> conversations.runner" in result.stdout
    assert "conversations.streaming.tools -> django" in result.stdout
