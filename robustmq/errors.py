"""Every error RobustMQ raises, defined once with its protocol code.

Each class carries the code a client sees (an MQTT 5 reason code or a Kafka error code)
and whether retrying can help. A registry refuses two classes claiming the same code in the
same protocol, so the mapping from internal errors to wire codes has exactly one source.
Mapping an MQTT 5 reason code to its MQTT 3.1.1 equivalent lives here too.
"""

from __future__ import annotations

from typing import ClassVar

_REGISTRY: dict[tuple[str, int], type[RobustMQError]] = {}


class RobustMQError(Exception):
    """Base of all RobustMQ errors."""

    protocol: ClassVar[str] = ""
    code: ClassVar[int] = -1
    retriable: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if cls.protocol and cls.code >= 0 and "code" in cls.__dict__:
            key = (cls.protocol, cls.code)
            if key in _REGISTRY:
                raise TypeError(
                    f"{cls.__name__}: {cls.protocol} code {cls.code:#x} is already "
                    f"registered by {_REGISTRY[key].__name__}"
                )
            _REGISTRY[key] = cls


class MqttError(RobustMQError):
    """A malformed packet or a protocol violation, carrying the MQTT 5 reason code.

    ``offset`` is the byte offset in the decoded buffer where the problem was found (-1
    when it is not a decoding error). The connection that caused it is closed with
    ``reason_code`` (MQTT 5) or simply closed (3.1/3.1.1).
    """

    protocol = "mqtt"

    def __init__(self, reason_code: int, message: str, offset: int = -1) -> None:
        super().__init__(message)
        self.reason_code = reason_code
        self.message = message
        self.offset = offset

    def __str__(self) -> str:
        where = f" at byte {self.offset}" if self.offset >= 0 else ""
        return f"{self.message} (reason code {self.reason_code:#04x}){where}"

    def __reduce__(self) -> tuple[type[MqttError], tuple[int, str, int]]:
        return (type(self), (self.reason_code, self.message, self.offset))


class ConfigError(RobustMQError):
    """A configuration value that is missing, unknown or out of range."""

    def __init__(self, key: str, value: object, allowed: str) -> None:
        super().__init__(f"config key {key!r}: bad value {value!r}; allowed: {allowed}")
        self.key = key
        self.value = value
        self.allowed = allowed


# MQTT 5 reason code -> MQTT 3.1/3.1.1 CONNACK return code (§3.2.2.3 of 3.1.1).
_V3_CONNACK = {
    0x00: 0x00,
    0x84: 0x01,  # unsupported protocol version -> unacceptable protocol version
    0x85: 0x02,  # client identifier not valid -> identifier rejected
    0x88: 0x03,  # server unavailable
    0x89: 0x03,  # server busy
    0x86: 0x04,  # bad user name or password
    0x8C: 0x04,  # bad authentication method
    0x87: 0x05,  # not authorized
    0x8A: 0x05,  # banned
    0x97: 0x03,  # quota exceeded (e.g. max connections) -> server unavailable
    0x9C: 0x03,  # use another server
    0x9D: 0x03,  # server moved
    0x9F: 0x03,  # connection rate exceeded -> server unavailable
}


def v3_connack_code(reason_code: int) -> int:
    """The MQTT 3.1.1 CONNACK return code closest to an MQTT 5 reason code."""
    return _V3_CONNACK.get(reason_code, 0x05 if reason_code >= 0x80 else 0x00)


# --- robustmq-bench (robustmq/bench) ----------------------------------------------------

# MQTT 3.1.1 CONNACK return codes 1-5 (§3.2.2.3) under their MQTT 5 reason code names.
_V3_CONNACK_NAMES = {
    0x01: "UNSUPPORTED_PROTOCOL_VERSION",
    0x02: "CLIENT_IDENTIFIER_NOT_VALID",
    0x03: "SERVER_UNAVAILABLE",
    0x04: "BAD_USER_NAME_OR_PASSWORD",
    0x05: "NOT_AUTHORIZED",
}


class BenchError(RobustMQError):
    """The load tool cannot go on: unreachable broker, refused CONNACK or SUBSCRIBE, bad TLS
    files. The message names the broker and the reason."""


