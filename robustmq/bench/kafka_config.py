"""What one ``robustmq-bench kafka`` run is asked to do: a frozen, validated configuration.

``KafkaBenchConfig`` holds every option of ``robustmq-bench kafka produce|consume`` under
the producer and consumer settings' own names (``acks``, ``linger_ms``, ``batch_bytes``),
with defaults filled in here and each bad value rejected with a ``ConfigError`` naming the
option. Parsing the command line is ``cli/bench.py``'s; running the load is
``kafka_worker.py``'s. The MQTT counterpart is ``config.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

from robustmq.bench.payload import HEADER_SIZE
from robustmq.errors import ConfigError

MODES = ("produce", "consume")
COMPRESSIONS = {"none": 0, "gzip": 1}  # record batch attributes bits 0-2
OFFSET_RESETS = ("latest", "earliest")
# Kafka's legal topic names (Topic.java): at most 249 of [a-zA-Z0-9._-].
_TOPIC_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


@dataclass(frozen=True, kw_only=True)
class KafkaBenchConfig:
    """One run. ``clients`` producers (produce) or consumers (consume); ``consumers``
    extra consumers of the same topic in a produce run (``--consume``), for end-to-end
    accounting. Every field is the command-line option of the same name (docs/bench.md);
    ``duration`` and ``count`` both 0 means until Ctrl-C; ``run_id`` tells this run's
    records apart."""

    mode: str
    host: str = "127.0.0.1"
    port: int = 9092
    topic: str = "robustmq-bench"
    clients: int = 1
    consumers: int = 0
    group: str = ""  # consume: commit and resume offsets under this group id
    offset_reset: str = "latest"  # consume: where to start without a committed offset
    rate: float = 0.0  # records/s per producer, 0 = as fast as possible
    size: int = 100  # record value bytes, bench header included
    duration: float = 0.0
    count: int = 0  # records per producer
    acks: int = 1
    linger_ms: float = 5.0
    batch_bytes: int = 1_048_576
    partitions: int = 0  # partitions of a topic created here; 0 = the broker's default
    compression: str = "none"
    inflight: int = 5  # Produce requests in flight per producer connection
    fetch_max_wait_ms: int = 500
    fetch_max_bytes: int = 52_428_800
    partition_max_bytes: int = 8_388_608
    workers: int = 1
    drain: float = 5.0  # produce: longest wait for outstanding acks and deliveries
    connect_timeout: float = 10.0
    run_id: int = 0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError("mode", self.mode, " | ".join(MODES))
        _check_range("port", self.port, 1, 65535)
        _check_range("clients", self.clients, 1, 100_000)
        _check_range("consumers", self.consumers, 0, 100_000)
        _check_range("size", self.size, HEADER_SIZE, 100 * 1024 * 1024)
        _check_range("count", self.count, 0, 2**32 - 1)
        _check_range("partitions", self.partitions, 0, 100_000)
        _check_range("batch_bytes", self.batch_bytes, 1, 1 << 30)
        _check_range("inflight", self.inflight, 1, 1000)
        _check_range("fetch_max_wait_ms", self.fetch_max_wait_ms, 0, 600_000)
        _check_range("fetch_max_bytes", self.fetch_max_bytes, 1, 2**31 - 1)
        _check_range("partition_max_bytes", self.partition_max_bytes, 1, 2**31 - 1)
        _check_range("workers", self.workers, 1, 256)
        if self.acks not in (0, 1, -1):
            raise ConfigError("acks", self.acks, "0, 1 or -1")
        if self.compression not in COMPRESSIONS:
            raise ConfigError("compression", self.compression, " | ".join(COMPRESSIONS))
        if self.offset_reset not in OFFSET_RESETS:
            raise ConfigError("offset_reset", self.offset_reset, " | ".join(OFFSET_RESETS))
        for name in ("rate", "duration", "linger_ms", "drain"):
            if getattr(self, name) < 0:
                raise ConfigError(name, getattr(self, name), ">= 0")
        if self.connect_timeout <= 0:
            raise ConfigError("connect_timeout", self.connect_timeout, "> 0")
        if self.duration and self.count:
            raise ConfigError("count", self.count, "0 when duration is given (one or the other)")
        if self.mode == "consume" and self.count:
            raise ConfigError("count", self.count, "only with produce")
        if self.mode != "produce" and self.consumers:
            raise ConfigError("consumers", self.consumers, "only with produce")
        if not self.topic or len(self.topic) > 249 or not set(self.topic) <= _TOPIC_CHARS:
            raise ConfigError("topic", self.topic, "1-249 characters of [a-zA-Z0-9._-]")
        if self.topic in (".", ".."):
            raise ConfigError("topic", self.topic, "a name other than '.' or '..'")

    @property
    def publishers(self) -> int:
        """Producers: what the shared runner and report call publishers."""
        return self.clients if self.mode == "produce" else 0

    @property
    def subscribers(self) -> int:
        return self.clients if self.mode == "consume" else self.consumers

    @property
    def compression_code(self) -> int:
        return COMPRESSIONS[self.compression]


def _check_range(name: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise ConfigError(name, value, f"{low}..{high}")
