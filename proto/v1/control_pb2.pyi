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
    __slots__ = ("description", "ca_holder", "join_address", "peers_verified", "peers_known", "home")
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    CA_HOLDER_FIELD_NUMBER: _ClassVar[int]
    JOIN_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    PEERS_VERIFIED_FIELD_NUMBER: _ClassVar[int]
    PEERS_KNOWN_FIELD_NUMBER: _ClassVar[int]
    HOME_FIELD_NUMBER: _ClassVar[int]
    description: _mesh_pb2.NodeDescription
    ca_holder: bool
    join_address: str
    peers_verified: int
    peers_known: int
    home: str
    def __init__(self, description: _Optional[_Union[_mesh_pb2.NodeDescription, _Mapping]] = ..., ca_holder: _Optional[bool] = ..., join_address: _Optional[str] = ..., peers_verified: _Optional[int] = ..., peers_known: _Optional[int] = ..., home: _Optional[str] = ...) -> None: ...

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

class RunEvent(_message.Message):
    __slots__ = ("event",)
    EVENT_FIELD_NUMBER: _ClassVar[int]
    event: bytes
    def __init__(self, event: _Optional[bytes] = ...) -> None: ...
