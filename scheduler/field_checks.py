"""The value checks every part of the ensemble parser shares: kinds, ranges, references, guards.

Each check reports through `bad(message, fix)` and returns None for a value it rejects, so a
caller collects every problem of a file in one pass instead of stopping at the first.
"""

from __future__ import annotations

import math
import re
from typing import Callable

from orc.scheduler.ensemble import AgentName, Condition, FieldRef

Bad = Callable[..., None]  # bad(message, fix=None): records one Problem

NUMERIC_OPS = ("<", "<=", ">", ">=")
_REF = re.compile(r"^\$\{\s*([A-Za-z0-9_][A-Za-z0-9_-]*)((?:\.[A-Za-z0-9_-]+)*)\s*\}$")
# Two-character operators first: `${x} <= 3` is not `<` followed by "= 3".
_COMPARISON = re.compile(r"^(\$\{[^}]*\})\s*(==|!=|<=|>=|<|>)\s*(.+)$")
CONDITION_FIX = "write '${agent.field}', '${agent.field} == value' or '${agent.field} >= NUMBER'"


def kind_of(value: object) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", int: "a number",
            float: "a number", type(None): "empty"}.get(type(value), type(value).__name__)


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
    """`${dep.field}` (truthiness), `${dep.field} == literal` / `!=`, or `${dep.field} OP NUMBER`
    with OP one of `< <= > >=`; None if malformed (`condition_problem` says why)."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    comparison = _COMPARISON.match(text)
    if comparison:
        ref = parse_ref(comparison.group(1))
        if ref is None:
            return None
        op = comparison.group(2)
        literal = _literal(comparison.group(3))
        if literal is _INVALID or (op in NUMERIC_OPS and not is_number(literal)):
            return None
        return Condition(ref, op, literal)
    ref = parse_ref(text)
    return Condition(ref) if ref else None


def condition_problem(value: object) -> str:
    """Why `parse_condition(value)` is None, for the message: the right side of `<` is not a
    number, or the text is not a guard at all."""
    if isinstance(value, str):
        comparison = _COMPARISON.match(value.strip())
        if comparison and comparison.group(2) in NUMERIC_OPS and parse_ref(comparison.group(1)):
            return f"'{comparison.group(2)}' compares with a number, not {comparison.group(3).strip()!r}"
    return repr(value)


def is_number(value: object) -> bool:
    """A finite int or float; booleans are not numbers here."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


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
        number = float(text)
    except ValueError:
        pass
    else:
        # "nan" and "inf" parse as floats, but no comparison with them means anything.
        return number if math.isfinite(number) else text
    if not text or text[0] in "[{" or " " in text:
        return _INVALID
    return text


def number(raw: dict, key: str, bad: Bad, *, low: float, high: float, label: str | None = None) -> float | None:
    """`raw[key]` as a float in [low, high]; None when absent or rejected. `label` names the key
    in the message when it is nested (e.g. 'vote.temperature')."""
    value = raw.get(key)
    if value is None:
        return None
    if not is_number(value) or not low <= value <= high:
        bad(f"'{label or key}' must be a number from {low:g} to {high:g}, not {value!r}")
        return None
    return float(value)


def whole_number(raw: dict, key: str, bad: Bad, *, low: int, high: int, label: str | None = None) -> int | None:
    """`raw[key]` as an int in [low, high]; None when absent or rejected."""
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        bad(f"'{label or key}' must be a whole number from {low} to {high}, not {value!r}")
        return None
    return value
