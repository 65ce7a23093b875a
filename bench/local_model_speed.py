"""Tokens per second of the embedded local model, as `make run` serves it.

Run with `.venv/bin/python bench/local_model_speed.py`; it starts llama.cpp's server on a free port,
asks for a few answers and prints prompt and generation speed, measured by the client and as
llama.cpp's own timings report them.
"""

from __future__ import annotations

import json
import os
import re
import socket
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
os.environ.setdefault("SECRET_KEY", "bench")

import django

django.setup()

from conversations import local_model  # noqa: E402

PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."
TOKENS = 128
RUNS = 5


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def stream_once(port: int) -> tuple[int, float]:
    """Stream one answer; the number of content chunks and the seconds from first to last."""
    body = json.dumps(
        {
            "model": "local",
            "messages": [{"role": "user", "content": f"{time.time_ns()} {PROMPT}"}],
            "max_tokens": TOKENS,
            "temperature": 0,
            "stream": True,
        }
    ).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        body,
        {"Content-Type": "application/json"},
    )
    stamps = []
    with urllib.request.urlopen(request, timeout=120) as response:
        for line in response:
            if line.startswith(b"data: {") and b'"content"' in line:
                stamps.append(time.perf_counter())
    return len(stamps), stamps[-1] - stamps[0]


def main() -> None:
    log = Path(tempfile.mkdtemp()) / "server.log"
    port = free_port()
    server = local_model.start_server(port=port, log_path=log)
    try:
        stream_once(port)  # warm-up
        rates = []
        for _ in range(RUNS):
            chunks, seconds = stream_once(port)
            rates.append((chunks - 1) / seconds)
    finally:
        local_model.stop_server(server)
    text = log.read_text(errors="replace")
    rate = r"eval time =.*?([\d.]+) tokens per second"
    eval_rates = [float(x) for x in re.findall(rf"(?<!prompt ){rate}", text)]
    prompt_rates = [float(x) for x in re.findall(rf"prompt {rate}", text)]
    features = re.search(r"CPU : .*", text)
    if features:
        print(features.group(0)[:300])
    print(
        f"client-measured generation: median {statistics.median(rates):.1f} tokens/s "
        f"({', '.join(f'{r:.1f}' for r in rates)})"
    )
    if eval_rates:
        print(f"llama.cpp eval: median {statistics.median(eval_rates):.1f} tokens/s")
    if prompt_rates:
        print(f"llama.cpp prompt eval: median {statistics.median(prompt_rates):.1f} tokens/s")


if __name__ == "__main__":
    main()
