"""One agent's YAML mapping -> a frozen `AgentSpec`, every problem collected, none raised.

The loader (`orc.scheduler.loader`) calls `parse_agent` for each entry of `agents:`; this module
knows the keys of each agent kind, their types and ranges, `${agent.field}` references and
`when` conditions.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Callable

from orc.scheduler.ensemble import (
    AgentName,
    AgentSpec,
    AgentTask,
    Condition,
    DispatchTask,
    EnsembleTask,
    FieldRef,
    LlmTask,
    LoopTask,
    Placement,
    ScriptTask,
)
from orc.scheduler.errors import Problem, did_you_mean
from orc.scheduler.model_refs import split_model_ref
from orc.scheduler.values import freeze

MAX_LOOP_ITERATIONS = 100
TOP_LEVEL_KEYS = ("name", "description", "default_task", "agents")
COMMON_KEYS = (
    "name", "depends_on", "fan_out", "input_key", "input_scope", "when",
    "timeout_seconds", "retries", "placement", "output_format",
)
LLM_KEYS = ("model_profile", "model", "provider", "system_prompt", "temperature", "max_tokens", "options",
            "queue_timeout_seconds")
SCRIPT_KEYS = ("script", "parameters")
COMPOSITION_KEYS = ("ensemble", "loop", "dispatch")
AGENT_KEYS = COMMON_KEYS + LLM_KEYS + SCRIPT_KEYS + COMPOSITION_KEYS
INPUT_SCOPES = ("full", "dependencies", "input")
OUTPUT_FORMATS = ("text", "json")

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,127}$")
_REF = re.compile(r"^\$\{\s*([A-Za-z0-9_][A-Za-z0-9_-]*)((?:\.[A-Za-z0-9_-]+)*)\s*\}$")
_COMPARISON = re.compile(r"^(\$\{[^}]*\})\s*(==|!=)\s*(.+)$")


def kind_of(value: object) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", int: "a number",
            float: "a number", type(None): "empty"}.get(type(value), type(value).__name__)


def optional_str(mapping: dict, key: str, source: Path, agent: str | None, problems: list[Problem]) -> str | None:
    value = mapping.get(key)
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "script":
        return str(value)
    if not isinstance(value, str):
        problems.append(Problem(source, agent, f"'{key}' must be a string, not {kind_of(value)}"))
        return None
    return value


def parse_ref(text: object) -> FieldRef | None:
    """`${agent.field.sub}` -> FieldRef, or None if `text` is not exactly one reference."""
    if not isinstance(text, str):
        return None
    match = _REF.match(text.strip())
    if not match:
        return None
    path = tuple(part for part in match.group(2).split(".") if part)
    return FieldRef(AgentName(match.group(1)), path)


def parse_condition(value: object) -> Condition | None:
    """`${dep.field}` (truthiness) or `${dep.field} == literal` / `!=`; None if malformed."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    comparison = _COMPARISON.match(text)
    if comparison:
        ref = parse_ref(comparison.group(1))
        if ref is None:
            return None
        literal = _literal(comparison.group(3))
        if literal is _INVALID:
            return None
        return Condition(ref, comparison.group(2), literal)
    ref = parse_ref(text)
    return Condition(ref) if ref else None


_INVALID = object()


def _literal(text: str) -> object:
    """A guard's right-hand side: a quoted string, true/false/null, a number, or a bare word.

    Deliberately not YAML 1.1, where `yes`, `on` and `no` would silently become booleans.
    """
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("null", "none", "~"):
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        pass
    if not text or text[0] in "[{" or " " in text:
        return _INVALID
    return text


