"""A node's config.yaml: read once into one frozen value, every section checked.

    discovery:            # orc.node.links.static: static peers, what mDNS advertises
      peers: ["192.168.1.20:7733"]
    admission:            # orc.node.worker.admission: slots (the capacity runtimes get) and queue
      slots: 4
    llama_cpp:            # orc.node.models.runtimes.extra_buffers: llama.cpp's extra buffer types
      extra_buffers: auto
    api:                  # the HTTP face (orc.node.web, docs/api.md): parsed here, `ApiConfig`
      listen: 127.0.0.1:7780
    ray:                  # `orc run` on a Ray cluster (orc.node.ray, docs/ray.md): parsed here, `RayConfig`
      address: ray://10.0.0.5:6379

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

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from orc.node.links.errors import BadDiscoveryConfig, BadPeerAddress
from orc.node.links.static import (
    DiscoveryConfig,
    Endpoint,
    discovery_config,
    parse_endpoint,
)
from orc.node.models.runtimes.extra_buffers import (
    BadLlamaCppConfig,
    LlamaCppConfig,
    llama_cpp_config,
)
from orc.node.worker.admission_config import (
    AdmissionConfig,
    BadAdmissionConfig,
    admission_config,
)
from orc.scheduler.profiles import MAX_CONFIG_BYTES, ConfigInvalid

__all__ = ["ApiConfig", "NodeConfig", "NodeConfigInvalid", "RayConfig", "api_config", "parse_node_config",
           "ray_config", "read_node_config"]

DEFAULT_API_PORT = 7780


class NodeConfigInvalid(ConfigInvalid):
    """The node's config.yaml cannot be used; the message names the file, the key and the fix."""


@dataclass(frozen=True)
class NodeConfig:
    """The node's settings from its config.yaml; the defaults when it has none."""

    discovery: DiscoveryConfig = field(default_factory=DiscoveryConfig)
    admission: AdmissionConfig = field(default_factory=AdmissionConfig)
    llama_cpp: LlamaCppConfig = field(default_factory=LlamaCppConfig)
    api: ApiConfig = field(default_factory=lambda: ApiConfig())
    ray: RayConfig = field(default_factory=lambda: RayConfig())


class BadRayConfig(ValueError):
    """The `ray:` section of the node's config.yaml is not usable; the message says what to fix."""


@dataclass(frozen=True)
class RayConfig:
    """Where `orc run` runs without `--on`: a Ray cluster's head, or None (the mesh, or this
    machine). `threads`: llama.cpp threads per model actor (None: the worker's own setting)."""

    address: str | None = None
    threads: int | None = None


def ray_config(root: dict[object, object], source: str) -> RayConfig:
    """The `ray:` section (absent: no cluster). The address is checked in full where it is
    used (`orc.node.ray.address`); here only its shape."""
    section = root.get("ray")
    if section is None:
        return RayConfig()
    if not isinstance(section, dict) or set(section) - {"address", "threads"}:
        raise BadRayConfig(f"{source}: `ray:` must be a mapping with address (ray://HOST:PORT) and, "
                           "optionally, threads")
    address, threads = section.get("address"), section.get("threads")
    if address is not None and (not isinstance(address, str) or not address.startswith("ray://")):
        raise BadRayConfig(f"{source}: ray.address must be ray://HOST:PORT, not {address!r}")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise BadRayConfig(f"{source}: ray.threads must be a whole number of 1 or more, not {threads!r}")
    return RayConfig(address, threads)


class BadApiConfig(ValueError):
    """The `api:` section of the node's config.yaml is not usable; the message says what to fix."""


