from collections.abc import Iterable as _Iterable
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar

from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper

DESCRIPTOR: _descriptor.FileDescriptor

class RaftBatch(_message.Message):
    __slots__ = ("from_node", "messages", "from_address")
    FROM_NODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    FROM_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    from_node: int
    messages: _containers.RepeatedScalarFieldContainer[bytes]
    from_address: str
    def __init__(
        self,
        from_node: int | None = ...,
        messages: _Iterable[bytes] | None = ...,
        from_address: str | None = ...,
    ) -> None: ...

class RaftAck(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ProposeRequest(_message.Message):
    __slots__ = ("group", "command", "timeout_ms")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    group: str
    command: bytes
    timeout_ms: int
    def __init__(
        self, group: str | None = ..., command: bytes | None = ..., timeout_ms: int | None = ...
    ) -> None: ...

class ReadRequest(_message.Message):
    __slots__ = ("group", "key", "timeout_ms")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    group: str
    key: str
    timeout_ms: int
    def __init__(
        self, group: str | None = ..., key: str | None = ..., timeout_ms: int | None = ...
    ) -> None: ...

class MetaReply(_message.Message):
    __slots__ = ("result", "error")
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    result: bytes
    error: MetaErrorReply
    def __init__(
        self, result: bytes | None = ..., error: MetaErrorReply | _Mapping | None = ...
    ) -> None: ...

class MetaErrorReply(_message.Message):
    __slots__ = ("kind", "message", "leader_id", "leader_address")
    KIND_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    LEADER_ID_FIELD_NUMBER: _ClassVar[int]
    LEADER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    kind: str
    message: str
    leader_id: int
    leader_address: str
    def __init__(
        self,
        kind: str | None = ...,
        message: str | None = ...,
        leader_id: int | None = ...,
        leader_address: str | None = ...,
    ) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GroupStatus(_message.Message):
    __slots__ = (
        "group",
        "role",
        "leader_id",
        "leader_address",
        "term",
        "commit",
        "applied",
        "snapshot_index",
        "voters",
        "learners",
    )
    GROUP_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    LEADER_ID_FIELD_NUMBER: _ClassVar[int]
    LEADER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    COMMIT_FIELD_NUMBER: _ClassVar[int]
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_INDEX_FIELD_NUMBER: _ClassVar[int]
    VOTERS_FIELD_NUMBER: _ClassVar[int]
    LEARNERS_FIELD_NUMBER: _ClassVar[int]
    group: str
    role: str
    leader_id: int
    leader_address: str
    term: int
    commit: int
    applied: int
    snapshot_index: int
    voters: _containers.RepeatedScalarFieldContainer[int]
    learners: _containers.RepeatedScalarFieldContainer[int]
    def __init__(
        self,
        group: str | None = ...,
        role: str | None = ...,
        leader_id: int | None = ...,
        leader_address: str | None = ...,
        term: int | None = ...,
        commit: int | None = ...,
        applied: int | None = ...,
        snapshot_index: int | None = ...,
        voters: _Iterable[int] | None = ...,
        learners: _Iterable[int] | None = ...,
    ) -> None: ...

class StatusReply(_message.Message):
    __slots__ = ("node_id", "groups")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    node_id: int
    groups: _containers.RepeatedCompositeFieldContainer[GroupStatus]
    def __init__(
        self, node_id: int | None = ..., groups: _Iterable[GroupStatus | _Mapping] | None = ...
    ) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("group", "from_index")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    FROM_INDEX_FIELD_NUMBER: _ClassVar[int]
    group: str
    from_index: int
    def __init__(self, group: str | None = ..., from_index: int | None = ...) -> None: ...

class WatchEvent(_message.Message):
    __slots__ = ("kind", "index", "term", "data", "result", "error_kind", "error")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        ENTRY: _ClassVar[WatchEvent.Kind]
        CONF_CHANGE: _ClassVar[WatchEvent.Kind]
        SNAPSHOT: _ClassVar[WatchEvent.Kind]

    ENTRY: WatchEvent.Kind
    CONF_CHANGE: WatchEvent.Kind
    SNAPSHOT: WatchEvent.Kind
    KIND_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ERROR_KIND_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    kind: WatchEvent.Kind
    index: int
    term: int
    data: bytes
    result: bytes
    error_kind: str
    error: MetaErrorReply
    def __init__(
        self,
        kind: WatchEvent.Kind | str | None = ...,
        index: int | None = ...,
        term: int | None = ...,
        data: bytes | None = ...,
        result: bytes | None = ...,
        error_kind: str | None = ...,
        error: MetaErrorReply | _Mapping | None = ...,
    ) -> None: ...

class MembershipRequest(_message.Message):
    __slots__ = ("group", "node_id", "address", "timeout_ms")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    group: str
    node_id: int
    address: str
    timeout_ms: int
    def __init__(
        self,
        group: str | None = ...,
        node_id: int | None = ...,
        address: str | None = ...,
        timeout_ms: int | None = ...,
    ) -> None: ...

class SnapshotRequest(_message.Message):
    __slots__ = ("group",)
    GROUP_FIELD_NUMBER: _ClassVar[int]
    group: str
    def __init__(self, group: str | None = ...) -> None: ...