def parse_agent(raw: object, index: int, source: Path, problems: list[Problem]) -> AgentSpec | None:
    if not isinstance(raw, dict):
        problems.append(Problem(source, f"#{index + 1}", f"each agent must be a mapping, not {kind_of(raw)}"))
        return None
    name = raw.get("name")
    label = name if isinstance(name, str) and name else f"#{index + 1}"
    before = len(problems)

    def bad(message: str, fix: str | None = None) -> None:
        problems.append(Problem(source, label, message, fix))

    if not isinstance(name, str) or not name:
        bad("missing 'name'", "give every agent a unique name")
    elif not _NAME.match(name):
        bad(f"invalid name {name!r}", "use letters, digits, '_' and '-'")
    for key in raw:
        if key not in AGENT_KEYS:
            bad(f"unknown key '{key}'", did_you_mean(str(key), AGENT_KEYS) or "see docs/ensembles.md for the keys")

    task = _parse_task(raw, bad)
    depends_on = parse_depends_on(raw.get("depends_on"), bad)
    fan_out = _bool(raw, "fan_out", False, bad)
    if fan_out and not depends_on:
        bad("'fan_out' needs 'depends_on'", "fan-out runs once per item of an upstream agent's list output")
    input_key = optional_str(raw, "input_key", source, label, problems)
    input_scope = raw.get("input_scope", "full")
    if input_scope not in INPUT_SCOPES:
        bad(f"'input_scope' must be one of {', '.join(INPUT_SCOPES)}, not {input_scope!r}")
        input_scope = "full"
    when = None
    if "when" in raw:
        when = parse_condition(raw["when"])
        if when is None:
            bad(f"invalid 'when': {raw['when']!r}", "write '${agent.field}' or '${agent.field} == value'")
    timeout = _number(raw, "timeout_seconds", bad, low=0.001, high=7 * 24 * 3600)
    queue_timeout = _number(raw, "queue_timeout_seconds", bad, low=0.001, high=7 * 24 * 3600)
    retries = _integer(raw, "retries", bad, low=0, high=10)
    placement = _parse_placement(raw.get("placement"), bad)
    output_format = raw.get("output_format")
    if output_format is not None and output_format not in OUTPUT_FORMATS:
        bad(f"'output_format' must be one of {', '.join(OUTPUT_FORMATS)}, not {output_format!r}")
        output_format = None
    if len(problems) > before or task is None:
        return None
    return AgentSpec(
        name=AgentName(name), task=task, depends_on=depends_on, fan_out=fan_out, input_key=input_key,
        input_scope=input_scope, when=when, timeout_seconds=timeout, queue_timeout_seconds=queue_timeout,
        retries=retries,
        placement=placement, output_format=output_format,
    )


def _parse_task(raw: dict, bad: Callable[..., None]) -> AgentTask | None:
    kinds = [k for k in ("script", "ensemble", "loop", "dispatch") if k in raw]
    llm_keys = [k for k in LLM_KEYS if k in raw]
    if len(kinds) > 1:
        bad(f"has both {' and '.join(repr(k) for k in kinds)}", "an agent does exactly one thing")
        return None
    if kinds and llm_keys and not (kinds == ["script"] and set(llm_keys) <= {"system_prompt"}):
        bad(f"'{kinds[0]}' agent cannot take model keys ({', '.join(llm_keys)})",
            "split it into a script agent and an LLM agent")
        return None
    if "parameters" in raw and kinds != ["script"]:
        bad("'parameters' only applies to script agents")
        return None
    kind = kinds[0] if kinds else "llm"
    if kind == "script":
        script = raw["script"]
        if not isinstance(script, str) or not script.strip():
            bad("'script' must be a path to a script file")
            return None
        parameters = raw.get("parameters") or {}
        if not isinstance(parameters, dict):
            bad(f"'parameters' must be a mapping, not {kind_of(parameters)}")
            return None
        return ScriptTask(script=script, parameters=freeze(parameters))
    if kind == "ensemble":
        ref = raw["ensemble"]
        if not isinstance(ref, str) or not ref.strip():
            bad("'ensemble' must name an ensemble")
            return None
        return EnsembleTask(ref.strip())
    if kind == "dispatch":
        target = parse_ref(raw["dispatch"])
        if target is None:
            bad(f"'dispatch' must be a reference like '${{agent.field}}', not {raw['dispatch']!r}")
            return None
        return DispatchTask(target)
    if kind == "loop":
        return _parse_loop(raw["loop"], bad)
    return _parse_llm(raw, bad)


def _parse_loop(loop: object, bad: Callable[..., None]) -> LoopTask | None:
    if not isinstance(loop, dict):
        bad(f"'loop' must be a mapping with body, until, max_iterations, not {kind_of(loop)}")
        return None
    for key in loop:
        if key not in ("body", "until", "max_iterations", "carry"):
            bad(f"unknown loop key '{key}'", did_you_mean(str(key), ("body", "until", "max_iterations", "carry")))
            return None
    body = loop.get("body")
    if not isinstance(body, str) or not body.strip():
        bad("'loop.body' must name the ensemble to repeat")
        return None
    until = None
    if loop.get("until") is not None:
        until = parse_condition(loop["until"])
        if until is None:
            bad(f"invalid 'loop.until': {loop['until']!r}", "write '${agent.field}' naming an agent of the body")
            return None
    iterations = loop.get("max_iterations")
    if isinstance(iterations, bool) or not isinstance(iterations, int) or not 1 <= iterations <= MAX_LOOP_ITERATIONS:
        bad(f"'loop.max_iterations' must be a whole number from 1 to {MAX_LOOP_ITERATIONS}, not {iterations!r}",
            "every loop must be bounded")
        return None
    carry = None
    if loop.get("carry") is not None:
        carry = parse_ref(loop["carry"])
        if carry is None:
            bad(f"invalid 'loop.carry': {loop['carry']!r}", "write '${agent.field}'")
            return None
    return LoopTask(body=body.strip(), until=until, max_iterations=iterations, carry=carry)


