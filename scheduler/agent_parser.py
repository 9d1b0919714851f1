"""One agent's YAML mapping -> a frozen `AgentSpec`, every problem collected, none raised.

The loader (`orc.scheduler.loader`) calls `parse_agent` for each entry of `agents:`; this module
knows the keys of each agent kind, their types and ranges, `${agent.field}` references and
`when` conditions.
"""

from __future__ import annotations

import re
from pathlib import Path

from orc.scheduler.ensemble import (
    AgentName,
    AgentSpec,
    AgentTask,
    DispatchTask,
    EnsembleTask,
    FieldRef,
    LlmTask,
    LoopTask,
    Placement,
    ScriptTask,
)
from orc.scheduler.errors import Problem, did_you_mean
from orc.scheduler.field_checks import (  # kind_of, parse_condition and parse_ref: the loader's too
    CONDITION_FIX,
    Bad,
    condition_problem,
    kind_of,
    number,
    parse_condition,
    parse_ref,
    whole_number,
)
from orc.scheduler.model_refs import split_model_ref
from orc.scheduler.primitives_parser import parse_budget, parse_cascade, parse_vote
from orc.scheduler.values import freeze

MAX_LOOP_ITERATIONS = 100
TOP_LEVEL_KEYS = ("name", "description", "default_task", "agents", "budget", "ship_scripts")
COMMON_KEYS = (
    "name", "depends_on", "fan_out", "input_key", "input_scope", "when",
    "timeout_seconds", "retries", "placement", "output_format", "budget",
)
LLM_KEYS = ("model_profile", "model", "provider", "system_prompt", "temperature", "max_tokens", "options",
            "queue_timeout_seconds")
SCRIPT_KEYS = ("script", "parameters")
COMPOSITION_KEYS = ("ensemble", "loop", "dispatch", "cascade")
AGENT_KEYS = COMMON_KEYS + LLM_KEYS + ("vote",) + SCRIPT_KEYS + COMPOSITION_KEYS
INPUT_SCOPES = ("full", "dependencies", "input")
OUTPUT_FORMATS = ("text", "json")

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,127}$")


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
            bad(f"invalid 'when': {condition_problem(raw['when'])}", CONDITION_FIX)
    timeout = number(raw, "timeout_seconds", bad, low=0.001, high=7 * 24 * 3600)
    queue_timeout = number(raw, "queue_timeout_seconds", bad, low=0.001, high=7 * 24 * 3600)
    retries = whole_number(raw, "retries", bad, low=0, high=10)
    placement = _parse_placement(raw.get("placement"), bad)
    output_format = raw.get("output_format")
    if output_format is not None and output_format not in OUTPUT_FORMATS:
        bad(f"'output_format' must be one of {', '.join(OUTPUT_FORMATS)}, not {output_format!r}")
        output_format = None
    budget = parse_budget(raw["budget"], bad) if raw.get("budget") is not None else None
    if task is None and len(problems) == before:
        # Every rejection above is reported; this is the net under that rule, so an agent is never
        # dropped from the ensemble without a word.
        bad("this agent could not be read", "see docs/ensembles.md for the keys of each kind of agent")
    if len(problems) > before or task is None:
        return None
    return AgentSpec(
        name=AgentName(name), task=task, depends_on=depends_on, fan_out=fan_out, input_key=input_key,
        input_scope=input_scope, when=when, timeout_seconds=timeout, queue_timeout_seconds=queue_timeout,
        retries=retries,
        placement=placement, output_format=output_format, budget=budget,
    )


def _parse_task(raw: dict, bad: Bad) -> AgentTask | None:
    kinds = [k for k in ("script", "ensemble", "loop", "dispatch", "cascade") if k in raw]
    llm_keys = [k for k in (*LLM_KEYS, "vote") if k in raw]
    if len(kinds) > 1:
        bad(f"has both {' and '.join(repr(k) for k in kinds)}", "an agent does exactly one thing")
        return None
    composed = [k for k in kinds if k != "cascade"]  # a cascade takes some LLM keys: parse_cascade checks them
    if "vote" in raw and composed:
        bad(f"'vote' only applies to LLM agents, and this is a '{kinds[0]}' agent",
            "vote on an LLM agent (model: ...), or on a cascade's levels")
        return None
    if composed and llm_keys and not (kinds == ["script"] and set(llm_keys) <= {"system_prompt"}):
        bad(f"'{kinds[0]}' agent cannot take model keys ({', '.join(llm_keys)})",
            "split it into a script agent and an LLM agent")
        return None
    if "parameters" in raw and kinds != ["script"]:
        bad("'parameters' only applies to script agents", "remove it; an LLM agent's settings go in 'options'")
        return None
    kind = kinds[0] if kinds else "llm"
    if kind == "cascade":
        return parse_cascade(raw, bad, _parse_llm)
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


def _parse_loop(loop: object, bad: Bad) -> LoopTask | None:
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
            bad(f"invalid 'loop.until': {condition_problem(loop['until'])}",
                CONDITION_FIX + ", naming an agent of the body")
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


def _parse_llm(raw: dict, bad: Bad) -> LlmTask | None:
    ok = True
    strings: dict[str, str | None] = {}
    for key in ("model_profile", "model", "provider", "system_prompt"):
        value = raw.get(key)
        if value is not None and not isinstance(value, str):
            bad(f"'{key}' must be a string, not {kind_of(value)}")
            ok = False
        strings[key] = value
    temperature = number(raw, "temperature", bad, low=0.0, high=5.0)
    max_tokens = whole_number(raw, "max_tokens", bad, low=1, high=1 << 17)
    options = raw.get("options") or {}
    if not isinstance(options, dict):
        bad(f"'options' must be a mapping, not {kind_of(options)}")
        ok = False
    # A key written as null counts as absent; a key present but rejected has been reported.
    if (raw.get("temperature") is not None and temperature is None) or \
            (raw.get("max_tokens") is not None and max_tokens is None):
        ok = False
    vote = None
    if "vote" in raw:
        vote = parse_vote(raw["vote"], bad)
        ok = ok and vote is not None
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
        options=freeze(options), vote=vote,
    )


def parse_depends_on(value: object, bad: Bad) -> tuple[AgentName, ...]:
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


def _bool(raw: dict, key: str, default: bool, bad: Bad) -> bool:
    value = raw.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        bad(f"'{key}' must be true or false, not {value!r}")
        return default
    return value


def _parse_placement(value: object, bad: Bad) -> Placement:
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