class BenchConnackRefused(BenchError):
    """The broker answered CONNECT with a CONNACK carrying a failure code."""

    def __init__(self, where: str, protocol_version: int, reason_code: int) -> None:
        # Imported here: robustmq._core imports this module.
        from robustmq._core.mqtt_spec import ReasonCode

        if protocol_version == 5:
            try:
                name = ReasonCode(reason_code).name
            except ValueError:
                name = "unknown"
            what = f"reason code {reason_code:#04x} {name}"
        else:
            name = _V3_CONNACK_NAMES.get(reason_code, "unknown")
            what = f"return code {reason_code} {name}"
        super().__init__(f"{where} refused the connection: CONNACK {what}")
        self.reason_code = reason_code
        self.reason_name = name


class SecurityFileError(ConfigError):
    """A password or ACL file that cannot be used: the file, the line (1-based; 0 when the
    file itself is unreadable) and why. The broker refuses to start with one."""

    def __init__(self, path: str, line: int, reason: str) -> None:
        where = f"{path}:{line}" if line else path
        RobustMQError.__init__(self, f"{where}: {reason}")
        self.key = path
        self.value = line
        self.allowed = reason
        self.path = path
        self.line = line
        self.reason = reason


class AclFileChanged(RobustMQError):
    """An ACL rule addressed by its position among the rules in memory while the ACL file
    on disk holds other rules (edited since it was loaded): the same position there is
    another rule, so the file is left alone."""

    def __init__(self, path: str) -> None:
        super().__init__(f"{path}: the rules on disk differ from the rules in memory")
        self.path = path


class ForwardFrameError(RobustMQError):
    """A frame of forwarded messages from another node (robustmq/broker/mqtt/cluster_link.py)
    that cannot be decoded: the whole frame is refused, and the sending node logs it."""

    def __init__(self, at: int, reason: str) -> None:
        super().__init__(f"forwarded frame, byte {at}: {reason}")
        self.at = at


class ForwardNotReady(RobustMQError):
    """A frame this node cannot take yet: it hands over sessions while this node is still
    loading them. Refused whole (gRPC UNAVAILABLE); the sending node tries again."""

    retriable = True


# --- Storage engine (robustmq/storage) -------------------------------------------------
# Named like etcd-io/raft's storage errors. No wire codes are registered here yet: the Kafka
# layer maps them (ShardNotFound -> UNKNOWN_TOPIC_OR_PARTITION, OffsetOutOfRange ->
# OFFSET_OUT_OF_RANGE, Corrupted -> CORRUPT_MESSAGE, StorageFull -> KAFKA_STORAGE_ERROR).


class StorageError(RobustMQError):
    """Base of the errors a storage engine raises."""


class StorageClosed(StorageError):
    """The engine was used after ``close()``."""


class ShardNotFound(StorageError):
    """No shard of that name exists."""

    def __init__(self, shard: str) -> None:
        super().__init__(f"shard {shard!r} does not exist")
        self.shard = shard


class ShardExists(StorageError):
    """``create_shard`` for a name that is already taken."""

    def __init__(self, shard: str) -> None:
        super().__init__(f"shard {shard!r} already exists")
        self.shard = shard


class OffsetOutOfRange(StorageError):
    """An offset below the earliest retained offset or above the log end offset."""

    def __init__(self, shard: str, offset: int, earliest: int, latest: int) -> None:
        super().__init__(f"offset {offset} of shard {shard!r} is outside [{earliest}, {latest}]")
        self.shard = shard
        self.offset = offset
        self.earliest = earliest
        self.latest = latest


class StorageFull(StorageError):
    """A configured bound (bytes, shards) would be exceeded; retry after retention runs."""

    retriable = True


class Corrupted(StorageError):
    """Stored bytes failed a check (magic, version, length, CRC32C, offset sequence).

    ``path`` is the file (or key) and ``position`` the byte offset where the check failed.
    """

    def __init__(self, message: str, path: str = "", position: int = -1) -> None:
        where = f" in {path}" if path else ""
        at = f" at byte {position}" if position >= 0 else ""
        super().__init__(f"{message}{where}{at}")
        self.path = path
        self.position = position


class WrongEntryKind(StorageError):
    """``read`` met an opaque batch, or ``read_batches`` met a plain record."""


# --- Meta Service Raft (robustmq/meta/raft) ---------------------------------------------
# Named like etcd-io/raft's errors. Internal only: the meta service maps them to gRPC status.


class RaftError(RobustMQError):
    """Base of the errors the Raft core and its log raise."""


class RaftCompacted(RaftError):
    """The requested index is at or below the snapshot index: it was compacted away."""

    def __init__(self, index: int, first: int) -> None:
        super().__init__(f"raft log index {index} is compacted; first index is {first}")
        self.index = index
        self.first = first


