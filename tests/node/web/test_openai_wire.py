"""OpenAI request bodies are checked field by field; responses and chunks have OpenAI's shape."""

from __future__ import annotations

import json

import pytest
from orc.node.models.runtimes.base import ChatMessage, Usage
from orc.node.web.openai_wire import (
    DEFAULT_MAX_TOKENS,
    BadRequest,
    Choice,
    chat_ask,
    chunk_json,
    completion_json,
    parse_body,
    sse,
    text_ask,
    usage_chunk_json,
)

CHAT = {"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "hi"}]}


def test_a_plain_chat_request_gets_defaults() -> None:
    ask = chat_ask(CHAT)
    assert ask.kind == "chat" and ask.model == "smollm2-135m-instruct" and ask.ensemble is None
    assert ask.messages == (ChatMessage("user", "hi"),)
    assert ask.params.max_tokens == DEFAULT_MAX_TOKENS and ask.params.temperature == 1.0
    assert ask.samples == 1 and not ask.stream and not ask.include_usage


def test_every_sampling_field_is_carried() -> None:
    ask = chat_ask({**CHAT, "temperature": 0, "top_p": 0.5, "max_completion_tokens": 7, "stop": ["\n", "END"],
                    "seed": 42, "n": 3, "stream": True, "stream_options": {"include_usage": True},
                    "frequency_penalty": 0.3, "user": "someone"})  # knobs local runtimes lack are ignored
    assert ask.params.temperature == 0 and ask.params.top_p == 0.5 and ask.params.max_tokens == 7
    assert ask.params.stop == ("\n", "END") and ask.params.seed == 42
    assert ask.samples == 3 and ask.stream and ask.include_usage
    assert [ask.sample_params(i).seed for i in range(3)] == [42, 43, 44]  # n seeded samples differ


def test_max_tokens_is_the_older_name() -> None:
    assert chat_ask({**CHAT, "max_tokens": 9}).params.max_tokens == 9


def test_roles_and_content_parts() -> None:
    ask = chat_ask({"model": "m", "messages": [
        {"role": "developer", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {"role": "assistant", "content": None},
    ]})
    assert ask.messages == (ChatMessage("system", "be brief"), ChatMessage("user", "a\nb"), ChatMessage("assistant", ""))


@pytest.mark.parametrize("body,param", [
    ({"messages": [{"role": "user", "content": "x"}]}, "model"),
    ({"model": "m"}, "messages"),
    ({"model": "m", "messages": []}, "messages"),
    ({"model": "m", "messages": [{"role": "tool", "content": "x"}]}, "messages[0].role"),
    ({"model": "m", "messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "messages[0].content"),
    ({"model": "m", "messages": [{"role": "system", "content": "only"}]}, "messages"),
    ({**CHAT, "temperature": 3}, "temperature"),
    ({**CHAT, "temperature": "hot"}, "temperature"),
    ({**CHAT, "top_p": float("nan")}, "top_p"),
    ({**CHAT, "max_tokens": 0}, "max_tokens"),
    ({**CHAT, "max_tokens": 10**9}, "max_tokens"),
    ({**CHAT, "n": 9}, "n"),
    ({**CHAT, "n": True}, "n"),
    ({**CHAT, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({**CHAT, "stop": [""]}, "stop"),
    ({**CHAT, "stream": "yes"}, "stream"),
    ({**CHAT, "stream_options": []}, "stream_options"),
    ({**CHAT, "tools": [{"type": "function"}]}, "tools"),
    ({**CHAT, "logprobs": True}, "logprobs"),
    ({**CHAT, "response_format": {"type": "json_object"}}, "response_format"),
])
def test_bad_fields_are_named(body: dict, param: str) -> None:
    with pytest.raises(BadRequest) as raised:
        chat_ask(body)
    assert raised.value.param == param


def test_a_text_response_format_is_fine() -> None:
    assert chat_ask({**CHAT, "response_format": {"type": "text"}}).model == CHAT["model"]


def test_completions_take_one_prompt_as_a_user_turn() -> None:
    assert text_ask({"model": "m", "prompt": "Once"}).messages == (ChatMessage("user", "Once"),)
    assert text_ask({"model": "m", "prompt": ["Once"]}).kind == "text"
    for bad in ({"model": "m", "prompt": ["a", "b"]}, {"model": "m", "prompt": ""}, {"model": "m"},
                {"model": "m", "prompt": "x", "echo": True}):
        with pytest.raises(BadRequest):
            text_ask(bad)


@pytest.mark.parametrize("raw", [b"", b"{", b"[1]", b"\xff\xfe", b'"text"', b"[" * 100_000 + b"]" * 100_000])
def test_a_body_must_be_a_json_object(raw: bytes) -> None:
    with pytest.raises(BadRequest):
        parse_body(raw)


def test_ensemble_models_are_recognised() -> None:
    assert chat_ask({**CHAT, "model": "ensemble/perspectives"}).ensemble == "perspectives"


def test_a_whole_chat_response_has_openai_shape() -> None:
    ask = chat_ask({**CHAT, "n": 2})
    body = completion_json(ask, "chatcmpl-1", 100, [Choice(0, "a", "stop"), Choice(1, "b", "length")],
                           Usage(5, 3), {"nodes": ["x", "y"]})
    assert body["object"] == "chat.completion" and body["created"] == 100 and body["model"] == ask.model
    assert body["choices"][1] == {"index": 1, "message": {"role": "assistant", "content": "b"}, "logprobs": None,
                                  "finish_reason": "length"}
    assert body["usage"] == {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
    assert body["orc"] == {"nodes": ["x", "y"]}


def test_text_completion_shapes() -> None:
    ask = text_ask({"model": "m", "prompt": "p", "stream": True})
    body = completion_json(ask, "cmpl-1", 1, [Choice(0, "t", "stop")], Usage(1, 1), {})
    assert body["object"] == "text_completion" and body["choices"][0]["text"] == "t"
    chunk = chunk_json(ask, "cmpl-1", 1, 0, text="t")
    assert chunk["object"] == "text_completion" and chunk["choices"][0]["text"] == "t"


def test_chunks_role_first_then_text_then_finish_then_usage() -> None:
    ask = chat_ask({**CHAT, "stream": True, "stream_options": {"include_usage": True}})
    first = chunk_json(ask, "c", 1, 0, role=True, text="")
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""} and first["usage"] is None
    assert chunk_json(ask, "c", 1, 0, text="hi")["choices"][0]["delta"] == {"content": "hi"}
    last = chunk_json(ask, "c", 1, 0, finish_reason="stop")
    assert last["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}
    usage = usage_chunk_json(ask, "c", 1, Usage(2, 3), {})
    assert usage["choices"] == [] and usage["usage"]["total_tokens"] == 5


def test_server_sent_events_are_data_lines() -> None:
    assert sse("[DONE]") == b"data: [DONE]\n\n"
    event = sse({"a": "é"})
    assert event.startswith(b"data: ") and event.endswith(b"\n\n") and json.loads(event[6:]) == {"a": "é"}


def test_an_unpaired_surrogate_is_refused_where_it_is_read() -> None:
    for raw in (rb'{"model": "m", "messages": [{"role": "user", "content": "\ud800 hi"}]}',
                rb'{"model": "\udfff", "messages": []}', rb'{"\ud800": 1}'):
        with pytest.raises(BadRequest, match="surrogate"):
            parse_body(raw)
    paired = parse_body(rb'{"model": "m", "messages": [{"role": "user", "content": "\ud83d\ude00 \u00e9"}]}')
    assert paired["messages"][0]["content"] == "\U0001F600 \u00e9"  # a real pair, and other escapes, are text


@pytest.mark.parametrize("role", [["user"], {"user": 1}, 7, None])
def test_a_role_that_is_no_string_is_a_bad_request(role: object) -> None:
    with pytest.raises(BadRequest) as refused:
        chat_ask({**CHAT, "messages": [{"role": role, "content": "hi"}]})
    assert refused.value.param == "messages[0].role"


@pytest.mark.parametrize("model", ["smollm2-135m-instruct@", "smollm2-135m-instruct@bogus", "@llama_cpp",
                                   "smollm2-135m-instruct@LLAMA_CPP"])
def test_a_model_pinning_no_runtime_is_a_bad_request(model: str) -> None:
    with pytest.raises(BadRequest) as refused:
        chat_ask({**CHAT, "model": model})
    assert refused.value.param == "model" and "runtime" in str(refused.value)
    assert chat_ask({**CHAT, "model": "smollm2-135m-instruct@llama_cpp"}).model == "smollm2-135m-instruct@llama_cpp"
