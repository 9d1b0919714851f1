from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Hardware(_message.Message):
    __slots__ = ("arch", "cores", "ram_total_bytes", "ram_available_bytes", "accelerator", "system")
    ARCH_FIELD_NUMBER: _ClassVar[int]
    CORES_FIELD_NUMBER: _ClassVar[int]
    RAM_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    RAM_AVAILABLE_BYTES_FIELD_NUMBER: _ClassVar[int]
    ACCELERATOR_FIELD_NUMBER: _ClassVar[int]
    SYSTEM_FIELD_NUMBER: _ClassVar[int]
    arch: str
    cores: int
    ram_total_bytes: int
    ram_available_bytes: int
    accelerator: str
    system: str
    def __init__(self, arch: _Optional[str] = ..., cores: _Optional[int] = ..., ram_total_bytes: _Optional[int] = ..., ram_available_bytes: _Optional[int] = ..., accelerator: _Optional[str] = ..., system: _Optional[str] = ...) -> None: ...

class ModelOffer(_message.Message):
    __slots__ = ("id", "runtime", "sha256", "size_bytes", "loaded", "prefill_tokens_per_s", "decode_tokens_per_s", "capacity", "batch_decode_tokens_per_s", "unavailable")
    ID_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    LOADED_FIELD_NUMBER: _ClassVar[int]
    PREFILL_TOKENS_PER_S_FIELD_NUMBER: _ClassVar[int]
    DECODE_TOKENS_PER_S_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    BATCH_DECODE_TOKENS_PER_S_FIELD_NUMBER: _ClassVar[int]
    UNAVAILABLE_FIELD_NUMBER: _ClassVar[int]
    id: str
    runtime: str
    sha256: str
    size_bytes: int
    loaded: bool
    prefill_tokens_per_s: float
    decode_tokens_per_s: float
    capacity: int
    batch_decode_tokens_per_s: _containers.RepeatedScalarFieldContainer[float]
    unavailable: str
    def __init__(self, id: _Optional[str] = ..., runtime: _Optional[str] = ..., sha256: _Optional[str] = ..., size_bytes: _Optional[int] = ..., loaded: _Optional[bool] = ..., prefill_tokens_per_s: _Optional[float] = ..., decode_tokens_per_s: _Optional[float] = ..., capacity: _Optional[int] = ..., batch_decode_tokens_per_s: _Optional[_Iterable[float]] = ..., unavailable: _Optional[str] = ...) -> None: ...

class Load(_message.Message):
    __slots__ = ("active_generations", "queued", "cpu_load_1m", "backlog_ms")
    ACTIVE_GENERATIONS_FIELD_NUMBER: _ClassVar[int]
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    CPU_LOAD_1M_FIELD_NUMBER: _ClassVar[int]
    BACKLOG_MS_FIELD_NUMBER: _ClassVar[int]
    active_generations: int
    queued: int
    cpu_load_1m: float
    backlog_ms: int
    def __init__(self, active_generations: _Optional[int] = ..., queued: _Optional[int] = ..., cpu_load_1m: _Optional[float] = ..., backlog_ms: _Optional[int] = ...) -> None: ...

class PeerAddress(_message.Message):
    __slots__ = ("node_id", "address")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    address: str
    def __init__(self, node_id: _Optional[str] = ..., address: _Optional[str] = ...) -> None: ...

class NodeDescription(_message.Message):
    __slots__ = ("protocol_version", "node_id", "name", "mesh_id", "addresses", "hardware", "models", "load", "revocation_seq", "version", "started_at", "tags", "known_peers", "certificate_authority")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    MESH_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    HARDWARE_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    LOAD_FIELD_NUMBER: _ClassVar[int]
    REVOCATION_SEQ_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    KNOWN_PEERS_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATE_AUTHORITY_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    node_id: str
    name: str
    mesh_id: str
    addresses: _containers.RepeatedScalarFieldContainer[str]
    hardware: Hardware
    models: _containers.RepeatedCompositeFieldContainer[ModelOffer]
    load: Load
    revocation_seq: int
    version: int
    started_at: float
    tags: _containers.RepeatedScalarFieldContainer[str]
    known_peers: _containers.RepeatedCompositeFieldContainer[PeerAddress]
    certificate_authority: bool
    def __init__(self, protocol_version: _Optional[int] = ..., node_id: _Optional[str] = ..., name: _Optional[str] = ..., mesh_id: _Optional[str] = ..., addresses: _Optional[_Iterable[str]] = ..., hardware: _Optional[_Union[Hardware, _Mapping]] = ..., models: _Optional[_Iterable[_Union[ModelOffer, _Mapping]]] = ..., load: _Optional[_Union[Load, _Mapping]] = ..., revocation_seq: _Optional[int] = ..., version: _Optional[int] = ..., started_at: _Optional[float] = ..., tags: _Optional[_Iterable[str]] = ..., known_peers: _Optional[_Iterable[_Union[PeerAddress, _Mapping]]] = ..., certificate_authority: _Optional[bool] = ...) -> None: ...

class DescribeRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("addresses",)
    ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    addresses: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, addresses: _Optional[_Iterable[str]] = ...) -> None: ...

class Beat(_message.Message):
    __slots__ = ("sent_at_ms", "description_version", "revocation_seq", "load")
    SENT_AT_MS_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_VERSION_FIELD_NUMBER: _ClassVar[int]
    REVOCATION_SEQ_FIELD_NUMBER: _ClassVar[int]
    LOAD_FIELD_NUMBER: _ClassVar[int]
    sent_at_ms: int
    description_version: int
    revocation_seq: int
    load: Load
    def __init__(self, sent_at_ms: _Optional[int] = ..., description_version: _Optional[int] = ..., revocation_seq: _Optional[int] = ..., load: _Optional[_Union[Load, _Mapping]] = ...) -> None: ...

class RevocationsRequest(_message.Message):
    __slots__ = ("after_seq",)
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    after_seq: int
    def __init__(self, after_seq: _Optional[int] = ...) -> None: ...

class RevocationEntry(_message.Message):
    __slots__ = ("seq", "node_id", "revoked_at", "reason", "prev_hash", "signature")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    REVOKED_AT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    PREV_HASH_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    seq: int
    node_id: str
    revoked_at: float
    reason: str
    prev_hash: bytes
    signature: bytes
    def __init__(self, seq: _Optional[int] = ..., node_id: _Optional[str] = ..., revoked_at: _Optional[float] = ..., reason: _Optional[str] = ..., prev_hash: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class RevocationsReply(_message.Message):
    __slots__ = ("entries",)
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[RevocationEntry]
    def __init__(self, entries: _Optional[_Iterable[_Union[RevocationEntry, _Mapping]]] = ...) -> None: ...

class RenewRequest(_message.Message):
    __slots__ = ("csr_pem",)
    CSR_PEM_FIELD_NUMBER: _ClassVar[int]
    csr_pem: bytes
    def __init__(self, csr_pem: _Optional[bytes] = ...) -> None: ...

class RenewReply(_message.Message):
    __slots__ = ("certificate_pem",)
    CERTIFICATE_PEM_FIELD_NUMBER: _ClassVar[int]
    certificate_pem: bytes
    def __init__(self, certificate_pem: _Optional[bytes] = ...) -> None: ...

class OfferRequest(_message.Message):
    __slots__ = ("run_id", "agent", "model_id", "model_sha256", "prompt_tokens", "max_tokens")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_SHA256_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    agent: str
    model_id: str
    model_sha256: str
    prompt_tokens: int
    max_tokens: int
    def __init__(self, run_id: _Optional[str] = ..., agent: _Optional[str] = ..., model_id: _Optional[str] = ..., model_sha256: _Optional[str] = ..., prompt_tokens: _Optional[int] = ..., max_tokens: _Optional[int] = ...) -> None: ...

class OfferReply(_message.Message):
    __slots__ = ("accepted", "lease_id", "estimated_finish_ms", "expires_at_ms", "reason", "permanent")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_FINISH_MS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_MS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    PERMANENT_FIELD_NUMBER: _ClassVar[int]
    accepted: bool
    lease_id: str
    estimated_finish_ms: int
    expires_at_ms: int
    reason: str
    permanent: bool
    def __init__(self, accepted: _Optional[bool] = ..., lease_id: _Optional[str] = ..., estimated_finish_ms: _Optional[int] = ..., expires_at_ms: _Optional[int] = ..., reason: _Optional[str] = ..., permanent: _Optional[bool] = ...) -> None: ...

class ExecuteRequest(_message.Message):
    __slots__ = ("execution_id", "run_id", "agent", "lease_id", "deadline_ms", "payload")
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_MS_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    execution_id: str
    run_id: str
    agent: str
    lease_id: str
    deadline_ms: int
    payload: AgentPayload
    def __init__(self, execution_id: _Optional[str] = ..., run_id: _Optional[str] = ..., agent: _Optional[str] = ..., lease_id: _Optional[str] = ..., deadline_ms: _Optional[int] = ..., payload: _Optional[_Union[AgentPayload, _Mapping]] = ...) -> None: ...

class ChatMessage(_message.Message):
    __slots__ = ("role", "content")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    role: str
    content: str
    def __init__(self, role: _Optional[str] = ..., content: _Optional[str] = ...) -> None: ...

class GenerationParams(_message.Message):
    __slots__ = ("temperature", "max_tokens", "seed", "top_p", "stop")
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    TOP_P_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    temperature: float
    max_tokens: int
    seed: int
    top_p: float
    stop: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, temperature: _Optional[float] = ..., max_tokens: _Optional[int] = ..., seed: _Optional[int] = ..., top_p: _Optional[float] = ..., stop: _Optional[_Iterable[str]] = ...) -> None: ...

