"""OpenAI's request and response shapes, in and out: request bodies to checked values, results
to the JSON objects and stream chunks OpenAI clients expect (docs/api.md).

Pure: no I/O. Every field a body carries is hostile until checked here; what is checked is
what orc acts on, and a field orc cannot honour is refused rather than silently dropped
(`tools`, `logprobs`), while sampling knobs that local runtimes do not have are ignored
(docs/api.md lists both).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from orc.node.models.runtimes.base import ChatMessage, GenerationParams, Usage
from orc.scheduler.model_refs import split_model_ref

ENSEMBLE_PREFIX = "ensemble/"
# Caps on what one request may ask for. Each stops a client with a key from tying up the mesh:
# samples are generations (n of them at once), messages are prompt work, stops are scanned at
# every token.
MAX_SAMPLES = 8
MAX_MESSAGES = 512
MAX_STOPS = 4
MAX_STOP_CHARS = 200
MAX_MODEL_CHARS = 200
MAX_COMPLETION_TOKENS = 8192
DEFAULT_MAX_TOKENS = 512  # when the client names none: small models ramble; a bound keeps a slot free
# OpenAI's roles; "developer" is the newer name of "system".
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
# Features that change what a response means: refused with 400 rather than ignored.
REFUSED_FIELDS = {
    "tools": "tool calls are not supported by orc's models",
    "functions": "function calls are not supported by orc's models",
    "logprobs": "log probabilities are not reported by orc",
    "top_logprobs": "log probabilities are not reported by orc",
    "response_format": "response formats are not supported; ask for JSON in the prompt",
    "suffix": "suffix (fill in the middle) is not supported",
    "best_of": "best_of is not supported; use n",
    "audio": "audio is not supported",
}


class BadRequest(ValueError):
    """A request body orc cannot act on; the message names the field (`param`) and the fix."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class Ask:
    """One checked `/v1/chat/completions` or `/v1/completions` request."""

    kind: str  # "chat" or "text"
    model: str  # a model id ("ID" or "ID@RUNTIME"), or "ensemble/NAME"
    messages: tuple[ChatMessage, ...]
    params: GenerationParams
    samples: int  # `n`
    stream: bool
    include_usage: bool  # stream_options.include_usage

    @property
    def ensemble(self) -> str | None:
        """The ensemble's name for `ensemble/NAME`, else None."""
        return self.model[len(ENSEMBLE_PREFIX):] if self.model.startswith(ENSEMBLE_PREFIX) else None

    def sample_params(self, index: int) -> GenerationParams:
        """Sample `index`'s settings: with a seed, each sample gets its own (seed + index), so
        `n` seeded samples differ from one another and each is still reproducible."""
        params = self.params
        if params.seed is None or index == 0:
            return params
        return GenerationParams(params.temperature, params.max_tokens, params.seed + index, params.stop, params.top_p)


def parse_body(raw: bytes) -> Mapping[str, object]:
    """The JSON object a request body holds; BadRequest for anything else."""
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise BadRequest("the request body is not valid JSON") from None
    except RecursionError:  # [[[[...]]]] thousands deep fits in a small body
        raise BadRequest("the request body nests too deeply") from None
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    if b"\\u" in raw and not _encodable(body):
        # JSON may escape half a UTF-16 pair ("\ud800"); such a string is no text, cannot be sent
        # to a runner or a peer, nor even echoed back in an error.
        raise BadRequest("the request body holds an unpaired UTF-16 surrogate (\\ud800-\\udfff); send text")
    return body


