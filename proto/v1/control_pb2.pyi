from orc.proto.v1 import mesh_pb2 as _mesh_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class NodeStatus(_message.Message):
    __slots__ = ("description", "ca_holder", "join_address", "peers_verified", "peers_known", "home", "api_address")
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    CA_HOLDER_FIELD_NUMBER: _ClassVar[int]
    JOIN_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    PEERS_VERIFIED_FIELD_NUMBER: _ClassVar[int]
    PEERS_KNOWN_FIELD_NUMBER: _ClassVar[int]
    HOME_FIELD_NUMBER: _ClassVar[int]
    API_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    description: _mesh_pb2.NodeDescription
    ca_holder: bool
    join_address: str
    peers_verified: int
    peers_known: int
    home: str
    api_address: str
    def __init__(self, description: _Optional[_Union[_mesh_pb2.NodeDescription, _Mapping]] = ..., ca_holder: _Optional[bool] = ..., join_address: _Optional[str] = ..., peers_verified: _Optional[int] = ..., peers_known: _Optional[int] = ..., home: _Optional[str] = ..., api_address: _Optional[str] = ...) -> None: ...

class PeersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PeerView(_message.Message):
    __slots__ = ("node_id", "description", "state", "address", "last_seen", "verified", "missed_beats")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_FIELD_NUMBER: _ClassVar[int]
    VERIFIED_FIELD_NUMBER: _ClassVar[int]
    MISSED_BEATS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    description: _mesh_pb2.NodeDescription
    state: str
    address: str
    last_seen: float
    verified: bool
    missed_beats: int
    def __init__(self, node_id: _Optional[str] = ..., description: _Optional[_Union[_mesh_pb2.NodeDescription, _Mapping]] = ..., state: _Optional[str] = ..., address: _Optional[str] = ..., last_seen: _Optional[float] = ..., verified: _Optional[bool] = ..., missed_beats: _Optional[int] = ...) -> None: ...

class PeersReply(_message.Message):
    __slots__ = ("peers",)
    PEERS_FIELD_NUMBER: _ClassVar[int]
    peers: _containers.RepeatedCompositeFieldContainer[PeerView]
    def __init__(self, peers: _Optional[_Iterable[_Union[PeerView, _Mapping]]] = ...) -> None: ...

class InviteRequest(_message.Message):
    __slots__ = ("ttl_seconds",)
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ttl_seconds: int
    def __init__(self, ttl_seconds: _Optional[int] = ...) -> None: ...

class InviteReply(_message.Message):
    __slots__ = ("token", "expires_at", "join_address")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    JOIN_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    token: str
    expires_at: float
    join_address: str
    def __init__(self, token: _Optional[str] = ..., expires_at: _Optional[float] = ..., join_address: _Optional[str] = ...) -> None: ...

