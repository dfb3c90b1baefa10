"""Every error RobustMQ raises, defined once with its protocol code.

Each class carries the code a client sees (an MQTT 5 reason code, later Kafka error codes)
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
}


def v3_connack_code(reason_code: int) -> int:
    """The MQTT 3.1.1 CONNACK return code closest to an MQTT 5 reason code."""
    return _V3_CONNACK.get(reason_code, 0x05 if reason_code >= 0x80 else 0x00)


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
