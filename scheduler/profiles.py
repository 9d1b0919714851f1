"""Model profiles (llm-orc's `model_profiles:`) and how an LLM agent's model is resolved.

A profile maps a name to a model id plus generation defaults. Config files are read in
order, later ones overriding earlier ones profile by profile. `model_aliases:` maps model
names used elsewhere (say `qwen3:0.6b` from an llm-orc project) to ids of orc's catalog,
so existing files run unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import yaml

from orc.scheduler.ensemble import AgentSpec, LlmTask
from orc.scheduler.errors import Problem, SchedulerError

DEFAULT_PROFILE = "default"
DEFAULT_TEMPERATURE = 0.7
DEFAULT_MAX_TOKENS = 256
MAX_CONFIG_BYTES = 1 << 20  # config files are hand-written; stops a huge file exhausting memory


class ConfigInvalid(SchedulerError):
    """A configuration file could not be read."""


@dataclass(frozen=True)
class ModelProfile:
    name: str
    model: str
    source: Path | None = None
    provider: str | None = None
    system_prompt: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    timeout_seconds: float | None = None
    fallback: str | None = None  # llm-orc's fallback_model_profile


@dataclass(frozen=True)
class Profiles:
    profiles: Mapping[str, ModelProfile]
    aliases: Mapping[str, str]
    warnings: tuple[str, ...] = ()

    def names(self) -> tuple[str, ...]:
        return tuple(sorted(self.profiles))


@dataclass(frozen=True)
class ResolvedModel:
    """An LLM agent's effective model and generation settings. (Its time limit is not here: the
    coordinator decides it with every other agent's, from the agent and its `profile`.)"""

    model: str
    profile: str | None  # the profile that applied, after fallbacks; None for a bare `model:`
    system_prompt: str | None
    temperature: float
    max_tokens: int


def builtin_profiles(default_model: str) -> Profiles:
    default = ModelProfile(DEFAULT_PROFILE, default_model)
    return Profiles(MappingProxyType({DEFAULT_PROFILE: default}), MappingProxyType({}))


def load_profiles(files: Sequence[Path], base: Profiles) -> Profiles:
    """`base` overlaid with the `model_profiles:` and `model_aliases:` of each existing file, in order."""
    profiles = dict(base.profiles)
    aliases = dict(base.aliases)
    warnings = list(base.warnings)
    for path in files:
        if not path.is_file():
            continue
        document = _read_yaml(path)
        if document is None:
            continue
        if not isinstance(document, dict):
            raise ConfigInvalid(f"{path}: a config file must be a YAML mapping")
        raw_profiles = document.get("model_profiles") or {}
        if not raw_profiles and isinstance(document.get("name"), str) and "model" in document:
            # llm-orc's one-profile-per-file form (`.llm-orc/profiles/NAME.yaml`).
            raw_profiles = {document["name"]: document}
        if not isinstance(raw_profiles, dict):
            raise ConfigInvalid(f"{path}: 'model_profiles' must be a mapping of name -> settings")
        for name, raw in raw_profiles.items():
            profile = _parse_profile(str(name), raw, path)
            if profile is None:
                warnings.append(f"{path}: profile '{name}' has no 'model'; ignored")
                continue
            profiles[str(name)] = profile
        raw_aliases = document.get("model_aliases") or {}
        if not isinstance(raw_aliases, dict) or not all(isinstance(v, str) for v in raw_aliases.values()):
            raise ConfigInvalid(f"{path}: 'model_aliases' must map model names to catalog model ids")
        aliases.update({str(k): v for k, v in raw_aliases.items()})
    return Profiles(MappingProxyType(profiles), MappingProxyType(aliases), tuple(warnings))


def _read_yaml(path: Path) -> object:
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigInvalid(f"{path}: larger than {MAX_CONFIG_BYTES} bytes")
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigInvalid(f"{path}: cannot read: {error}") from None
    except yaml.YAMLError as error:
        raise ConfigInvalid(f"{path}: invalid YAML: {str(error).splitlines()[0]}") from None