class RaftUnavailable(RaftError):
    """The requested index is above the last index in the log."""

    def __init__(self, index: int, last: int) -> None:
        super().__init__(f"raft log index {index} is unavailable; last index is {last}")
        self.index = index
        self.last = last


class ProposalDropped(RaftError):
    """A proposal was refused: no leader, a leadership transfer is running, or a
    membership change is already pending. Retry, usually at the leader."""

    retriable = True


class RaftLogCorrupted(RaftError, Corrupted):
    """A Raft log or state file failed a check somewhere other than its torn tail
    (``path`` and ``position`` as for ``Corrupted``)."""


# --- Meta Service groups, host and client (robustmq/meta) ------------------------------
# Internal like the Raft errors: the gRPC MetaService carries them by class name
# (``MetaReply.error.kind``) and ``meta/client.py`` raises the same class again.


class MetaError(RobustMQError):
    """Base of the errors the Meta Service returns for a proposal or a read."""


class MetaCommandError(MetaError):
    """A command a state machine cannot apply; applied as a no-op on every replica, so
    retrying the same bytes cannot help."""


class UnknownMetaCommand(MetaCommandError):
    """The command names an operation the group's state machine does not have."""


class UnsupportedMetaCommandVersion(MetaCommandError):
    """The command's version field is not one this state machine reads."""


class InvalidMetaCommand(MetaCommandError):
    """The command is not a JSON object, or a field is missing or of the wrong type."""


class MetaConflict(MetaCommandError):
    """A conditional command whose condition no longer holds: the record it creates
    exists, the record it updates is gone, or the rule list it replaces changed since it
    was read (another node's change came first). Read again, then retry."""


class UnknownMetaGroup(MetaError):
    """No Raft group of that name runs on this node."""


class NotLeader(MetaError):
    """A proposal reached a node that is not its group's leader; ``leader_id`` and
    ``leader_address`` name the leader when this node knows it (0 and "" otherwise)."""

    retriable = True

    def __init__(self, group: str, leader_id: int = 0, leader_address: str = "") -> None:
        known = f"; leader is node {leader_id} at {leader_address}" if leader_id else ""
        super().__init__(f"this node is not the leader of group {group!r}{known}")
        self.group = group
        self.leader_id = leader_id
        self.leader_address = leader_address

    def __reduce__(self) -> tuple[type[NotLeader], tuple[str, int, str]]:
        return (type(self), (self.group, self.leader_id, self.leader_address))


class MetaTimeout(MetaError):
    """A proposal or read did not complete in time (no quorum, or a leader change); the
    proposal may still commit later."""

    retriable = True


class MetaUnavailable(MetaError):
    """No meta node answered (all addresses tried, retries exhausted)."""

    retriable = True


class MembershipChangeRefused(MetaError):
    """A membership change that cannot be made as asked: a node id that is not > 0, an
    address that is not host:port, or the removal of a group's last voter."""


# --- Kafka (robustmq/broker/kafka) ------------------------------------------------------
# Error codes from the Kafka protocol guide ("Error Codes"); the retriable flags are Kafka's.


class KafkaError(RobustMQError):
    """A Kafka request that fails with a protocol error code (0 is success, never raised).

    ``offset`` is the byte offset in the frame where decoding failed (-1 when it is not a
    decoding error). Handlers put ``code`` into the response's error_code field.
    """

    protocol = "kafka"

    def __init__(self, message: str = "", offset: int = -1) -> None:
        super().__init__(message or type(self).__name__)
        self.message = message or type(self).__name__
        self.offset = offset

    def __str__(self) -> str:
        where = f" at byte {self.offset}" if self.offset >= 0 else ""
        return f"{self.message} (Kafka error {self.code}){where}"


class KafkaOffsetOutOfRange(KafkaError):
    code = 1


class KafkaCorruptMessage(KafkaError):
    code = 2
    retriable = True


class KafkaUnknownTopicOrPartition(KafkaError):
    code = 3
    retriable = True


class KafkaRequestTimedOut(KafkaError):
    """A topic change the Meta Service did not take in time (Kafka's controller answers
    CreateTopics, DeleteTopics and CreatePartitions so); the client retries it."""

    code = 7
    retriable = True


class KafkaMessageTooLarge(KafkaError):
    """A record batch over the topic's ``max.message.bytes`` (Kafka's RecordTooLarge)."""

    code = 10


