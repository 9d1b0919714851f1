"""The ensemble primitives' YAML: `vote:`, `cascade:` and `budget:` -> Vote, CascadeTask, Budget.

Called by `orc.scheduler.agent_parser` (and the loader, for the top-level `budget:`). Like the
rest of the parser, every problem is reported through `bad(message, fix)` and nothing raises.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Callable

from orc.scheduler.ensemble import CASCADE_FIELDS, Budget, CascadeLevel, CascadeTask, Condition, Judge, LlmTask, Vote
from orc.scheduler.errors import did_you_mean
from orc.scheduler.field_checks import (
    NUMERIC_OPS,
    Bad,
    condition_problem,
    kind_of,
    number,
    parse_condition,
    whole_number,
)
from orc.scheduler.model_refs import split_model_ref

VOTE_KEYS = ("samples", "by", "extract", "temperature", "models", "judge", "script")
VOTE_METHODS = ("majority", "judge", "script")
JUDGE_KEYS = ("model", "system_prompt", "max_tokens")
BUDGET_KEYS = ("max_tokens", "max_seconds")
MIN_SAMPLES, MAX_SAMPLES = 2, 64  # one sample is no vote; 64 already multiplies the cost of an agent 64 times
MAX_VOTE_MODELS = 8
MAX_LEVELS = 8
# Patterns come from ensemble files, which may be shared: a long pattern is no use to anyone
# and the cap keeps compile time trivial. (Catastrophic backtracking cannot be ruled out by
# a check; the runner bounds each match by the sample's length, itself bounded by max_tokens.)
MAX_EXTRACT_CHARS = 1000
# The agent's own LLM keys a cascade passes to its levels as defaults.
CASCADE_DEFAULT_KEYS = ("system_prompt", "temperature", "max_tokens", "options", "provider")
LEVEL_KEYS = ("model", "model_profile", "system_prompt", "temperature", "max_tokens", "options", "vote", "accept_if")
# Fields only a level that voted has.
_VOTE_FIELDS = ("agreement", "ballot")
MAX_BUDGET_TOKENS = 10**9
MAX_BUDGET_SECONDS = 7 * 24 * 3600.0

ParseLlm = Callable[[dict, Bad], "LlmTask | None"]


def parse_vote(value: object, bad: Bad, *, where: str = "vote") -> Vote | None:
    """A `vote:` mapping -> Vote; None (with every problem reported) when it is not valid."""
    if not isinstance(value, dict):
        bad(f"'{where}' must be a mapping with at least 'samples', not {kind_of(value)}",
            f"write {where}: {{samples: 5}}")
        return None
    ok = True
    for key in value:
        if key not in VOTE_KEYS:
            bad(f"unknown {where} key '{key}'", did_you_mean(str(key), VOTE_KEYS) or f"{where} keys are: "
                + ", ".join(VOTE_KEYS))
            ok = False
    samples = whole_number(value, "samples", bad, low=MIN_SAMPLES, high=MAX_SAMPLES, label=f"{where}.samples")
    if value.get("samples") is None:
        bad(f"'{where}' needs 'samples'", f"write samples: N with N from {MIN_SAMPLES} to {MAX_SAMPLES}")
    by = "majority" if value.get("by") is None else value["by"]
    if by not in VOTE_METHODS:
        bad(f"'{where}.by' must be one of {', '.join(VOTE_METHODS)}, not {by!r}",
            did_you_mean(str(by), VOTE_METHODS))
        ok = False
    extract = _extract(value.get("extract"), bad, where)
    temperature = number(value, "temperature", bad, low=0.0, high=5.0, label=f"{where}.temperature")
    models = _models(value.get("models"), bad, where)
    judge = None
    if "judge" in value:
        judge = _judge(value["judge"], bad, where)
        if by != "judge":
            bad(f"'{where}.judge' is only used with by: judge, and this vote is by {by}",
                "add 'by: judge' or remove 'judge'")
            ok = False
    elif by == "judge":
        judge = Judge()  # the agent's own model judges, with the runner's prompt
    script = value.get("script")
    if script is not None and (not isinstance(script, str) or not script.strip()):
        bad(f"'{where}.script' must be a path to a script file, not {kind_of(script)}")
        ok = False
    elif script is not None and by != "script":
        bad(f"'{where}.script' is only used with by: script, and this vote is by {by}",
            "add 'by: script' or remove 'script'")
        ok = False
    elif script is None and by == "script":
        bad(f"'{where}' by: script needs 'script'", "name the script that picks the winner: script: pick.py")
        ok = False
    # A key written as null counts as absent; a key present but rejected has been reported.
    invalid = samples is None or any(value.get(key) is not None and parsed is None for key, parsed in
                                     (("extract", extract), ("temperature", temperature), ("models", models),
                                      ("judge", judge)))
    if not ok or invalid:
        return None
    return Vote(samples=samples, by=by, extract=extract, temperature=temperature, models=models or (),
                judge=judge, script=script.strip() if script else None)


def _extract(value: object, bad: Bad, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        bad(f"'{where}.extract' must be a regular expression, not {kind_of(value)}",
            "write e.g. extract: '(?i)answer:\\s*(yes|no)'")
        return None
    if len(value) > MAX_EXTRACT_CHARS:
        bad(f"'{where}.extract' is {len(value)} characters; at most {MAX_EXTRACT_CHARS} are allowed",
            "match only the words that make the ballot, e.g. '(?i)answer:\\s*(yes|no)'")
        return None
    try:
        re.compile(value)
    except (re.error, RecursionError, OverflowError) as error:
        bad(f"'{where}.extract' is not a valid regular expression ({error}): {value!r}",
            "check the brackets and escapes; in YAML, single-quote the pattern so backslashes stay as written")
        return None
    return value


def _models(value: object, bad: Bad, where: str) -> tuple[str, ...] | None:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or len(value) > MAX_VOTE_MODELS:
        bad(f"'{where}.models' must be a list of 1 to {MAX_VOTE_MODELS} models, not "
            + (f"{len(value)} of them" if isinstance(value, list) else kind_of(value)))
        return None
    models: list[str] = []
    for item in value:
        if not isinstance(item, str) or not item.strip():
            bad(f"'{where}.models' entries must be model names, not {kind_of(item)}")
            return None
        if not _model_ok(item, bad, f"{where}.models"):
            return None
        models.append(item.strip())
    return tuple(models)


def _model_ok(ref: str, bad: Bad, where: str) -> bool:
    try:
        split_model_ref(ref)
    except ValueError as error:
        bad(f"'{where}': model {error}", f"write '{ref.rpartition('@')[0] or 'ID'}' to let the node choose, "
            "or pin a variant with '@llama_cpp' or '@mlx'")
        return False
    return True


def _judge(value: object, bad: Bad, where: str) -> Judge | None:
    if not isinstance(value, dict):
        bad(f"'{where}.judge' must be a mapping of {', '.join(JUDGE_KEYS)}, not {kind_of(value)}",
            "write judge: {model: gemma3-270m}")
        return None
    ok = True
    for key in value:
        if key not in JUDGE_KEYS:
            bad(f"unknown {where}.judge key '{key}'", did_you_mean(str(key), JUDGE_KEYS)
                or f"judge keys are: {', '.join(JUDGE_KEYS)}")
            ok = False
    strings: dict[str, str | None] = {}
    for key in ("model", "system_prompt"):
        item = value.get(key)
        if item is not None and (not isinstance(item, str) or not item.strip()):
            bad(f"'{where}.judge.{key}' must be a string, not {kind_of(item)}")
            ok = False
            item = None
        strings[key] = item
    if strings["model"] is not None and not _model_ok(strings["model"], bad, f"{where}.judge"):
        ok = False
    max_tokens = whole_number(value, "max_tokens", bad, low=1, high=1 << 17, label=f"{where}.judge.max_tokens")
    if not ok or (value.get("max_tokens") is not None and max_tokens is None):
        return None
    return Judge(model=strings["model"], system_prompt=strings["system_prompt"], max_tokens=max_tokens)


def parse_budget(value: object, bad: Bad, *, where: str = "budget") -> Budget | None:
    """A `budget:` mapping -> Budget; None (reported) when it is not valid."""
    if not isinstance(value, dict):
        bad(f"'{where}' must be a mapping of max_tokens and/or max_seconds, not {kind_of(value)}",
            "write budget: {max_tokens: 4000, max_seconds: 120}")
        return None
    ok = True
    for key in value:
        if key not in BUDGET_KEYS:
            bad(f"unknown {where} key '{key}'", did_you_mean(str(key), BUDGET_KEYS)
                or "a budget has max_tokens and/or max_seconds")
            ok = False
    max_tokens = whole_number(value, "max_tokens", bad, low=1, high=MAX_BUDGET_TOKENS, label=f"{where}.max_tokens")
    max_seconds = number(value, "max_seconds", bad, low=0.001, high=MAX_BUDGET_SECONDS, label=f"{where}.max_seconds")
    if value.get("max_tokens") is None and value.get("max_seconds") is None and ok:
        bad(f"'{where}' sets no limit", "give it max_tokens, max_seconds or both")
        return None
    if not ok or (value.get("max_tokens") is not None and max_tokens is None) or \
            (value.get("max_seconds") is not None and max_seconds is None):
        return None
    return Budget(max_tokens=max_tokens, max_seconds=max_seconds)


def parse_cascade(raw: dict, bad: Bad, parse_llm: ParseLlm) -> CascadeTask | None:
    """An agent with `cascade:` -> CascadeTask. `raw` is the whole agent mapping: its
    CASCADE_DEFAULT_KEYS are every level's defaults; `parse_llm` checks a level's merged keys."""
    for key in ("model", "model_profile", "vote"):
        if key in raw:
            bad(f"a cascade agent cannot have '{key}' itself", f"put '{key}' on the levels of 'cascade'")
            return None
    levels_raw = raw["cascade"]
    if not isinstance(levels_raw, list) or not levels_raw or len(levels_raw) > MAX_LEVELS:
        shown = f"{len(levels_raw)} levels" if isinstance(levels_raw, list) else kind_of(levels_raw)
        bad(f"'cascade' must be a list of 1 to {MAX_LEVELS} levels, not {shown}",
            "write each level as a mapping with 'model' (and 'accept_if' on all but the last)")
        return None
    defaults = {key: raw[key] for key in CASCADE_DEFAULT_KEYS if key in raw}
    ok = parse_llm(defaults, bad) is not None
    if not ok:
        defaults = {}  # reported once here, not again for every level that inherits it; the levels are still checked
    levels: list[CascadeLevel] = []
    last = len(levels_raw) - 1
    for index, level_raw in enumerate(levels_raw):
        level = _parse_level(level_raw, index, index == last, defaults, bad, parse_llm)
        if level is None:
            ok = False
        else:
            levels.append(level)
    return CascadeTask(tuple(levels)) if ok else None


def _parse_level(value: object, index: int, is_last: bool, defaults: dict, bad: Bad,
                 parse_llm: ParseLlm) -> CascadeLevel | None:
    where = f"cascade level {index + 1} (L{index})"  # counted as people do, and named as progress shows it

    def level_bad(message: str, fix: str | None = None) -> None:
        bad(f"{where}: {message}", fix)

    if not isinstance(value, dict):
        level_bad(f"must be a mapping with 'model', not {kind_of(value)}", "write - model: smollm2-135m-instruct")
        return None
    unknown = [key for key in value if key not in LEVEL_KEYS]
    for key in unknown:
        level_bad(f"unknown key '{key}'",
                  did_you_mean(str(key), LEVEL_KEYS) or f"a level takes: {', '.join(LEVEL_KEYS)}")
    ok = not unknown
    if value.get("model") is None and value.get("model_profile") is None:
        level_bad("a cascade level with no model", "give it 'model' or 'model_profile'")
        ok = False
    merged = {**defaults, **{k: v for k, v in value.items() if k not in ("vote", "accept_if")}}
    if isinstance(defaults.get("options"), dict) and isinstance(value.get("options"), dict):
        merged["options"] = {**defaults["options"], **value["options"]}  # the level's own win, key by key
    task = parse_llm(merged, level_bad)
    vote = parse_vote(value["vote"], level_bad) if "vote" in value else None
    accept_if = None
    if "accept_if" in value and is_last:
        level_bad("the last level may not have 'accept_if': it is accepted as it is",
                  "remove it, or add a level after this one")
        ok = False
    elif "accept_if" in value:
        accept_if = parse_accept_if(value["accept_if"], vote is not None or "vote" in value, level_bad)
        ok = ok and accept_if is not None
    elif not is_last and not unknown:  # an unknown key may be a misspelled accept_if: said once, above
        level_bad("needs 'accept_if': when is its answer good enough to stop?",
                  "write e.g. accept_if: '${agreement} >= 0.67' (only the last level goes without)")
        ok = False
    if not ok or task is None or ("vote" in value and vote is None):
        return None
    return CascadeLevel(task=replace(task, vote=vote), accept_if=accept_if)


def parse_accept_if(value: object, voted: bool, bad: Bad) -> Condition | None:
    """A level's `accept_if`: the `when` language over CASCADE_FIELDS (`agreement` and `ballot`
    only when the level votes)."""
    condition = parse_condition(value)
    if condition is None:
        bad(f"invalid 'accept_if': {condition_problem(value)}",
            "write e.g. '${agreement} >= 0.67', '${output} == yes' or '${output.confident}'")
        return None
    name = condition.ref.agent
    if name not in CASCADE_FIELDS:
        bad(f"'accept_if' names unknown field '{name}'",
            did_you_mean(name, CASCADE_FIELDS) or f"a level's fields are: {', '.join(CASCADE_FIELDS)}")
        return None
    if condition.ref.path and name != "output":
        bad(f"'accept_if': '{name}' has no fields ('{condition.ref}')",
            "only ${output.field} looks inside a value (a structured output)")
        return None
    if name in _VOTE_FIELDS and not voted:
        bad(f"'accept_if' uses '{name}', which only a level with 'vote' has",
            "add vote: {samples: 3} to this level, or accept on ${output}")
        return None
    if condition.op in NUMERIC_OPS and name in ("ballot", "model"):
        bad(f"'accept_if' compares '{name}' with a number, but it is text",
            f"write '${{{name}}} == value'")
        return None
    return condition
