"""What an LLM agent is sent, and what its answer becomes: pure functions of the bound agent and its input."""

from __future__ import annotations

import json
from collections.abc import Mapping

from orc.node.models.runtimes.base import ChatMessage, GenerationParams
from orc.scheduler.ensemble import AgentSpec, LlmTask
from orc.scheduler.profiles import ResolvedModel
from orc.scheduler.run import AgentInput
from orc.scheduler.values import structured, thaw


class AnswerNotJson(ValueError):
    """The agent asked for JSON (`output_format: json`) and the model's answer is not JSON."""


def render_value(value: object) -> str:
    """A value as prompt text: strings as they are, a list of strings (a gathered fan-out) as
    bullet lines, other data as indented JSON."""
    data = thaw(value)
    if isinstance(data, str):
        return data
    if isinstance(data, list) and data and all(isinstance(item, str) for item in data):
        return "\n".join("- " + " ".join(item.split()) for item in data)
    return json.dumps(data, indent=2, ensure_ascii=False, default=str)


def build_messages(system_prompt: str | None, agent_input: AgentInput, value: object) -> list[ChatMessage]:
    """The chat an LLM agent sees: its system prompt, then the upstream results its scope allows, then its input.

    The input comes last: small models follow what they read most recently, and the
    upstream results are material for that input, not the question itself.
    """
    parts: list[str] = []
    if agent_input.scope in ("full", "dependencies") and agent_input.dependencies:
        sections = []
        for dep, result in agent_input.dependencies:
            if result.status == "completed":
                sections.append(f"[{dep}]\n{render_value(result.output).strip()}")
            elif result.status == "failed":
                sections.append(f"[{dep}]\n(this agent failed: {result.error})")
        if sections:
            parts.append("What the agents before you wrote:\n\n" + "\n\n".join(sections))
    if agent_input.scope in ("full", "input"):
        text = render_value(value).strip()
        if text:
            parts.append(("Input:\n" + text) if len(parts) else text)
    messages = []
    if system_prompt:
        messages.append(ChatMessage("system", system_prompt.strip()))
    messages.append(ChatMessage("user", "\n\n".join(parts) or "(no input)"))
    return messages


def generation_params(resolved: ResolvedModel, spec: AgentSpec, seed: int | None) -> GenerationParams:
    """Sampling settings: the resolved profile, then the agent's `options` (`top_p`, `stop`, `seed`).

    Other options (llm-orc passes provider-specific ones such as `think`) do not apply to
    local runtimes and are ignored.
    """
    options: Mapping[str, object] = spec.task.options if isinstance(spec.task, LlmTask) else {}
    top_p = options.get("top_p")
    stop = options.get("stop")
    option_seed = options.get("seed")
    return GenerationParams(
        temperature=resolved.temperature,
        max_tokens=resolved.max_tokens,
        seed=option_seed if isinstance(option_seed, int) and not isinstance(option_seed, bool) else seed,
        stop=(stop,) if isinstance(stop, str) else tuple(s for s in (stop or ()) if isinstance(s, str)),  # type: ignore[union-attr]
        top_p=float(top_p) if isinstance(top_p, (int, float)) and not isinstance(top_p, bool) else None,
    )


def answer_output(spec: AgentSpec, text: str) -> object:
    """The agent's output for the model's answer `text`: parsed JSON with `output_format: json`
    (AnswerNotJson if it is not), else the stripped text."""
    if spec.output_format == "json":
        parsed = structured(text)
        if parsed is text:
            raise AnswerNotJson("output_format is json but the model's answer is not JSON")
        return parsed
    return text.strip()