class KafkaOffsetMetadataTooLarge(KafkaError):
    code = 12


class KafkaCoordinatorNotAvailable(KafkaError):
    code = 15
    retriable = True


class KafkaInvalidTopic(KafkaError):
    code = 17


class KafkaInvalidRequiredAcks(KafkaError):
    code = 21


class KafkaIllegalGeneration(KafkaError):
    code = 22


class KafkaInconsistentGroupProtocol(KafkaError):
    code = 23


class KafkaInvalidGroupId(KafkaError):
    code = 24


class KafkaUnknownMemberId(KafkaError):
    code = 25


class KafkaInvalidSessionTimeout(KafkaError):
    code = 26


class KafkaRebalanceInProgress(KafkaError):
    code = 27


class KafkaUnsupportedSaslMechanism(KafkaError):
    code = 33


class KafkaIllegalSaslState(KafkaError):
    code = 34


class KafkaUnsupportedVersion(KafkaError):
    code = 35


class KafkaTopicAlreadyExists(KafkaError):
    code = 36


class KafkaInvalidPartitions(KafkaError):
    code = 37


class KafkaInvalidReplicationFactor(KafkaError):
    code = 38


class KafkaInvalidReplicaAssignment(KafkaError):
    code = 39


class KafkaInvalidConfig(KafkaError):
    code = 40


class KafkaInvalidRequest(KafkaError):
    """A malformed frame or a field the protocol does not allow; the connection closes."""

    code = 42


class KafkaUnsupportedForMessageFormat(KafkaError):
    code = 43


class KafkaOutOfOrderSequenceNumber(KafkaError):
    code = 45


class KafkaInvalidProducerEpoch(KafkaError):
    code = 47


class KafkaTransactionalIdAuthorizationFailed(KafkaError):
    code = 53


class KafkaStorageError(KafkaError):
    code = 56
    retriable = True


class KafkaSaslAuthenticationFailed(KafkaError):
    code = 58


class KafkaNonEmptyGroup(KafkaError):
    code = 68


class KafkaGroupIdNotFound(KafkaError):
    code = 69


class KafkaUnknownLeaderEpoch(KafkaError):
    code = 76
    retriable = True


def kafka_error_code(exc: BaseException) -> int:
    """The Kafka error code a client sees for ``exc``: the one place that maps internal
    errors (storage, config) to Kafka's codes; anything unexpected is UNKNOWN_SERVER_ERROR
    (-1)."""
    if isinstance(exc, KafkaError):
        return exc.code
    if isinstance(exc, ShardNotFound):
        return KafkaUnknownTopicOrPartition.code
    if isinstance(exc, OffsetOutOfRange):
        return KafkaOffsetOutOfRange.code
    if isinstance(exc, Corrupted):
        return KafkaCorruptMessage.code
    if isinstance(exc, StorageError):
        return KafkaStorageError.code
    if isinstance(exc, MetaCommandError):
        # The state machine refused the command on every replica: the same request would be
        # refused again, so the client must not be told to retry.
        return -1
    if isinstance(exc, MetaError):
        # Committed offsets live in the Meta Service: the client finds the coordinator
        # again and retries.
        return KafkaCoordinatorNotAvailable.code
    return -1


def kafka_error_name(code: int) -> str:
    """The protocol guide's name of a Kafka error code, for messages a client prints
    (``KafkaUnknownTopicOrPartition`` -> ``UNKNOWN_TOPIC_OR_PARTITION``)."""
    cls = _REGISTRY.get(("kafka", code))
    if cls is None:
        return "UNKNOWN_SERVER_ERROR" if code == -1 else f"error code {code}"
    words = "".join("_" + c if c.isupper() else c for c in cls.__name__.removeprefix("Kafka"))
    return words.lstrip("_").upper()


# The REST API's errors: the HTTP status, a stable code string and, for bad input, the field.


class ApiError(RobustMQError):
    """A REST API request that fails; answered as ``{"error": {"code", "message"}}``."""

    protocol = "http"
    status: ClassVar[int] = 500
    error_code: ClassVar[str] = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ApiBadRequest(ApiError):
    """Bad input; the message starts with the field at fault."""

    code = status = 400
    error_code = "bad_request"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class ApiNotFound(ApiError):
    code = status = 404
    error_code = "not_found"


class ApiConflict(ApiError):
    code = status = 409
    error_code = "conflict"