def _parse_llm(raw: dict, bad: Callable[..., None]) -> LlmTask | None:
    ok = True
    strings: dict[str, str | None] = {}
    for key in ("model_profile", "model", "provider", "system_prompt"):
        value = raw.get(key)
        if value is not None and not isinstance(value, str):
            bad(f"'{key}' must be a string, not {kind_of(value)}")
            ok = False
        strings[key] = value
    temperature = _number(raw, "temperature", bad, low=0.0, high=5.0)
    max_tokens = _integer(raw, "max_tokens", bad, low=1, high=1 << 17)
    options = raw.get("options") or {}
    if not isinstance(options, dict):
        bad(f"'options' must be a mapping, not {kind_of(options)}")
        ok = False
    if ("temperature" in raw and temperature is None) or ("max_tokens" in raw and max_tokens is None):
        ok = False
    if isinstance(strings["model"], str):
        try:
            split_model_ref(strings["model"])
        except ValueError as error:
            bad(f"model {error}", f"write '{strings['model'].rpartition('@')[0] or 'ID'}' to let the node choose, "
                "or pin a variant with '@llama_cpp' or '@mlx'")
            ok = False
    if not ok:
        return None
    return LlmTask(
        model_profile=strings["model_profile"], model=strings["model"], provider=strings["provider"],
        system_prompt=strings["system_prompt"], temperature=temperature, max_tokens=max_tokens,
        options=freeze(options),
    )


def parse_depends_on(value: object, bad: Callable[..., None]) -> tuple[AgentName, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        bad(f"'depends_on' must be a list of agent names, not {kind_of(value)}")
        return ()
    names: list[AgentName] = []
    for item in value:
        if isinstance(item, dict) and isinstance(item.get("agent_name"), str):
            extra = [k for k in item if k != "agent_name"]
            if extra:
                bad(f"unknown key '{extra[0]}' in depends_on entry", "write {agent_name: NAME}")
            names.append(AgentName(item["agent_name"]))
        elif isinstance(item, str) and item:
            names.append(AgentName(item))
        else:
            bad(f"invalid depends_on entry {item!r}", "write an agent name or {agent_name: NAME}")
    return tuple(dict.fromkeys(names))


def _bool(raw: dict, key: str, default: bool, bad: Callable[..., None]) -> bool:
    value = raw.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        bad(f"'{key}' must be true or false, not {value!r}")
        return default
    return value


def _number(raw: dict, key: str, bad: Callable[..., None], *, low: float, high: float) -> float | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not low <= value <= high:
        bad(f"'{key}' must be a number from {low:g} to {high:g}, not {value!r}")
        return None
    return float(value)


def _integer(raw: dict, key: str, bad: Callable[..., None], *, low: int, high: int) -> int | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        bad(f"'{key}' must be a whole number from {low} to {high}, not {value!r}")
        return None
    return value


def _parse_placement(value: object, bad: Callable[..., None]) -> Placement:
    if value is None:
        return Placement()
    if not isinstance(value, dict):
        bad(f"'placement' must be a mapping, not {kind_of(value)}")
        return Placement()
    allowed = ("local_only", "require_tags", "prefer_tags")
    for key in value:
        if key not in allowed:
            bad(f"unknown placement key '{key}'", did_you_mean(str(key), allowed))
    local_only = _bool(value, "local_only", False, bad)
    tags: dict[str, frozenset[str]] = {}
    for key in ("require_tags", "prefer_tags"):
        items = value.get(key) or []
        if isinstance(items, str):
            items = [items]
        if not isinstance(items, list) or not all(isinstance(t, str) for t in items):
            bad(f"'placement.{key}' must be a list of tags")
            items = []
        tags[key] = frozenset(items)
    return Placement(local_only, tags["require_tags"], tags["prefer_tags"])
