"""Agent outputs as immutable values, and the `${agent.field}` lookups over them.

Outputs are JSON-like data. Once recorded they are frozen (mappings become read-only
proxies, lists become tuples), so an agent handed a snapshot of its upstream results can
neither change them nor see another agent change them.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from orc.scheduler.ensemble import Condition, FieldRef

# A decimal number as a model writes one: no "nan", "inf", "1_000" or hex, which float() would take.
_NUMBER_TEXT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d{1,3})?$")
_FENCED_JSON = re.compile(r"```(?:json)?\s*(\{.*\}|\[.*\])\s*```", re.DOTALL)


def freeze(value: object) -> object:
    """A deep, read-only copy of JSON-like `value`."""
    if isinstance(value, Mapping):
        return MappingProxyType({str(k): freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    return value


def thaw(value: object) -> Any:
    """A plain (dict / list) deep copy of a frozen value, for JSON and msgpack."""
    if isinstance(value, Mapping):
        return {str(k): thaw(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [thaw(v) for v in value]
    return value


def structured(value: object) -> object:
    """`value` as data: text that holds JSON (bare or in a ```json fence) is parsed, else unchanged."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text[:1] in "{[":
        try:
            return json.loads(text)
        except ValueError:
            pass
    fenced = _FENCED_JSON.search(text)
    if fenced:
        try:
            return json.loads(fenced.group(1))
        except ValueError:
            pass
    return value


_MISSING = object()


def lookup(value: object, path: tuple[str, ...]) -> object:
    """Follow `path` into `value` (mapping keys or list indexes); None when any step is missing."""
    current = structured(value)
    for step in path:
        current = structured(current)
        if isinstance(current, Mapping):
            current = current.get(step, _MISSING)
        elif isinstance(current, (list, tuple)) and step.lstrip("-").isdigit():
            index = int(step)
            current = current[index] if -len(current) <= index < len(current) else _MISSING
        else:
            current = _MISSING
        if current is _MISSING:
            return None
    return current


def resolve(ref: FieldRef, outputs: Mapping[str, object]) -> object:
    """The value `ref` names among `outputs` (agent name -> output); None when absent."""
    if ref.agent not in outputs:
        return None
    return lookup(outputs[ref.agent], ref.path)


def holds(condition: Condition, outputs: Mapping[str, object]) -> bool:
    """Evaluate a `when` / `until` guard over upstream outputs."""
    value = resolve(condition.ref, outputs)
    match condition.op:
        case "truthy":
            return truthy(value)
        case "==":
            return _equal(value, condition.literal)
        case "!=":
            return not _equal(value, condition.literal)
        case "<" | "<=" | ">" | ">=":
            return compare(value, condition.op, condition.literal)
        case _:
            raise ValueError(f"unknown operator {condition.op!r}")


def compare(value: object, op: str, literal: object) -> bool:
    """`value OP literal` for OP in `< <= > >=`: false, never an error, when either side is not a
    number. Model text that is exactly a number ("0.8\n") counts as that number."""
    left, right = _as_number(value), _as_number(literal)
    if left is None or right is None:
        return False
    match op:
        case "<":
            return left < right
        case "<=":
            return left <= right
        case ">":
            return left > right
        case ">=":
            return left >= right
    raise ValueError(f"unknown operator {op!r}")


def _as_number(value: object) -> float | None:
    if isinstance(value, bool):
        return None  # True >= 1 would hold in Python; a yes is not a count
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str) and _NUMBER_TEXT.match(value.strip()):
        return float(value.strip())
    return None


def truthy(value: object) -> bool:
    """Python truthiness, except that the strings 'false', 'no', '0', 'none', 'null' are false (LLM text)."""
    if isinstance(value, str):
        return value.strip().lower() not in ("", "false", "no", "0", "none", "null")
    return bool(value)


def _equal(value: object, literal: object) -> bool:
    if value == literal:
        return True
    # Text from a model compares loosely to a scalar literal: `== yes` matches "Yes\n".
    if isinstance(value, str) and not isinstance(literal, (dict, list)):
        return value.strip().lower() == str(literal).strip().lower()
    return False