def _parse_profile(name: str, raw: object, path: Path) -> ModelProfile | None:
    if not isinstance(raw, dict):
        raise ConfigInvalid(f"{path}: profile '{name}' must be a mapping")
    model = raw.get("model")
    if not isinstance(model, str) or not model:
        return None

    def number(key: str) -> float | None:
        value = raw.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ConfigInvalid(f"{path}: profile '{name}': '{key}' must be a non-negative number")
        return float(value)

    max_tokens = raw.get("max_tokens")
    if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1):
        raise ConfigInvalid(f"{path}: profile '{name}': 'max_tokens' must be a positive whole number")
    prompt = raw.get("system_prompt")
    return ModelProfile(
        name=name, model=model, source=path,
        provider=raw.get("provider") if isinstance(raw.get("provider"), str) else None,
        system_prompt=prompt if isinstance(prompt, str) else None,
        temperature=number("temperature"), max_tokens=max_tokens, timeout_seconds=number("timeout_seconds"),
        fallback=raw.get("fallback_model_profile") if isinstance(raw.get("fallback_model_profile"), str) else None,
    )


class ProfileCycle(SchedulerError):
    """Model profiles fall back to each other in a circle."""


def resolve_model(
    agent: AgentSpec,
    task: LlmTask,
    profiles: Profiles,
    source: Path | None,
    available: Callable[[str], bool] | None = None,
) -> ResolvedModel | Problem:
    """The model and settings an LLM agent runs with, or the Problem that prevents it.

    A profile whose model is not `available` falls back along `fallback_model_profile`
    (llm-orc's chain) to the first profile whose model is; with no available model the
    first profile's model is returned, for the caller to report. A circular chain is a
    Problem whatever is available.
    """
    profile: ModelProfile | None = None
    if task.model_profile is not None or task.model is None:
        name = task.model_profile or DEFAULT_PROFILE
        profile = profiles.profiles.get(name)
        if profile is None:
            known = ", ".join(profiles.names()) or "none"
            default_model = profiles.profiles[DEFAULT_PROFILE].model if DEFAULT_PROFILE in profiles.profiles else "MODEL_ID"
            return Problem(source, agent.name, f"model profile '{name}' is not defined (defined: {known})",
                           f"add '{name}: {{model: {default_model}}}' under 'model_profiles:' in your orc config")
        chain = _fallback_chain(profile, profiles)
        if isinstance(chain, Problem):
            return Problem(source, agent.name, chain.message, chain.fix)
        if available is not None and task.model is None:
            usable = [p for p in chain if available(profiles.aliases.get(p.model, p.model))]
            if usable:
                profile = usable[0]
    requested = task.model if task.model is not None else profile.model  # type: ignore[union-attr]
    model = profiles.aliases.get(requested, requested)
    return ResolvedModel(
        model=model,
        profile=profile.name if profile else None,
        system_prompt=task.system_prompt if task.system_prompt is not None else (profile.system_prompt if profile else None),
        temperature=_first(task.temperature, profile.temperature if profile else None, DEFAULT_TEMPERATURE),
        max_tokens=int(_first(task.max_tokens, profile.max_tokens if profile else None, DEFAULT_MAX_TOKENS)),
    )


def _fallback_chain(start: ModelProfile, profiles: Profiles) -> list[ModelProfile] | Problem:
    chain = [start]
    while chain[-1].fallback is not None:
        nxt = profiles.profiles.get(chain[-1].fallback)
        if nxt is None:
            break  # a dangling fallback ends the chain; the profiles before it still apply
        if nxt in chain:
            names = [p.name for p in chain[chain.index(nxt):]] + [nxt.name]
            return Problem(None, None, "model profile fallback cycle: " + " -> ".join(names),
                           f"remove 'fallback_model_profile' from '{chain[-1].name}'")
        chain.append(nxt)
    return chain


def _first(*values: float | int | None) -> float:
    for value in values:
        if value is not None:
            return float(value)
    raise ValueError("no value")
