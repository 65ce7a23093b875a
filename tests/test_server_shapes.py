"""Recorded-style transcripts of each real server's stream, read by the real SDK over HTTP.

Each shape is built by one function in `SHAPES`; tests/test_server_shapes_stored.py plays the
same transcripts through the chat socket and checks what is stored.
"""

from __future__ import annotations

import json
from collections.abc import Callable
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
from tests.helpers.fake_openai import (
    Completion,
    FakeOpenAI,
    Script,
    json_body,
    sse,
    tool_calls_stream,
)

CREATED = 1767225600
TWO_PLUS_TWO = '{"expression": "2+2"}'
TOKYO = '{"timezone": "Asia/Tokyo"}'
# Arguments that end before the object does: not valid JSON when the stream is over.
UNFINISHED_ARGUMENTS = '{"expression": "2+2", '
# A `<tool_call>` body missing its last brace, so not JSON, though it still names a tool.
BROKEN_TOOL_CALL = '{"name": "calculator", "arguments": {"expression": "2+2"}'


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
OPENROUTER = Server(
    {
        "id": "gen-1767225600-Ab3dE5fG7hJ9kL1mN3pQ",
        "provider": "DeepInfra",
        "model": "deepseek/deepseek-r1",
        "object": "chat.completion.chunk",
        "created": CREATED,
    },
    {"native_finish_reason": None, "logprobs": None},
)


# 1. OpenAI and Azure OpenAI


def openai_parallel_calls_interleaved() -> Script:
    # The third call's arguments do not fit the calculator's schema.
    calls = [("calculator", TWO_PLUS_TWO), ("current_time", TOKYO), ("calculator", '{"x": 1}')]
    return sse(tool_calls_stream(calls, interleave=True))