@dataclass(frozen=True)
class ApiConfig:
    """The node's HTTP listener (docs/api.md). Every limit stops one abuse of a client that holds
    a key (or of anyone, for the parts before the key is checked)."""

    enabled: bool = True
    listen: Endpoint = field(default_factory=lambda: Endpoint("127.0.0.1", DEFAULT_API_PORT))
    # Keyless requests from loopback: anything running on this machine, under any user, could
    # then use the mesh. Off unless the user says so (docs/api.md states the risk).
    allow_keyless_loopback: bool = False
    # `/metrics` without a key from loopback: a Prometheus on the same machine, without a secret.
    metrics_keyless_loopback: bool = False
    tls_certificate: Path | None = None
    tls_key: Path | None = None
    max_body_bytes: int = 1 << 20  # a prompt of a million bytes is far past any small model's context
    max_concurrent: int = 32  # requests in flight at once; past it, 503 (each holds a generation or a run)
    requests_per_minute: int = 120  # per key (per client address without keys); past it, 429
    queue_timeout_s: float = 60.0  # how long a request waits for a node to start it; then 503

    @property
    def loopback_only(self) -> bool:
        """The listener is reachable from this machine only."""
        try:
            return ipaddress.ip_address(self.listen.host).is_loopback
        except ValueError:
            return self.listen.host == "localhost"


_API_BOUNDS: dict[str, tuple[int, int]] = {
    "max_body_bytes": (1024, 64 << 20),
    "max_concurrent": (1, 1024),
    "requests_per_minute": (1, 1_000_000),
    "queue_timeout_seconds": (1, 3600),
}
_API_FLAGS = ("enabled", "allow_keyless_loopback", "metrics_keyless_loopback")
_API_KEYS = ("listen", "tls_certificate", "tls_key", *_API_FLAGS, *_API_BOUNDS)


def api_config(root: object, source: str = "the config file") -> ApiConfig:
    """The `api:` section of a parsed node config; defaults when absent. Raises BadApiConfig."""
    section = root.get("api") if isinstance(root, dict) else None
    if section is None:
        return ApiConfig()
    if not isinstance(section, dict):
        raise BadApiConfig(f"{source}: `api:` must be a mapping (listen, tls_certificate, ...)")
    problems = [f"unknown key {key!r} (known: {', '.join(_API_KEYS)})" for key in section if key not in _API_KEYS]
    values: dict[str, object] = {}
    if "listen" in section:
        try:
            values["listen"] = listen_endpoint(section["listen"])
        except BadApiConfig as error:
            problems.append(f"listen: {error}")
    for key in _API_FLAGS:
        if key in section:
            if isinstance(section[key], bool):
                values[key] = section[key]
            else:
                problems.append(f"{key}: must be true or false, not {section[key]!r}")
    for key in ("tls_certificate", "tls_key"):
        if key in section:
            if isinstance(section[key], str) and section[key].strip():
                values[key] = Path(section[key]).expanduser()
            else:
                problems.append(f"{key}: must be the path of a PEM file, not {section[key]!r}")
    for key, (low, high) in _API_BOUNDS.items():
        if key in section:
            value = section[key]
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                problems.append(f"{key}: must be a whole number from {low} to {high}, not {value!r}")
            else:
                values["queue_timeout_s" if key == "queue_timeout_seconds" else key] = \
                    float(value) if key == "queue_timeout_seconds" else value
    if ("tls_certificate" in values) != ("tls_key" in values):
        problems.append("tls_certificate and tls_key go together: give both PEM files, or neither")
    if problems:
        raise BadApiConfig(f"{source}: api: " + "; ".join(problems))
    return ApiConfig(**values)  # type: ignore[arg-type]


def listen_endpoint(text: object) -> Endpoint:
    """`HOST:PORT` (or `HOST`, port 7780) of the HTTP listener; raises BadApiConfig."""
    if not isinstance(text, str):
        raise BadApiConfig(f"expected HOST:PORT, e.g. 127.0.0.1:{DEFAULT_API_PORT}, not {text!r}")
    try:
        return parse_endpoint(text, DEFAULT_API_PORT)
    except BadPeerAddress as error:
        raise BadApiConfig(str(error).replace("peer address", "listen address")) from None


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
    try:
        api = api_config(root, source)
    except BadApiConfig as error:
        problems.append(str(error))
        api = ApiConfig()
    try:
        ray = ray_config(root, source)
    except BadRayConfig as error:
        problems.append(str(error))
        ray = RayConfig()
    if problems:
        raise NodeConfigInvalid("\n".join(problems))
    return NodeConfig(discovery=discovery, admission=admission, llama_cpp=llama_cpp, api=api, ray=ray)


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
