"""Recorded-style transcripts of each real server's stream, read by the real SDK over HTTP."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import openai
import pytest

from conversations.streaming.chat_completions import stream_chat_completion
from conversations.streaming.events import (
    Finished,
    ProviderEvent,
    ReasoningDelta,
    StreamError,
    TextDelta,
    ToolArgumentsDelta,
    ToolCallReady,
    ToolCallStarted,
    Usage,
)
from tests.fake_openai import Completion, FakeOpenAI, json_body, sse, tool_calls_stream

CREATED = 1767225600
TWO_PLUS_TWO = '{"expression": "2+2"}'
TOKYO = '{"timezone": "Asia/Tokyo"}'


@dataclass
class Server:
    """The envelope a server puts around every chunk, and the extra fields on each choice."""

    envelope: dict[str, Any]
    choice: dict[str, Any] = field(default_factory=dict)

    def chunk(
        self, delta: dict[str, Any], finish_reason: str | None = None, **top: Any
    ) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, **self.choice, "finish_reason": finish_reason}
        return {**self.envelope, "choices": [choice], **top}

    def usage(self, prompt: int, completion: int, **details: Any) -> dict[str, Any]:
        total = prompt + completion
        counts = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total}
        return {**self.envelope, "choices": [], "usage": {**counts, **details}}


OLLAMA = Server(
    {
        "id": "chatcmpl-535",
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": "qwen3:8b",
        "system_fingerprint": "fp_ollama",
    }
)
VLLM = Server(
    {
        "id": "chatcmpl-9f1c2d7be04a4c43a5a2b1f0e6d3c8a1",
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": "Qwen/Qwen3-8B",
    },
    {"logprobs": None},
)
LLAMA_CPP = Server(
    {
        "created": CREATED,
        "id": "chatcmpl-Xq3dVt8LmP1rZ0aB6cE9fG2hJ4kN7sW5",
        "model": "qwen2.5-7b-instruct-q4_k_m.gguf",
        "system_fingerprint": "b5123-0f8d1c4a",
        "object": "chat.completion.chunk",
    }
)
DEEPSEEK = Server(
    {
        "id": "5d8c3f0e-8d1b-4c1e-9a53-1f4a0e2b7c6d",
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": "deepseek-reasoner",
        "system_fingerprint": "fp_7e0991cad4_prod0425fp8",
        "usage": None,
    },
    {"logprobs": None},
)
AZURE = Server(
    {
        "created": CREATED,
        "id": "chatcmpl-AzR3kq9ZyX1lM0nB5vC8dE2fG7hJ",
        "model": "gpt-4o-2024-11-20",
        "object": "chat.completion.chunk",
        "system_fingerprint": "fp_b705f0c291",
    },
    {"content_filter_results": {}, "logprobs": None},
)
AZURE_FILTER = {"filtered": False, "severity": "safe"}


@pytest.fixture
async def client(fake_openai: FakeOpenAI) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        base_url=fake_openai.base_url, api_key="test", max_retries=0
    ) as client:
        yield client


@dataclass
class Answer:
    """What a user ends up with: the text, the reasoning, the calls and why it stopped."""

    text: str
    reasoning: str
    calls: list[tuple[str, str]]
    call_ids: list[str]
    usage: list[Usage]
    finish: str


async def answer_to(
    fake: FakeOpenAI, client: openai.AsyncOpenAI, chunks: list[dict[str, Any] | str]
) -> Answer:
    fake.queue(sse(chunks))
    return await read_answer(client)


async def read_answer(client: openai.AsyncOpenAI) -> Answer:
    events = [
        event
        async for event in stream_chat_completion(
            client, model="any", messages=[{"role": "user", "content": "hi"}]
        )
    ]
    assert_well_formed(events)
    ready = [event for event in events if isinstance(event, ToolCallReady)]
    last = events[-1]
    assert isinstance(last, Finished), last
    return Answer(
        text="".join(e.text for e in events if isinstance(e, TextDelta)),
        reasoning="".join(e.text for e in events if isinstance(e, ReasoningDelta)),
        calls=[(call.name, call.arguments) for call in ready],
        call_ids=[call.call_id for call in ready],
        usage=[e for e in events if isinstance(e, Usage)],
        finish=last.reason,
    )


def assert_well_formed(events: list[ProviderEvent]) -> None:
    """Each call starts once, streams exactly its arguments, and is ready under the same id."""
    started = {e.index: e for e in events if isinstance(e, ToolCallStarted)}
    assert len(started) == len([e for e in events if isinstance(e, ToolCallStarted)])
    streamed: dict[int, str] = {}
    for event in events:
        if isinstance(event, ToolArgumentsDelta):
            assert event.index in started, "arguments before their call started"
            streamed[event.index] = streamed.get(event.index, "") + event.delta
    ready = [e for e in events if isinstance(e, ToolCallReady)]
    assert sorted(r.index for r in ready) == sorted(started)
    for call in ready:
        assert (call.call_id, call.name) == (started[call.index].call_id, started[call.index].name)
        assert call.call_id
        assert streamed.get(call.index, "") == call.arguments
    assert len({call.call_id for call in ready}) == len(ready)
    assert not [e for e in events if isinstance(e, StreamError)]


# 1. OpenAI and Azure OpenAI


async def test_openai_parallel_calls_interleaved_by_index(
    fake_openai: FakeOpenAI, client: openai.AsyncOpenAI
) -> None:
    calls = [("calculator", TWO_PLUS_TWO), ("current_time", TOKYO), ("calculator", '{"x": 1}')]

    answer = await answer_to(fake_openai, client, tool_calls_stream(calls, interleave=True))

    assert answer.calls == calls
    assert answer.finish == "tool_calls"
    assert answer.usage == [Usage(10, 20, 30)]


async def test_azure_filter_results_and_usage_chunks_without_choices(
    fake_openai: FakeOpenAI, client: openai.AsyncOpenAI
) -> None:
    prompt_filter = {
        "prompt_index": 0,
        "content_filter_results": {
            kind: AZURE_FILTER for kind in ("hate", "self_harm", "sexual", "violence")
        },
    }
    chunks: list[dict[str, Any] | str] = [
        {
            "choices": [],
            "created": 0,
            "id": "",
            "model": "",
            "object": "",
            "prompt_filter_results": [prompt_filter],
        },
        AZURE.chunk({"content": "", "refusal": None, "role": "assistant"}),
        AZURE.chunk({"content": "Bonjour"}),
        AZURE.chunk({"content": " !"}),
        AZURE.chunk({}, "stop"),
        # Azure's asynchronous filter reports afterwards on a choice with no delta at all.
        {
            **AZURE.envelope,
            "choices": [
                {
                    "content_filter_offsets": {
                        "check_offset": 0,
                        "start_offset": 0,
                        "end_offset": 9,
                    },
                    "content_filter_results": {"hate": AZURE_FILTER},
                    "finish_reason": None,
                    "index": 0,
                }
            ],
        },
        AZURE.usage(12, 3),
    ]

    answer = await answer_to(fake_openai, client, chunks)

    assert answer.text == "Bonjour !"
    assert answer.usage == [Usage(12, 3, 15)]
    assert answer.finish == "stop"


# 2. Ollama


async def test_ollama_without_index_sends_each_call_whole_and_finishes_with_stop(
    fake_openai: FakeOpenAI, client: openai.AsyncOpenAI
) -> None:
    def whole_call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
        return {
            "id": call_id,
            "type": "function",
            "function": {"name": name, "arguments": arguments},
        }

    chunks: list[dict[str, Any] | str] = [
        OLLAMA.chunk(
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    whole_call("call_k3m1x2ab", "calculator", TWO_PLUS_TWO),
                    whole_call("call_p8v4n0qe", "current_time", TOKYO),
                ],
            }
        ),
        OLLAMA.chunk({"role": "assistant", "content": ""}, "stop"),
        OLLAMA.usage(187, 42),
    ]

    answer = await answer_to(fake_openai, client, chunks)

    assert answer.calls == [("calculator", TWO_PLUS_TWO), ("current_time", TOKYO)]
    assert answer.call_ids == ["call_k3m1x2ab", "call_p8v4n0qe"]
    assert answer.text == ""
    assert answer.finish == "tool_calls"


async def test_ollama_with_index_zero_for_every_call(
    fake_openai: FakeOpenAI, client: openai.AsyncOpenAI
) -> None:
    def call_chunk(call_id: str, arguments: str) -> dict[str, Any]:
        call = {
            "id": call_id,
            "index": 0,
            "type": "function",
            "function": {"name": "calculator", "arguments": arguments},
        }
        return OLLAMA.chunk({"role": "assistant", "content": "", "tool_calls": [call]})

    chunks: list[dict[str, Any] | str] = [
        OLLAMA.chunk({"role": "assistant", "content": "I'll work out both."}),
        call_chunk("call_wteop8bt", '{"expression":"6*7"}'),
        call_chunk("call_rk2xye1l", '{"expression":"2**10"}'),
        OLLAMA.chunk({"role": "assistant", "content": ""}, "stop"),
        OLLAMA.usage(201, 57),
    ]

    answer = await answer_to(fake_openai, client, chunks)

    assert answer.text == "I'll work out both."
    assert answer.calls == [
        ("calculator", '{"expression":"6*7"}'),
        ("calculator", '{"expression":"2**10"}'),
    ]
    assert answer.call_ids == ["call_wteop8bt", "call_rk2xye1l"]
    assert answer.finish == "tool_calls"


async def test_ollama_reasoning_field_stays_out_of_the_answer(
    fake_openai: FakeOpenAI, client: openai.AsyncOpenAI
) -> None:
    thinking = ["Okay", ", the user", " greets me", "."]
    chunks: list[dict[str, Any] | str] = [
        *(OLLAMA.chunk({"role": "assistant", "content": "", "reasoning": t}) for t in thinking),
        OLLAMA.chunk({"role": "assistant", "content": "Hello"}),
        OLLAMA.chunk({"role": "assistant", "content": "!"}),
        OLLAMA.chunk({"role": "assistant", "content": ""}, "stop"),
    ]

    answer = await answer_to(fake_openai, client, chunks)

    assert answer.reasoning == "Okay, the user greets me."
    assert answer.text == "Hello!"
    assert answer.finish == "stop"


# 3. vLLM


async def test_vllm_calls_without_ids_get_stable_unique_ones(
    fake_openai: FakeOpenAI, client: openai.AsyncOpenAI
) -> None:
    def call_delta(index: int, **function: str) -> dict[str, Any]:
        opening = {"type": "function"} if "name" in function else {}
        return {"tool_calls": [{"index": index, **opening, "function": function}]}

    chunks: list[dict[str, Any] | str] = [
        VLLM.chunk({"role": "assistant", "content": ""}),
        VLLM.chunk({"reasoning_content": "Two tools"}),
        VLLM.chunk({"reasoning_content": " are needed."}),
        VLLM.chunk(call_delta(0, name="calculator")),
        VLLM.chunk(call_delta(0, arguments='{"expression": "')),
        VLLM.chunk(call_delta(0, arguments='2+2"}')),
        VLLM.chunk(call_delta(1, name="current_time")),
        VLLM.chunk(call_delta(1, arguments='{"timezone": ')),
        VLLM.chunk(call_delta(1, arguments='"Asia/Tokyo"}')),
        VLLM.chunk({"content": ""}, "tool_calls", stop_reason=None),
        VLLM.usage(310, 64, prompt_tokens_details=None),
    ]

    answer = await answer_to(fake_openai, client, chunks)

    assert answer.calls == [("calculator", TWO_PLUS_TWO), ("current_time", TOKYO)]
    assert all(call_id.startswith("call_") for call_id in answer.call_ids)
    assert answer.reasoning == "Two tools are needed."
    assert answer.usage == [Usage(310, 64, 374)]


async def test_index_zero_and_ids_only_on_each_calls_first_fragment(
    fake_openai: FakeOpenAI, client: openai.AsyncOpenAI
) -> None:
    # lmdeploy's shape (and vLLM's with some tool parsers): every call is index 0.
    def fragment(call_id: str, name: str | None, arguments: str) -> dict[str, Any]:
        call = {"index": 0, "id": call_id, "type": "function"}
        return VLLM.chunk(
            {"tool_calls": [{**call, "function": {"name": name, "arguments": arguments}}]}
        )

    chunks: list[dict[str, Any] | str] = [
        VLLM.chunk({"role": "assistant", "content": ""}),
        fragment("chatcmpl-tool-c9ZCzB9b9NikK5kjPBXpFG", "calculator", ""),
        fragment("", None, '{"expression": '),
        fragment("", None, '"2+2"}'),
        fragment("chatcmpl-tool-HfzZPEVfQgvgpSJccb8Vr8", "current_time", ""),
        fragment("", None, TOKYO),
        VLLM.chunk({}, "tool_calls"),
    ]

    answer = await answer_to(fake_openai, client, chunks)

    assert answer.calls == [("calculator", TWO_PLUS_TWO), ("current_time", TOKYO)]
    assert answer.call_ids == [
        "chatcmpl-tool-c9ZCzB9b9NikK5kjPBXpFG",
        "chatcmpl-tool-HfzZPEVfQgvgpSJccb8Vr8",
    ]


async def test_neither_ids_nor_indexes_tell_calls_apart_but_new_names_do(
    fake_openai: FakeOpenAI, client: openai.AsyncOpenAI
) -> None:
    def whole_call(name: str, arguments: str) -> dict[str, Any]:
        call = {"type": "function", "function": {"name": name, "arguments": arguments}}
        return OLLAMA.chunk({"role": "assistant", "content": "", "tool_calls": [call]})

    chunks: list[dict[str, Any] | str] = [
        whole_call("calculator", TWO_PLUS_TWO),
        whole_call("current_time", TOKYO),
        whole_call("calculator", '{"expression": "3*3"}'),
        OLLAMA.chunk({"role": "assistant", "content": ""}, "stop"),
    ]

    answer = await answer_to(fake_openai, client, chunks)

    assert answer.calls == [
        ("calculator", TWO_PLUS_TWO),
        ("current_time", TOKYO),
        ("calculator", '{"expression": "3*3"}'),
    ]
    assert answer.finish == "tool_calls"


# 4. llama.cpp server with Qwen-style calls written into the text


def llama_cpp_stream(pieces: list[str]) -> list[dict[str, Any] | str]:
    usage = {"completion_tokens": 48, "prompt_tokens": 233, "total_tokens": 281}
    timings = {"prompt_n": 233, "prompt_ms": 211.4, "predicted_n": 48, "predicted_ms": 903.2}
    return [
        LLAMA_CPP.chunk({"role": "assistant", "content": None}),
        *(LLAMA_CPP.chunk({"content": piece}) for piece in pieces),
        LLAMA_CPP.chunk({}, "stop", usage=usage, timings=timings),
    ]


async def test_llama_cpp_tool_calls_in_the_text_become_calls(
    fake_openai: FakeOpenAI, client: openai.AsyncOpenAI
) -> None:
    pieces = [
        "Let me",
        " check both.\n",
        "<tool",
        '_call>\n{"name": "calculator", "arguments": {"expression": ',
        '"2+2"}}\n</tool_call>\n<tool_call>\n{"name": "current_time", ',
        '"arguments": {"timezone": "Asia/Tokyo"}}\n</tool_',
        "call>",
    ]

    answer = await answer_to(fake_openai, client, llama_cpp_stream(pieces))

    assert answer.text == "Let me check both.\n"
    assert answer.calls == [("calculator", TWO_PLUS_TWO), ("current_time", TOKYO)]
    assert all(call_id.startswith("call_") for call_id in answer.call_ids)
    assert answer.usage == [Usage(233, 48, 281)]
    assert answer.finish == "tool_calls"


async def test_llama_cpp_think_block_and_malformed_tags(
    fake_openai: FakeOpenAI, client: openai.AsyncOpenAI
) -> None:
    broken = '{"name": "calculator", "arguments": {"expression": "2+2"}'
    pieces = [
        "<think>\nThe user wants",
        " arithmetic.\n</th",
        "ink>\n\nSure.\n",
        f"<tool_call>\n{broken}\n</tool_call>",
        "\n<tool_call>I cannot call tools here.</tool_call>",
    ]

    answer = await answer_to(fake_openai, client, llama_cpp_stream(pieces))

    assert answer.reasoning == "The user wants arithmetic.\n"
    assert answer.text == "Sure.\nI cannot call tools here."
    # The registry rejects these raw arguments and tells the model why.
    assert answer.calls == [("calculator", broken)]
    assert answer.finish == "tool_calls"


# 5. A server that answers a stream request with one plain JSON body


async def test_a_plain_json_body_is_one_complete_answer(
    fake_openai: FakeOpenAI, client: openai.AsyncOpenAI
) -> None:
    completion = Completion("local-model")
    message = {
        "role": "assistant",
        "content": "Let me calculate.",
        "reasoning_content": "Simple sum.",
        "tool_calls": [
            {
                "id": "call_abc123",
                "type": "function",
                "function": {"name": "calculator", "arguments": TWO_PLUS_TWO},
            },
            {
                "id": "call_def456",
                "type": "function",
                "function": {"name": "current_time", "arguments": TOKYO},
            },
        ],
    }
    fake_openai.queue(json_body(completion.whole(message, "tool_calls", usage=(50, 12))))

    answer = await read_answer(client)

    assert fake_openai.requests[0]["stream"] is True
    assert answer.text == "Let me calculate."
    assert answer.reasoning == "Simple sum."
    assert answer.calls == [("calculator", TWO_PLUS_TWO), ("current_time", TOKYO)]
    assert answer.call_ids == ["call_abc123", "call_def456"]
    assert answer.usage == [Usage(50, 12, 62)]
    assert answer.finish == "tool_calls"


async def test_a_plain_json_body_with_text_only(
    fake_openai: FakeOpenAI, client: openai.AsyncOpenAI
) -> None:
    completion = Completion("local-model")
    fake_openai.queue(
        json_body(completion.whole({"role": "assistant", "content": "Paris."}, usage=None))
    )

    answer = await read_answer(client)

    assert answer == Answer("Paris.", "", [], [], [], "stop")


# 6. Reasoning fields


async def test_deepseek_reasoning_content_then_the_answer(
    fake_openai: FakeOpenAI, client: openai.AsyncOpenAI
) -> None:
    usage = {
        "prompt_tokens": 13,
        "completion_tokens": 25,
        "total_tokens": 38,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 19},
        "prompt_cache_hit_tokens": 0,
        "prompt_cache_miss_tokens": 13,
    }
    chunks: list[dict[str, Any] | str] = [
        DEEPSEEK.chunk({"role": "assistant", "content": None, "reasoning_content": ""}),
        DEEPSEEK.chunk({"content": None, "reasoning_content": "Hmm"}),
        DEEPSEEK.chunk({"content": None, "reasoning_content": ", a greeting."}),
        DEEPSEEK.chunk({"content": "Hi", "reasoning_content": None}),
        DEEPSEEK.chunk({"content": " there.", "reasoning_content": None}),
        DEEPSEEK.chunk({"content": "", "reasoning_content": None}, "stop", usage=usage),
    ]

    answer = await answer_to(fake_openai, client, chunks)

    assert answer.reasoning == "Hmm, a greeting."
    assert answer.text == "Hi there."
    assert answer.usage == [Usage(13, 25, 38)]


async def test_openrouter_reasoning_with_its_details(
    fake_openai: FakeOpenAI, client: openai.AsyncOpenAI
) -> None:
    openrouter = Server(
        {
            "id": "gen-1767225600-Ab3dE5fG7hJ9kL1mN3pQ",
            "provider": "DeepInfra",
            "model": "deepseek/deepseek-r1",
            "object": "chat.completion.chunk",
            "created": CREATED,
        },
        {"native_finish_reason": None, "logprobs": None},
    )

    def thought(text: str) -> dict[str, Any]:
        detail = {"type": "reasoning.text", "text": text, "format": "unknown", "index": 0}
        return openrouter.chunk(
            {"role": "assistant", "content": "", "reasoning": text, "reasoning_details": [detail]}
        )

    chunks: list[dict[str, Any] | str] = [
        thought("Short"),
        thought(" answer."),
        openrouter.chunk({"role": "assistant", "content": "42"}),
        openrouter.chunk({"role": "assistant", "content": ""}, "stop"),
        openrouter.usage(9, 30),
    ]

    answer = await answer_to(fake_openai, client, chunks)

    assert answer.reasoning == "Short answer."
    assert answer.text == "42"


# 7. Arguments that are still not valid JSON at the end


async def test_invalid_json_arguments_arrive_intact(
    fake_openai: FakeOpenAI, client: openai.AsyncOpenAI
) -> None:
    raw = '{"expression": "2+2", '
    chunks = tool_calls_stream([("calculator", raw)], pieces=3)

    answer = await answer_to(fake_openai, client, list(chunks))

    assert answer.calls == [("calculator", raw)]
    with pytest.raises(json.JSONDecodeError):
        json.loads(answer.calls[0][1])
    assert answer.finish == "tool_calls"