def azure_filter_results_and_chunks_without_choices() -> Script:
    prompt_filter = {
        "prompt_index": 0,
        "content_filter_results": {
            kind: AZURE_FILTER for kind in ("hate", "self_harm", "sexual", "violence")
        },
    }
    return sse(
        [
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
    )


# 2. Ollama


def ollama_whole_calls_without_index() -> Script:
    def whole_call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
        return {
            "id": call_id,
            "type": "function",
            "function": {"name": name, "arguments": arguments},
        }

    return sse(
        [
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
    )


def ollama_index_zero_for_every_call() -> Script:
    def call_chunk(call_id: str, arguments: str) -> dict[str, Any]:
        call = {
            "id": call_id,
            "index": 0,
            "type": "function",
            "function": {"name": "calculator", "arguments": arguments},
        }
        return OLLAMA.chunk({"role": "assistant", "content": "", "tool_calls": [call]})

    return sse(
        [
            OLLAMA.chunk({"role": "assistant", "content": "I'll work out both."}),
            call_chunk("call_wteop8bt", '{"expression":"6*7"}'),
            call_chunk("call_rk2xye1l", '{"expression":"2**10"}'),
            OLLAMA.chunk({"role": "assistant", "content": ""}, "stop"),
            OLLAMA.usage(201, 57),
        ]
    )


def ollama_reasoning_field() -> Script:
    thinking = ["Okay", ", the user", " greets me", "."]
    return sse(
        [
            *(OLLAMA.chunk({"role": "assistant", "content": "", "reasoning": t}) for t in thinking),
            OLLAMA.chunk({"role": "assistant", "content": "Hello"}),
            OLLAMA.chunk({"role": "assistant", "content": "!"}),
            OLLAMA.chunk({"role": "assistant", "content": ""}, "stop"),
        ]
    )


# 3. vLLM and lmdeploy


def vllm_calls_without_ids() -> Script:
    def call_delta(index: int, **function: str) -> dict[str, Any]:
        opening = {"type": "function"} if "name" in function else {}
        return {"tool_calls": [{"index": index, **opening, "function": function}]}

    return sse(
        [
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
    )


def index_zero_and_ids_only_on_first_fragments() -> Script:
    # lmdeploy's shape (and vLLM's with some tool parsers): every call is index 0.
    def fragment(call_id: str, name: str | None, arguments: str) -> dict[str, Any]:
        call = {"index": 0, "id": call_id, "type": "function"}
        return VLLM.chunk(
            {"tool_calls": [{**call, "function": {"name": name, "arguments": arguments}}]}
        )

    return sse(
        [
            VLLM.chunk({"role": "assistant", "content": ""}),
            fragment("chatcmpl-tool-c9ZCzB9b9NikK5kjPBXpFG", "calculator", ""),
            fragment("", None, '{"expression": '),
            fragment("", None, '"2+2"}'),
            fragment("chatcmpl-tool-HfzZPEVfQgvgpSJccb8Vr8", "current_time", ""),
            fragment("", None, TOKYO),
            VLLM.chunk({}, "tool_calls"),
        ]
    )


def neither_ids_nor_indexes() -> Script:
    def whole_call(name: str, arguments: str) -> dict[str, Any]:
        call = {"type": "function", "function": {"name": name, "arguments": arguments}}
        return OLLAMA.chunk({"role": "assistant", "content": "", "tool_calls": [call]})

    return sse(
        [
            whole_call("calculator", TWO_PLUS_TWO),
            whole_call("current_time", TOKYO),
            whole_call("calculator", '{"expression": "3*3"}'),
            OLLAMA.chunk({"role": "assistant", "content": ""}, "stop"),
        ]
    )


# 4. llama.cpp server with Qwen-style calls written into the text


def llama_cpp_stream(pieces: list[str]) -> Script:
    usage = {"completion_tokens": 48, "prompt_tokens": 233, "total_tokens": 281}
    timings = {"prompt_n": 233, "prompt_ms": 211.4, "predicted_n": 48, "predicted_ms": 903.2}
    return sse(
        [
            LLAMA_CPP.chunk({"role": "assistant", "content": None}),
            *(LLAMA_CPP.chunk({"content": piece}) for piece in pieces),
            LLAMA_CPP.chunk({}, "stop", usage=usage, timings=timings),
        ]
    )


def llama_cpp_tool_calls_in_the_text() -> Script:
    return llama_cpp_stream(
        [
            "Let me",
            " check both.\n",
            "<tool",
            '_call>\n{"name": "calculator", "arguments": {"expression": ',
            '"2+2"}}\n</tool_call>\n<tool_call>\n{"name": "current_time", ',
            '"arguments": {"timezone": "Asia/Tokyo"}}\n</tool_',
            "call>",
        ]
    )


def llama_cpp_think_block_and_malformed_tags() -> Script:
    return llama_cpp_stream(
        [
            "<think>\nThe user wants",
            " arithmetic.\n</th",
            "ink>\n\nSure.\n",
            f"<tool_call>\n{BROKEN_TOOL_CALL}\n</tool_call>",
            "\n<tool_call>I cannot call tools here.</tool_call>",
        ]
    )


# 5. A server that answers a stream request with one plain JSON body


def plain_json_body_with_calls() -> Script:
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
    return json_body(Completion("local-model").whole(message, "tool_calls", usage=(50, 12)))


def plain_json_body_with_text_only() -> Script:
    message = {"role": "assistant", "content": "Paris."}
    return json_body(Completion("local-model").whole(message, usage=None))


# 6. Reasoning fields


def deepseek_reasoning_content() -> Script:
    usage = {
        "prompt_tokens": 13,
        "completion_tokens": 25,
        "total_tokens": 38,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 19},
        "prompt_cache_hit_tokens": 0,
        "prompt_cache_miss_tokens": 13,
    }
    return sse(
        [
            DEEPSEEK.chunk({"role": "assistant", "content": None, "reasoning_content": ""}),
            DEEPSEEK.chunk({"content": None, "reasoning_content": "Hmm"}),
            DEEPSEEK.chunk({"content": None, "reasoning_content": ", a greeting."}),
            DEEPSEEK.chunk({"content": "Hi", "reasoning_content": None}),
            DEEPSEEK.chunk({"content": " there.", "reasoning_content": None}),
            DEEPSEEK.chunk({"content": "", "reasoning_content": None}, "stop", usage=usage),
        ]
    )


def openrouter_reasoning_with_details() -> Script:
    def thought(text: str) -> dict[str, Any]:
        detail = {"type": "reasoning.text", "text": text, "format": "unknown", "index": 0}
        return OPENROUTER.chunk(
            {"role": "assistant", "content": "", "reasoning": text, "reasoning_details": [detail]}
        )

    return sse(
        [
            thought("Short"),
            thought(" answer."),
            OPENROUTER.chunk({"role": "assistant", "content": "42"}),
            OPENROUTER.chunk({"role": "assistant", "content": ""}, "stop"),
            OPENROUTER.usage(9, 30),
        ]
    )


# 7. Arguments that are still not valid JSON at the end


def invalid_json_arguments() -> Script:
    return sse(tool_calls_stream([("calculator", UNFINISHED_ARGUMENTS)], pieces=3))


SHAPES: dict[str, Callable[[], Script]] = {
    "openai_parallel_calls_interleaved": openai_parallel_calls_interleaved,
    "azure_filter_results_and_chunks_without_choices": (
        azure_filter_results_and_chunks_without_choices
    ),
    "ollama_whole_calls_without_index": ollama_whole_calls_without_index,
    "ollama_index_zero_for_every_call": ollama_index_zero_for_every_call,
    "ollama_reasoning_field": ollama_reasoning_field,
    "vllm_calls_without_ids": vllm_calls_without_ids,
    "index_zero_and_ids_only_on_first_fragments": index_zero_and_ids_only_on_first_fragments,
    "neither_ids_nor_indexes": neither_ids_nor_indexes,
    "llama_cpp_tool_calls_in_the_text": llama_cpp_tool_calls_in_the_text,
    "llama_cpp_think_block_and_malformed_tags": llama_cpp_think_block_and_malformed_tags,
    "plain_json_body_with_calls": plain_json_body_with_calls,
    "plain_json_body_with_text_only": plain_json_body_with_text_only,
    "deepseek_reasoning_content": deepseek_reasoning_content,
    "openrouter_reasoning_with_details": openrouter_reasoning_with_details,
    "invalid_json_arguments": invalid_json_arguments,
}


@dataclass
class Answer:
    """What a user ends up with: the text, the reasoning, the calls and why it stopped."""

    text: str
    reasoning: str
    calls: list[tuple[str, str]]
    call_ids: list[str]
    usage: list[Usage]
    finish: str


async def answer_to(fake: FakeOpenAI, client: openai.AsyncOpenAI, shape: str) -> Answer:
    fake.queue(SHAPES[shape]())
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
    fake_openai: FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    answer = await answer_to(fake_openai, openai_client, "openai_parallel_calls_interleaved")

    assert answer.calls == [
        ("calculator", TWO_PLUS_TWO),
        ("current_time", TOKYO),
        ("calculator", '{"x": 1}'),
    ]
    assert answer.finish == "tool_calls"
    assert answer.usage == [Usage(10, 20, 30)]


async def test_azure_filter_results_and_usage_chunks_without_choices(
    fake_openai: FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    answer = await answer_to(
        fake_openai, openai_client, "azure_filter_results_and_chunks_without_choices"
    )

    assert answer.text == "Bonjour !"
    assert answer.usage == [Usage(12, 3, 15)]
    assert answer.finish == "stop"


# 2. Ollama


async def test_ollama_without_index_sends_each_call_whole_and_finishes_with_stop(
    fake_openai: FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    answer = await answer_to(fake_openai, openai_client, "ollama_whole_calls_without_index")

    assert answer.calls == [("calculator", TWO_PLUS_TWO), ("current_time", TOKYO)]
    assert answer.call_ids == ["call_k3m1x2ab", "call_p8v4n0qe"]
    assert answer.text == ""
    assert answer.finish == "tool_calls"


async def test_ollama_with_index_zero_for_every_call(
    fake_openai: FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    answer = await answer_to(fake_openai, openai_client, "ollama_index_zero_for_every_call")

    assert answer.text == "I'll work out both."
    assert answer.calls == [
        ("calculator", '{"expression":"6*7"}'),
        ("calculator", '{"expression":"2**10"}'),
    ]
    assert answer.call_ids == ["call_wteop8bt", "call_rk2xye1l"]
    assert answer.finish == "tool_calls"


async def test_ollama_reasoning_field_stays_out_of_the_answer(
    fake_openai: FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    answer = await answer_to(fake_openai, openai_client, "ollama_reasoning_field")

    assert answer.reasoning == "Okay, the user greets me."
    assert answer.text == "Hello!"
    assert answer.finish == "stop"


# 3. vLLM and lmdeploy


async def test_vllm_calls_without_ids_get_stable_unique_ones(
    fake_openai: FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    answer = await answer_to(fake_openai, openai_client, "vllm_calls_without_ids")

    assert answer.calls == [("calculator", TWO_PLUS_TWO), ("current_time", TOKYO)]
    assert all(call_id.startswith("call_") for call_id in answer.call_ids)
    assert answer.reasoning == "Two tools are needed."
    assert answer.usage == [Usage(310, 64, 374)]


async def test_index_zero_and_ids_only_on_each_calls_first_fragment(
    fake_openai: FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    answer = await answer_to(
        fake_openai, openai_client, "index_zero_and_ids_only_on_first_fragments"
    )

    assert answer.calls == [("calculator", TWO_PLUS_TWO), ("current_time", TOKYO)]
    assert answer.call_ids == [
        "chatcmpl-tool-c9ZCzB9b9NikK5kjPBXpFG",
        "chatcmpl-tool-HfzZPEVfQgvgpSJccb8Vr8",
    ]


async def test_neither_ids_nor_indexes_tell_calls_apart_but_new_names_do(
    fake_openai: FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    answer = await answer_to(fake_openai, openai_client, "neither_ids_nor_indexes")

    assert answer.calls == [
        ("calculator", TWO_PLUS_TWO),
        ("current_time", TOKYO),
        ("calculator", '{"expression": "3*3"}'),
    ]
    assert answer.finish == "tool_calls"


# 4. llama.cpp server with Qwen-style calls written into the text


async def test_llama_cpp_tool_calls_in_the_text_become_calls(
    fake_openai: FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    answer = await answer_to(fake_openai, openai_client, "llama_cpp_tool_calls_in_the_text")

    assert answer.text == "Let me check both.\n"
    assert answer.calls == [("calculator", TWO_PLUS_TWO), ("current_time", TOKYO)]
    assert all(call_id.startswith("call_") for call_id in answer.call_ids)
    assert answer.usage == [Usage(233, 48, 281)]
    assert answer.finish == "tool_calls"


async def test_llama_cpp_think_block_and_malformed_tags(
    fake_openai: FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    answer = await answer_to(fake_openai, openai_client, "llama_cpp_think_block_and_malformed_tags")

    assert answer.reasoning == "The user wants arithmetic.\n"
    assert answer.text == "Sure.\nI cannot call tools here."
    # The registry rejects these raw arguments and tells the model why.
    assert answer.calls == [("calculator", BROKEN_TOOL_CALL)]
    assert answer.finish == "tool_calls"


# 5. A server that answers a stream request with one plain JSON body


async def test_a_plain_json_body_is_one_complete_answer(
    fake_openai: FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    answer = await answer_to(fake_openai, openai_client, "plain_json_body_with_calls")

    assert fake_openai.requests[0]["stream"] is True
    assert answer.text == "Let me calculate."
    assert answer.reasoning == "Simple sum."
    assert answer.calls == [("calculator", TWO_PLUS_TWO), ("current_time", TOKYO)]
    assert answer.call_ids == ["call_abc123", "call_def456"]
    assert answer.usage == [Usage(50, 12, 62)]
    assert answer.finish == "tool_calls"


async def test_a_plain_json_body_with_text_only(
    fake_openai: FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    answer = await answer_to(fake_openai, openai_client, "plain_json_body_with_text_only")

    assert answer == Answer("Paris.", "", [], [], [], "stop")


# 6. Reasoning fields


async def test_deepseek_reasoning_content_then_the_answer(
    fake_openai: FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    answer = await answer_to(fake_openai, openai_client, "deepseek_reasoning_content")

    assert answer.reasoning == "Hmm, a greeting."
    assert answer.text == "Hi there."
    assert answer.usage == [Usage(13, 25, 38)]


async def test_openrouter_reasoning_with_its_details(
    fake_openai: FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    answer = await answer_to(fake_openai, openai_client, "openrouter_reasoning_with_details")

    assert answer.reasoning == "Short answer."
    assert answer.text == "42"


# 7. Arguments that are still not valid JSON at the end


async def test_invalid_json_arguments_arrive_intact(
    fake_openai: FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    answer = await answer_to(fake_openai, openai_client, "invalid_json_arguments")

    assert answer.calls == [("calculator", UNFINISHED_ARGUMENTS)]
    with pytest.raises(json.JSONDecodeError):
        json.loads(answer.calls[0][1])
    assert answer.finish == "tool_calls"
