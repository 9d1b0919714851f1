"""A node's config.yaml: read once into one frozen value, every section checked.

    discovery:            # orc.node.links.static: static peers, what mDNS advertises
      peers: ["192.168.1.20:7733"]
    admission:            # orc.node.worker.admission: slots (the capacity runtimes get) and queue
      slots: 4
    llama_cpp:            # orc.node.models.runtimes.extra_buffers: llama.cpp's extra buffer types
      extra_buffers: auto

The file also holds the llm-orc `model_profiles:` and `model_aliases:`, which
`orc.scheduler.profiles` reads with a project's own config files; other top-level keys are
left alone. Each section is parsed by a pure function of its package over the parsed mapping;
this module is the one place that reads the file. `orc-node start` reads it before it takes a
port or a socket, so a bad value stops the daemon with one message naming the file, the key
and the fix (exit 2); `orc` in embedded mode reads it before it builds a runtime.

May import: `orc.scheduler`, `orc.node.home`, `orc.node.links`, `orc.node.worker`,
`orc.node.models`. Imported by the composition roots (`orc.node.daemon`, `orc.node.api`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from orc.node.links.errors import BadDiscoveryConfig
from orc.node.links.static import DiscoveryConfig, discovery_config
from orc.node.models.runtimes.extra_buffers import BadLlamaCppConfig, LlamaCppConfig, llama_cpp_config
from orc.node.worker.admission_config import AdmissionConfig, BadAdmissionConfig, admission_config
from orc.scheduler.profiles import MAX_CONFIG_BYTES, ConfigInvalid

__all__ = ["NodeConfig", "NodeConfigInvalid", "parse_node_config", "read_node_config"]


class NodeConfigInvalid(ConfigInvalid):
    """The node's config.yaml cannot be used; the message names the file, the key and the fix."""


@dataclass(frozen=True)
class NodeConfig:
    """The node's settings from its config.yaml; the defaults when it has none."""

    discovery: DiscoveryConfig = field(default_factory=DiscoveryConfig)
    admission: AdmissionConfig = field(default_factory=AdmissionConfig)
    llama_cpp: LlamaCppConfig = field(default_factory=LlamaCppConfig)


def parse_node_config(root: object, source: str) -> NodeConfig:
    """The settings in a parsed config.yaml (`root`, None for an empty file); `source` names
    the file in messages. Raises one `NodeConfigInvalid` listing the problems of every section."""
    if root is None:
        return NodeConfig()
    if not isinstance(root, dict):
        raise NodeConfigInvalid(f"{source}: the file must be a YAML mapping (key: value lines)")
    problems: list[str] = []
    try:
        discovery = discovery_config(root, source)
    except BadDiscoveryConfig as error:
        problems.append(str(error))
        discovery = DiscoveryConfig()
    try:
        admission = admission_config(root, source)
    except BadAdmissionConfig as error:
        problems.append(str(error))
        admission = AdmissionConfig()
    try:
        llama_cpp = llama_cpp_config(root, source)
    except BadLlamaCppConfig as error:
        problems.append(str(error))
        llama_cpp = LlamaCppConfig()
    if problems:
        raise NodeConfigInvalid("\n".join(problems))
    return NodeConfig(discovery=discovery, admission=admission, llama_cpp=llama_cpp)


def read_node_config(path: Path) -> NodeConfig:
    """The settings in the config.yaml at `path`; the defaults when there is no such file.

    Raises `NodeConfigInvalid` naming the file when it cannot be read, is not YAML, is larger
    than `MAX_CONFIG_BYTES` or has a bad section.
    """
    try:
        # Hand-written settings: a file past the cap is a mistake, and would only cost memory.
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise NodeConfigInvalid(f"{path}: larger than {MAX_CONFIG_BYTES} bytes")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return NodeConfig()
    except (OSError, UnicodeDecodeError) as error:
        raise NodeConfigInvalid(f"cannot read {path}: {error}") from None
    try:
        root = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise NodeConfigInvalid(f"{path}: invalid YAML: {str(error).splitlines()[0]}") from None
    return parse_node_config(root, str(path))
