"""The Chainlit peer: the minimal idiomatic Chainlit app that relays a model's stream.

    cd bench/chainlit_peer && UPSTREAM_BASE_URL=http://127.0.0.1:9100/v1 \\
        ../.venv-chainlit/bin/chainlit run app.py --headless --port 9200 --host 127.0.0.1

It is the streaming example of Chainlit's documentation pointed at the benchmark's upstream: one
shared AsyncOpenAI client, and for each user message a `cl.Message` that gets every content delta
through `stream_token` and is closed with `update()`. No data layer, no auth, no instrumentation.

Run it from this folder: Chainlit reads `.chainlit/config.toml` from its working directory and,
when missing, writes its defaults there (`.chainlit/`, `chainlit.md`, `.files/`, all git-ignored).
Chainlit 2.12 has no telemetry setting any more and fetches nothing at start; it only calls out
when a data layer, OAuth, MCP servers or Slack/Teams/Discord are configured, and none are.
"""

from __future__ import annotations

import os

import chainlit as cl
from openai import AsyncOpenAI

client = AsyncOpenAI(base_url=os.environ["UPSTREAM_BASE_URL"], api_key="x")


@cl.on_message
async def on_message(message: cl.Message) -> None:
    reply = cl.Message(content="")
    stream = await client.chat.completions.create(
        model="bench-model",
        messages=[{"role": "user", "content": message.content}],
        stream=True,
    )
    async for chunk in stream:
        if chunk.choices and (token := chunk.choices[0].delta.content):
            await reply.stream_token(token)
    await reply.update()  # type: ignore[no-untyped-call]