class RevokeRequest(_message.Message):
    __slots__ = ("node_id", "reason")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    reason: str
    def __init__(self, node_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class RevokeReply(_message.Message):
    __slots__ = ("seq",)
    SEQ_FIELD_NUMBER: _ClassVar[int]
    seq: int
    def __init__(self, seq: _Optional[int] = ...) -> None: ...

class RunRequest(_message.Message):
    __slots__ = ("reference", "input", "cwd", "json", "explain", "local", "seed", "threads", "resume", "plan")
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    CWD_FIELD_NUMBER: _ClassVar[int]
    JSON_FIELD_NUMBER: _ClassVar[int]
    EXPLAIN_FIELD_NUMBER: _ClassVar[int]
    LOCAL_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    THREADS_FIELD_NUMBER: _ClassVar[int]
    RESUME_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    reference: str
    input: str
    cwd: str
    json: bool
    explain: bool
    local: bool
    seed: int
    threads: int
    resume: str
    plan: bool
    def __init__(self, reference: _Optional[str] = ..., input: _Optional[str] = ..., cwd: _Optional[str] = ..., json: _Optional[bool] = ..., explain: _Optional[bool] = ..., local: _Optional[bool] = ..., seed: _Optional[int] = ..., threads: _Optional[int] = ..., resume: _Optional[str] = ..., plan: _Optional[bool] = ...) -> None: ...

class Value(_message.Message):
    __slots__ = ("nodes",)
    NODES_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedCompositeFieldContainer[ValueNode]
    def __init__(self, nodes: _Optional[_Iterable[_Union[ValueNode, _Mapping]]] = ...) -> None: ...

class ValueNode(_message.Message):
    __slots__ = ("key", "null", "boolean", "integer", "number", "text", "list_length", "map_length")
    KEY_FIELD_NUMBER: _ClassVar[int]
    NULL_FIELD_NUMBER: _ClassVar[int]
    BOOLEAN_FIELD_NUMBER: _ClassVar[int]
    INTEGER_FIELD_NUMBER: _ClassVar[int]
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    LIST_LENGTH_FIELD_NUMBER: _ClassVar[int]
    MAP_LENGTH_FIELD_NUMBER: _ClassVar[int]
    key: str
    null: bool
    boolean: bool
    integer: int
    number: float
    text: str
    list_length: int
    map_length: int
    def __init__(self, key: _Optional[str] = ..., null: _Optional[bool] = ..., boolean: _Optional[bool] = ..., integer: _Optional[int] = ..., number: _Optional[float] = ..., text: _Optional[str] = ..., list_length: _Optional[int] = ..., map_length: _Optional[int] = ...) -> None: ...

class AgentRecord(_message.Message):
    __slots__ = ("status", "attempts", "output", "error", "node_id", "model", "started_at", "finished_at", "usage", "nodes", "failovers", "detail")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    FAILOVERS_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    status: str
    attempts: int
    output: Value
    error: str
    node_id: str
    model: str
    started_at: float
    finished_at: float
    usage: _mesh_pb2.ExecuteEvent.Usage
    nodes: _containers.RepeatedScalarFieldContainer[str]
    failovers: int
    detail: Value
    def __init__(self, status: _Optional[str] = ..., attempts: _Optional[int] = ..., output: _Optional[_Union[Value, _Mapping]] = ..., error: _Optional[str] = ..., node_id: _Optional[str] = ..., model: _Optional[str] = ..., started_at: _Optional[float] = ..., finished_at: _Optional[float] = ..., usage: _Optional[_Union[_mesh_pb2.ExecuteEvent.Usage, _Mapping]] = ..., nodes: _Optional[_Iterable[str]] = ..., failovers: _Optional[int] = ..., detail: _Optional[_Union[Value, _Mapping]] = ...) -> None: ...

class Candidate(_message.Message):
    __slots__ = ("node_id", "name", "start_s", "load_s", "prefill_s", "decode_s", "network_s", "warm", "preferred", "runtime", "sha256")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    START_S_FIELD_NUMBER: _ClassVar[int]
    LOAD_S_FIELD_NUMBER: _ClassVar[int]
    PREFILL_S_FIELD_NUMBER: _ClassVar[int]
    DECODE_S_FIELD_NUMBER: _ClassVar[int]
    NETWORK_S_FIELD_NUMBER: _ClassVar[int]
    WARM_FIELD_NUMBER: _ClassVar[int]
    PREFERRED_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    name: str
    start_s: float
    load_s: float
    prefill_s: float
    decode_s: float
    network_s: float
    warm: bool
    preferred: bool
    runtime: str
    sha256: str
    def __init__(self, node_id: _Optional[str] = ..., name: _Optional[str] = ..., start_s: _Optional[float] = ..., load_s: _Optional[float] = ..., prefill_s: _Optional[float] = ..., decode_s: _Optional[float] = ..., network_s: _Optional[float] = ..., warm: _Optional[bool] = ..., preferred: _Optional[bool] = ..., runtime: _Optional[str] = ..., sha256: _Optional[str] = ...) -> None: ...

class Rejection(_message.Message):
    __slots__ = ("node_id", "name", "reason", "detail")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    name: str
    reason: str
    detail: str
    def __init__(self, node_id: _Optional[str] = ..., name: _Optional[str] = ..., reason: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...

class AgentPlan(_message.Message):
    __slots__ = ("agent", "kind", "model", "candidates", "rejected", "note")
    AGENT_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    agent: str
    kind: str
    model: str
    candidates: _containers.RepeatedCompositeFieldContainer[Candidate]
    rejected: _containers.RepeatedCompositeFieldContainer[Rejection]
    note: str
    def __init__(self, agent: _Optional[str] = ..., kind: _Optional[str] = ..., model: _Optional[str] = ..., candidates: _Optional[_Iterable[_Union[Candidate, _Mapping]]] = ..., rejected: _Optional[_Iterable[_Union[Rejection, _Mapping]]] = ..., note: _Optional[str] = ...) -> None: ...

class RunEvent(_message.Message):
    __slots__ = ("run_began", "run_planned", "agent_began", "agent_placed_on", "agent_working", "token_streamed", "agent_ended", "agent_retrying", "run_finished")
    class RunBegan(_message.Message):
        __slots__ = ("run_id", "ensemble", "agents", "journal", "at", "resumed")
        RUN_ID_FIELD_NUMBER: _ClassVar[int]
        ENSEMBLE_FIELD_NUMBER: _ClassVar[int]
        AGENTS_FIELD_NUMBER: _ClassVar[int]
        JOURNAL_FIELD_NUMBER: _ClassVar[int]
        AT_FIELD_NUMBER: _ClassVar[int]
        RESUMED_FIELD_NUMBER: _ClassVar[int]
        run_id: str
        ensemble: str
        agents: _containers.RepeatedScalarFieldContainer[str]
        journal: str
        at: float
        resumed: bool
        def __init__(self, run_id: _Optional[str] = ..., ensemble: _Optional[str] = ..., agents: _Optional[_Iterable[str]] = ..., journal: _Optional[str] = ..., at: _Optional[float] = ..., resumed: _Optional[bool] = ...) -> None: ...
    class RunPlanned(_message.Message):
        __slots__ = ("ensemble", "coordinator", "at", "agents")
        ENSEMBLE_FIELD_NUMBER: _ClassVar[int]
        COORDINATOR_FIELD_NUMBER: _ClassVar[int]
        AT_FIELD_NUMBER: _ClassVar[int]
        AGENTS_FIELD_NUMBER: _ClassVar[int]
        ensemble: str
        coordinator: str
        at: float
        agents: _containers.RepeatedCompositeFieldContainer[AgentPlan]
        def __init__(self, ensemble: _Optional[str] = ..., coordinator: _Optional[str] = ..., at: _Optional[float] = ..., agents: _Optional[_Iterable[_Union[AgentPlan, _Mapping]]] = ...) -> None: ...
    class AgentBegan(_message.Message):
        __slots__ = ("agent", "node_id", "model", "attempt", "instances")
        AGENT_FIELD_NUMBER: _ClassVar[int]
        NODE_ID_FIELD_NUMBER: _ClassVar[int]
        MODEL_FIELD_NUMBER: _ClassVar[int]
        ATTEMPT_FIELD_NUMBER: _ClassVar[int]
        INSTANCES_FIELD_NUMBER: _ClassVar[int]
        agent: str
        node_id: str
        model: str
        attempt: int
        instances: int
        def __init__(self, agent: _Optional[str] = ..., node_id: _Optional[str] = ..., model: _Optional[str] = ..., attempt: _Optional[int] = ..., instances: _Optional[int] = ...) -> None: ...
    class AgentPlacedOn(_message.Message):
        __slots__ = ("agent", "node_id", "node_name", "replaces")
        AGENT_FIELD_NUMBER: _ClassVar[int]
        NODE_ID_FIELD_NUMBER: _ClassVar[int]
        NODE_NAME_FIELD_NUMBER: _ClassVar[int]
        REPLACES_FIELD_NUMBER: _ClassVar[int]
        agent: str
        node_id: str
        node_name: str
        replaces: str
        def __init__(self, agent: _Optional[str] = ..., node_id: _Optional[str] = ..., node_name: _Optional[str] = ..., replaces: _Optional[str] = ...) -> None: ...
    class AgentWorking(_message.Message):
        __slots__ = ("agent", "node_id", "waited_s")
        AGENT_FIELD_NUMBER: _ClassVar[int]
        NODE_ID_FIELD_NUMBER: _ClassVar[int]
        WAITED_S_FIELD_NUMBER: _ClassVar[int]
        agent: str
        node_id: str
        waited_s: float
        def __init__(self, agent: _Optional[str] = ..., node_id: _Optional[str] = ..., waited_s: _Optional[float] = ...) -> None: ...
    class TokenStreamed(_message.Message):
        __slots__ = ("agent", "text")
        AGENT_FIELD_NUMBER: _ClassVar[int]
        TEXT_FIELD_NUMBER: _ClassVar[int]
        agent: str
        text: str
        def __init__(self, agent: _Optional[str] = ..., text: _Optional[str] = ...) -> None: ...
    class AgentEnded(_message.Message):
        __slots__ = ("agent", "record", "reused")
        AGENT_FIELD_NUMBER: _ClassVar[int]
        RECORD_FIELD_NUMBER: _ClassVar[int]
        REUSED_FIELD_NUMBER: _ClassVar[int]
        agent: str
        record: AgentRecord
        reused: bool
        def __init__(self, agent: _Optional[str] = ..., record: _Optional[_Union[AgentRecord, _Mapping]] = ..., reused: _Optional[bool] = ...) -> None: ...
    class AgentRetrying(_message.Message):
        __slots__ = ("agent", "error", "attempt")
        AGENT_FIELD_NUMBER: _ClassVar[int]
        ERROR_FIELD_NUMBER: _ClassVar[int]
        ATTEMPT_FIELD_NUMBER: _ClassVar[int]
        agent: str
        error: str
        attempt: int
        def __init__(self, agent: _Optional[str] = ..., error: _Optional[str] = ..., attempt: _Optional[int] = ...) -> None: ...
    class AgentResult(_message.Message):
        __slots__ = ("agent", "record")
        AGENT_FIELD_NUMBER: _ClassVar[int]
        RECORD_FIELD_NUMBER: _ClassVar[int]
        agent: str
        record: AgentRecord
        def __init__(self, agent: _Optional[str] = ..., record: _Optional[_Union[AgentRecord, _Mapping]] = ...) -> None: ...
    class RunFinished(_message.Message):
        __slots__ = ("run_id", "ensemble", "status", "deliverable", "results", "started_at", "finished_at", "usage", "budget", "agent_budgets", "reason")
        RUN_ID_FIELD_NUMBER: _ClassVar[int]
        ENSEMBLE_FIELD_NUMBER: _ClassVar[int]
        STATUS_FIELD_NUMBER: _ClassVar[int]
        DELIVERABLE_FIELD_NUMBER: _ClassVar[int]
        RESULTS_FIELD_NUMBER: _ClassVar[int]
        STARTED_AT_FIELD_NUMBER: _ClassVar[int]
        FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
        USAGE_FIELD_NUMBER: _ClassVar[int]
        BUDGET_FIELD_NUMBER: _ClassVar[int]
        AGENT_BUDGETS_FIELD_NUMBER: _ClassVar[int]
        REASON_FIELD_NUMBER: _ClassVar[int]
        run_id: str
        ensemble: str
        status: str
        deliverable: Value
        results: _containers.RepeatedCompositeFieldContainer[RunEvent.AgentResult]
        started_at: float
        finished_at: float
        usage: _mesh_pb2.ExecuteEvent.Usage
        budget: RunEvent.Budget
        agent_budgets: _containers.RepeatedCompositeFieldContainer[RunEvent.AgentBudget]
        reason: str
        def __init__(self, run_id: _Optional[str] = ..., ensemble: _Optional[str] = ..., status: _Optional[str] = ..., deliverable: _Optional[_Union[Value, _Mapping]] = ..., results: _Optional[_Iterable[_Union[RunEvent.AgentResult, _Mapping]]] = ..., started_at: _Optional[float] = ..., finished_at: _Optional[float] = ..., usage: _Optional[_Union[_mesh_pb2.ExecuteEvent.Usage, _Mapping]] = ..., budget: _Optional[_Union[RunEvent.Budget, _Mapping]] = ..., agent_budgets: _Optional[_Iterable[_Union[RunEvent.AgentBudget, _Mapping]]] = ..., reason: _Optional[str] = ...) -> None: ...
    class Budget(_message.Message):
        __slots__ = ("max_tokens", "max_seconds", "used_tokens", "used_seconds", "exhausted")
        MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
        MAX_SECONDS_FIELD_NUMBER: _ClassVar[int]
        USED_TOKENS_FIELD_NUMBER: _ClassVar[int]
        USED_SECONDS_FIELD_NUMBER: _ClassVar[int]
        EXHAUSTED_FIELD_NUMBER: _ClassVar[int]
        max_tokens: int
        max_seconds: float
        used_tokens: int
        used_seconds: float
        exhausted: str
        def __init__(self, max_tokens: _Optional[int] = ..., max_seconds: _Optional[float] = ..., used_tokens: _Optional[int] = ..., used_seconds: _Optional[float] = ..., exhausted: _Optional[str] = ...) -> None: ...
    class AgentBudget(_message.Message):
        __slots__ = ("agent", "budget")
        AGENT_FIELD_NUMBER: _ClassVar[int]
        BUDGET_FIELD_NUMBER: _ClassVar[int]
        agent: str
        budget: RunEvent.Budget
        def __init__(self, agent: _Optional[str] = ..., budget: _Optional[_Union[RunEvent.Budget, _Mapping]] = ...) -> None: ...
    RUN_BEGAN_FIELD_NUMBER: _ClassVar[int]
    RUN_PLANNED_FIELD_NUMBER: _ClassVar[int]
    AGENT_BEGAN_FIELD_NUMBER: _ClassVar[int]
    AGENT_PLACED_ON_FIELD_NUMBER: _ClassVar[int]
    AGENT_WORKING_FIELD_NUMBER: _ClassVar[int]
    TOKEN_STREAMED_FIELD_NUMBER: _ClassVar[int]
    AGENT_ENDED_FIELD_NUMBER: _ClassVar[int]
    AGENT_RETRYING_FIELD_NUMBER: _ClassVar[int]
    RUN_FINISHED_FIELD_NUMBER: _ClassVar[int]
    run_began: RunEvent.RunBegan
    run_planned: RunEvent.RunPlanned
    agent_began: RunEvent.AgentBegan
    agent_placed_on: RunEvent.AgentPlacedOn
    agent_working: RunEvent.AgentWorking
    token_streamed: RunEvent.TokenStreamed
    agent_ended: RunEvent.AgentEnded
    agent_retrying: RunEvent.AgentRetrying
    run_finished: RunEvent.RunFinished
    def __init__(self, run_began: _Optional[_Union[RunEvent.RunBegan, _Mapping]] = ..., run_planned: _Optional[_Union[RunEvent.RunPlanned, _Mapping]] = ..., agent_began: _Optional[_Union[RunEvent.AgentBegan, _Mapping]] = ..., agent_placed_on: _Optional[_Union[RunEvent.AgentPlacedOn, _Mapping]] = ..., agent_working: _Optional[_Union[RunEvent.AgentWorking, _Mapping]] = ..., token_streamed: _Optional[_Union[RunEvent.TokenStreamed, _Mapping]] = ..., agent_ended: _Optional[_Union[RunEvent.AgentEnded, _Mapping]] = ..., agent_retrying: _Optional[_Union[RunEvent.AgentRetrying, _Mapping]] = ..., run_finished: _Optional[_Union[RunEvent.RunFinished, _Mapping]] = ...) -> None: ...