class AgentPayload(_message.Message):
    __slots__ = ("model_id", "model_sha256", "messages", "params")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_SHA256_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    model_sha256: str
    messages: _containers.RepeatedCompositeFieldContainer[ChatMessage]
    params: GenerationParams
    def __init__(self, model_id: _Optional[str] = ..., model_sha256: _Optional[str] = ..., messages: _Optional[_Iterable[_Union[ChatMessage, _Mapping]]] = ..., params: _Optional[_Union[GenerationParams, _Mapping]] = ...) -> None: ...

class ExecuteEvent(_message.Message):
    __slots__ = ("started", "tokens", "result", "error")
    class Started(_message.Message):
        __slots__ = ("node_id", "model")
        NODE_ID_FIELD_NUMBER: _ClassVar[int]
        MODEL_FIELD_NUMBER: _ClassVar[int]
        node_id: str
        model: str
        def __init__(self, node_id: _Optional[str] = ..., model: _Optional[str] = ...) -> None: ...
    class TokenChunk(_message.Message):
        __slots__ = ("text",)
        TEXT_FIELD_NUMBER: _ClassVar[int]
        text: str
        def __init__(self, text: _Optional[str] = ...) -> None: ...
    class Usage(_message.Message):
        __slots__ = ("prompt_tokens", "completion_tokens")
        PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
        COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
        prompt_tokens: int
        completion_tokens: int
        def __init__(self, prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ...) -> None: ...
    class Result(_message.Message):
        __slots__ = ("output", "usage", "finish_reason")
        OUTPUT_FIELD_NUMBER: _ClassVar[int]
        USAGE_FIELD_NUMBER: _ClassVar[int]
        FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
        output: str
        usage: ExecuteEvent.Usage
        finish_reason: str
        def __init__(self, output: _Optional[str] = ..., usage: _Optional[_Union[ExecuteEvent.Usage, _Mapping]] = ..., finish_reason: _Optional[str] = ...) -> None: ...
    class Error(_message.Message):
        __slots__ = ("code", "message", "retryable")
        CODE_FIELD_NUMBER: _ClassVar[int]
        MESSAGE_FIELD_NUMBER: _ClassVar[int]
        RETRYABLE_FIELD_NUMBER: _ClassVar[int]
        code: str
        message: str
        retryable: bool
        def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ..., retryable: _Optional[bool] = ...) -> None: ...
    STARTED_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    started: ExecuteEvent.Started
    tokens: ExecuteEvent.TokenChunk
    result: ExecuteEvent.Result
    error: ExecuteEvent.Error
    def __init__(self, started: _Optional[_Union[ExecuteEvent.Started, _Mapping]] = ..., tokens: _Optional[_Union[ExecuteEvent.TokenChunk, _Mapping]] = ..., result: _Optional[_Union[ExecuteEvent.Result, _Mapping]] = ..., error: _Optional[_Union[ExecuteEvent.Error, _Mapping]] = ...) -> None: ...

class CancelRequest(_message.Message):
    __slots__ = ("execution_id",)
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    execution_id: str
    def __init__(self, execution_id: _Optional[str] = ...) -> None: ...

class CancelReply(_message.Message):
    __slots__ = ("cancelled",)
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    cancelled: bool
    def __init__(self, cancelled: _Optional[bool] = ...) -> None: ...

class JoinRequest(_message.Message):
    __slots__ = ("secret", "csr_pem", "name")
    SECRET_FIELD_NUMBER: _ClassVar[int]
    CSR_PEM_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    secret: str
    csr_pem: bytes
    name: str
    def __init__(self, secret: _Optional[str] = ..., csr_pem: _Optional[bytes] = ..., name: _Optional[str] = ...) -> None: ...

class JoinReply(_message.Message):
    __slots__ = ("certificate_pem", "ca_certificate_pem", "revocation_log")
    CERTIFICATE_PEM_FIELD_NUMBER: _ClassVar[int]
    CA_CERTIFICATE_PEM_FIELD_NUMBER: _ClassVar[int]
    REVOCATION_LOG_FIELD_NUMBER: _ClassVar[int]
    certificate_pem: bytes
    ca_certificate_pem: bytes
    revocation_log: _containers.RepeatedCompositeFieldContainer[RevocationEntry]
    def __init__(self, certificate_pem: _Optional[bytes] = ..., ca_certificate_pem: _Optional[bytes] = ..., revocation_log: _Optional[_Iterable[_Union[RevocationEntry, _Mapping]]] = ...) -> None: ...