def _encodable(body: object) -> bool:
    try:
        json.dumps(body, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return False
    return True


def chat_ask(body: Mapping[str, object]) -> Ask:
    """A `/v1/chat/completions` body, checked."""
    raw_messages = body.get("messages")
    if not isinstance(raw_messages, list) or not raw_messages:
        raise BadRequest("messages must be a non-empty list of {role, content}", "messages")
    if len(raw_messages) > MAX_MESSAGES:
        raise BadRequest(f"at most {MAX_MESSAGES} messages", "messages")
    messages = tuple(_message(item, index) for index, item in enumerate(raw_messages))
    if all(m.role == "system" for m in messages):
        raise BadRequest("messages hold no user or assistant turn", "messages")
    return _ask("chat", body, messages)


def text_ask(body: Mapping[str, object]) -> Ask:
    """A `/v1/completions` body, checked. The prompt becomes one user turn: orc's models are chat
    models and run with their chat template (docs/api.md)."""
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if isinstance(prompt, list):
        raise BadRequest("give one prompt (a string); several prompts in one request are not supported", "prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise BadRequest("prompt must be a non-empty string", "prompt")
    if body.get("echo") is True:
        raise BadRequest("echo is not supported", "echo")
    return _ask("text", body, (ChatMessage("user", prompt),))


def _ask(kind: str, body: Mapping[str, object], messages: tuple[ChatMessage, ...]) -> Ask:
    for field, why in REFUSED_FIELDS.items():
        if body.get(field) not in (None, False, [], {}) and not (field == "response_format" and _is_text_format(body[field])):
            raise BadRequest(why, field)
    model = body.get("model")
    if not isinstance(model, str) or not model.strip() or len(model) > MAX_MODEL_CHARS:
        raise BadRequest("model must name a model of the mesh or an ensemble (see GET /v1/models)", "model")
    if not model.strip().startswith(ENSEMBLE_PREFIX):
        try:
            split_model_ref(model.strip())
        except ValueError as error:  # `ID@` or `ID@NOSUCHRUNTIME`: no node could ever serve it
            raise BadRequest(f"model {error}; GET /v1/models lists the models", "model") from None
    stream = _flag(body, "stream")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise BadRequest("stream_options must be an object", "stream_options")
    include_usage = bool(options) and _flag(options, "include_usage", "stream_options.include_usage")  # type: ignore[arg-type]
    samples = _integer(body, "n", 1, MAX_SAMPLES, 1)
    max_tokens = _max_tokens(body)
    temperature = _number(body, "temperature", 0.0, 2.0, 1.0)
    top_p = _number(body, "top_p", 0.0, 1.0, None)
    seed = _integer(body, "seed", -(2**63), 2**63 - 1, None)
    params = GenerationParams(temperature=temperature, max_tokens=max_tokens, seed=seed, stop=_stops(body),
                              top_p=top_p if top_p is None or top_p > 0 else None)
    return Ask(kind, model.strip(), messages, params, samples, stream, include_usage)


def _is_text_format(value: object) -> bool:
    return isinstance(value, dict) and value.get("type") == "text"


def _message(item: object, index: int) -> ChatMessage:
    where = f"messages[{index}]"
    if not isinstance(item, dict):
        raise BadRequest(f"{where} must be an object with role and content", where)
    role = item.get("role")
    if not isinstance(role, str) or role not in ROLES:  # a list or an object is no role (nor hashable)
        shown = repr(role[:40]) if isinstance(role, str) else "a non-string"
        raise BadRequest(f"{where}.role must be one of system, developer, user, assistant, not {shown}",
                         f"{where}.role")
    content = item.get("content")
    if isinstance(content, list):  # content parts: text only
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise BadRequest(f"{where}.content: only text parts are supported", f"{where}.content")
            texts.append(part["text"])
        content = "\n".join(texts)
    if content is None and role == "assistant":
        content = ""
    if not isinstance(content, str):
        raise BadRequest(f"{where}.content must be a string or a list of text parts", f"{where}.content")
    return ChatMessage(ROLES[role], content)  # type: ignore[index]


def _flag(body: Mapping[str, object], key: str, param: str | None = None) -> bool:
    value = body.get(key, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise BadRequest(f"{param or key} must be true or false", param or key)
    return value


def _integer(body: Mapping[str, object], key: str, low: int, high: int, default: int | None) -> int | None:  # type: ignore[return]
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise BadRequest(f"{key} must be a whole number from {low} to {high}", key)
    return value


def _number(body: Mapping[str, object], key: str, low: float, high: float, default: float | None) -> float | None:  # type: ignore[return]
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not low <= value <= high:
        raise BadRequest(f"{key} must be a number from {low:g} to {high:g}", key)
    return float(value)


def _max_tokens(body: Mapping[str, object]) -> int:
    for key in ("max_completion_tokens", "max_tokens"):
        if body.get(key) is not None:
            return _integer(body, key, 1, MAX_COMPLETION_TOKENS, None)  # type: ignore[return-value]
    return DEFAULT_MAX_TOKENS


def _stops(body: Mapping[str, object]) -> tuple[str, ...]:
    stop = body.get("stop")
    if stop is None:
        return ()
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or len(stops) > MAX_STOPS \
            or not all(isinstance(s, str) and 0 < len(s) <= MAX_STOP_CHARS for s in stops):
        raise BadRequest(f"stop must be a string or a list of at most {MAX_STOPS} non-empty strings "
                         f"of at most {MAX_STOP_CHARS} characters", "stop")
    return tuple(stops)


# ---- what goes back ----

@dataclass(frozen=True)
class Choice:
    index: int
    text: str
    finish_reason: str  # "stop" or "length"


def usage_json(usage: Usage) -> dict[str, int]:
    return {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.prompt_tokens + usage.completion_tokens}


def completion_json(ask: Ask, response_id: str, created: int, choices: Sequence[Choice], usage: Usage,
                    extension: Mapping[str, object]) -> dict[str, object]:
    """The whole (not streamed) response; `extension` goes under `orc` (nodes, run id)."""
    if ask.kind == "chat":
        listed: list[dict[str, object]] = [
            {"index": c.index, "message": {"role": "assistant", "content": c.text}, "logprobs": None,
             "finish_reason": c.finish_reason} for c in choices]
        kind = "chat.completion"
    else:
        listed = [{"index": c.index, "text": c.text, "logprobs": None, "finish_reason": c.finish_reason}
                  for c in choices]
        kind = "text_completion"
    return {"id": response_id, "object": kind, "created": created, "model": ask.model, "choices": listed,
            "usage": usage_json(usage), "system_fingerprint": None, "orc": dict(extension)}


def chunk_json(ask: Ask, response_id: str, created: int, index: int, *, text: str | None = None,
               role: bool = False, finish_reason: str | None = None,
               extension: Mapping[str, object] | None = None) -> dict[str, object]:
    """One streamed chunk of sample `index`: its role (the first), a piece of text, or its end."""
    if ask.kind == "chat":
        delta: dict[str, object] = {}
        if role:
            delta["role"] = "assistant"
        if text is not None or role:
            delta["content"] = text or ""
        choice: dict[str, object] = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        kind = "chat.completion.chunk"
    else:
        choice = {"index": index, "text": text or "", "logprobs": None, "finish_reason": finish_reason}
        kind = "text_completion"
    chunk: dict[str, object] = {"id": response_id, "object": kind, "created": created, "model": ask.model,
                                "system_fingerprint": None, "choices": [choice]}
    if ask.include_usage:
        chunk["usage"] = None  # OpenAI: null on every chunk but the last, which carries it
    if extension:
        chunk["orc"] = dict(extension)
    return chunk


def usage_chunk_json(ask: Ask, response_id: str, created: int, usage: Usage,
                     extension: Mapping[str, object]) -> dict[str, object]:
    """The last chunk with `stream_options.include_usage`: no choices, the whole request's usage."""
    return {"id": response_id, "object": "chat.completion.chunk" if ask.kind == "chat" else "text_completion",
            "created": created, "model": ask.model, "system_fingerprint": None, "choices": [],
            "usage": usage_json(usage), "orc": dict(extension)}


def error_json(message: str, kind: str, code: str | None = None, param: str | None = None) -> dict[str, object]:
    """OpenAI's error shape."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def sse(data: Mapping[str, object] | str) -> bytes:
    """One server-sent event: `data: JSON` and a blank line."""
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return f"data: {text}\n\n".encode()
