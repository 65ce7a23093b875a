"""Loaded first (`-p tests.helpers.environment`): a test environment independent of the caller's
shell."""

from __future__ import annotations

import os

os.environ.setdefault("SECRET_KEY", "tests-only-not-secret")
for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "LLM_MODEL", "DEBUG"):
    os.environ.pop(name, None)
# No background sweeper in the tests' event loops unless a test asks for one (test_sweeper.py).
os.environ.setdefault("CHAT_SWEEP_INTERVAL", "0")
# No title requests after first answers (they would count among the model server's requests)
# unless a test turns them on (test_titles.py).
os.environ.setdefault("CHAT_GENERATE_TITLES", "0")
