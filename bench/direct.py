"""The limit: C streams consumed straight from the upstream with the openai SDK, no relay.

    .venv/bin/python bench/direct.py --upstream http://127.0.0.1:9100/v1 --streams 100 --out r.json

One AsyncOpenAI client, C concurrent streams started together; every token is timed as the SDK
hands it over. The process's own CPU time per token is the baseline cost of parsing a stream.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import time
from pathlib import Path

import openai
from tally import Answer, summary


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def consume(
    client: openai.AsyncOpenAI, answer: Answer, start: asyncio.Event, question: str = "go"
) -> None:
    await start.wait()
    try:
        stream = await client.chat.completions.create(
            model="bench-model",
            messages=[{"role": "user", "content": question}],
            stream=True,
        )
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                answer.streamed(chunk.choices[0].delta.content, time.time_ns() // 1000)
        answer.finished = True
    except openai.OpenAIError as error:
        answer.failed = str(error)[:200]


async def run(upstream: str, streams: int, tokens: int) -> dict[str, object]:
    client = openai.AsyncOpenAI(base_url=upstream, api_key="bench", max_retries=0)
    # Warm up: the SDK's first-use work is not what is measured.
    ready = asyncio.Event()
    ready.set()
    await consume(client, Answer(2), ready, "tokens=2")
    answers = [Answer(tokens) for _ in range(streams)]
    start = asyncio.Event()
    tasks = [asyncio.create_task(consume(client, answer, start)) for answer in answers]
    cpu, wall = cpu_seconds(), time.monotonic()
    start.set()
    await asyncio.gather(*tasks)
    result = summary("direct SDK", answers, time.monotonic() - wall)
    result["cpu_s"] = cpu_seconds() - cpu
    await client.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--streams", type=int, required=True)
    parser.add_argument("--tokens", type=int, default=100)
    parser.add_argument("--out", type=Path, required=True)
    options = parser.parse_args()
    result = asyncio.run(run(options.upstream, options.streams, options.tokens))
    options.out.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
