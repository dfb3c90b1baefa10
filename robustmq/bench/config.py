"""What one ``robustmq-bench mqtt`` run is asked to do: a frozen, validated configuration.

``MqttBenchConfig`` holds every option of ``robustmq-bench mqtt conn|pub|sub`` under the
protocol's own names, with defaults filled in here and each bad value rejected with a
``ConfigError`` naming the option. Parsing the command line is ``cli/bench.py``'s; running
the load is ``runner.py``'s. Also here: topic patterns (``%i``) and MQTT topic matching,
used to know how many deliveries each publish should produce.
"""

from __future__ import annotations

from dataclasses import dataclass

from robustmq._core import trie
from robustmq._core.mqtt_spec import MQTT_3_1, MQTT_3_1_1, MQTT_5
from robustmq.bench.payload import HEADER_SIZE
from robustmq.errors import ConfigError, MqttError

MODES = ("conn", "pub", "sub")
VERSION_NAMES = {MQTT_3_1: "3.1", MQTT_3_1_1: "3.1.1", MQTT_5: "5.0"}


@dataclass(frozen=True, kw_only=True)
class TlsOptions:
    """Client-side TLS: CA bundle, client certificate, and whether to skip verification."""

    cafile: str = ""
    certfile: str = ""
    keyfile: str = ""
    insecure: bool = False


@dataclass(frozen=True, kw_only=True)
class MqttBenchConfig:
    """One run. ``clients`` publishers (pub), subscribers (sub) or connections (conn);
    ``subs`` extra subscribers of ``sub_topic`` in a pub run, for end-to-end accounting.
    Every field is the command-line option of the same name (docs/bench.md); ``duration``
    and ``count`` both 0 means until Ctrl-C; ``run_id`` tells this run's messages apart."""

    mode: str
    host: str = "127.0.0.1"
    port: int = 1883
    clients: int = 1
    rate: float = 0.0  # per client: msg/s (pub) or, for conn, connections/s in total
    qos: int = 0
    size: int = 64  # payload bytes, header included
    topic: str = ""  # publish topic (pub) or filter (sub), %i = client index
    subs: int = 0
    sub_topic: str = ""
    duration: float = 0.0
    count: int = 0  # per publisher (pub) or per subscriber (sub)
    username: str | None = None
    password: str | None = None
    version: int = MQTT_3_1_1
    tls: TlsOptions | None = None
    keepalive: int = 60
    inflight: int = 64  # unacknowledged QoS 1/2 publishes per publisher
    workers: int = 1
    max_pending: int = 64  # conn: handshakes in flight
    hold: float = 0.0  # conn: seconds the connections stay open
    drain: float = 5.0  # pub: longest wait for outstanding deliveries and acks
    connect_timeout: float = 10.0
    run_id: int = 0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError("mode", self.mode, " | ".join(MODES))
        _check_range("port", self.port, 1, 65535)
        _check_range("clients", self.clients, 1, 1_000_000)
        _check_range("qos", self.qos, 0, 2)
        _check_range("size", self.size, HEADER_SIZE, 268_435_000)
        _check_range("subs", self.subs, 0, 1_000_000)
        _check_range("count", self.count, 0, 2**32 - 1)
        _check_range("keepalive", self.keepalive, 0, 65535)
        _check_range("inflight", self.inflight, 1, 65535)
        _check_range("workers", self.workers, 1, 256)
        _check_range("max_pending", self.max_pending, 1, 1_000_000)
        if self.version not in VERSION_NAMES:
            raise ConfigError("version", self.version, "3 (3.1), 4 (3.1.1) or 5 (5.0)")
        for name in ("rate", "duration", "hold", "drain"):
            if getattr(self, name) < 0:
                raise ConfigError(name, getattr(self, name), ">= 0")
        if self.connect_timeout <= 0:
            raise ConfigError("connect_timeout", self.connect_timeout, "> 0")
        if self.duration and self.count:
            raise ConfigError("count", self.count, "0 when duration is given (one or the other)")
        if self.mode != "pub" and (self.subs or self.sub_topic):
            raise ConfigError("subs", self.subs, "only with pub")
        if self.sub_topic and not self.subs:
            raise ConfigError("sub_topic", self.sub_topic, "only with --subs N")
        if self.mode != "conn" and not self.topic:
            raise ConfigError("topic", self.topic, "a topic (pub) or topic filter (sub)")
        if self.mode == "pub":
            _check_topic_name(self.topic.replace("%i", "0"), "topic")
        for name in ("topic", "sub_topic"):
            value = getattr(self, name)
            if value and (self.mode == "sub" or name == "sub_topic"):
                _check_topic_filter(value.replace("%i", "0"), name)

    @property
    def version_name(self) -> str:
        return VERSION_NAMES[self.version]

    def publish_topic(self, index: int) -> str:
        return self.topic.replace("%i", str(index))

    def subscribe_filter(self, index: int) -> str:
        pattern = self.topic if self.mode == "sub" else self.sub_topic
        return pattern.replace("%i", str(index))

    @property
    def subscribers(self) -> int:
        return self.clients if self.mode == "sub" else self.subs

    @property
    def publishers(self) -> int:
        return self.clients if self.mode == "pub" else 0


def _check_range(name: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise ConfigError(name, value, f"{low}..{high}")


def _check_topic_name(topic: str, option: str) -> None:
    try:
        trie.validate_topic_name(topic)
    except MqttError as exc:
        raise ConfigError(option, topic, f"a valid topic name ({exc.message})") from None


def _check_topic_filter(topic_filter: str, option: str) -> None:
    try:
        trie.validate_topic_filter(topic_filter)
    except MqttError as exc:
        raise ConfigError(option, topic_filter, f"a valid topic filter ({exc.message})") from None


UnitId = tuple[str, str]


def unit_id(topic_filter: str, subscriber: int) -> UnitId:
    """The receiving unit of subscriber ``subscriber``: members of one shared subscription
    group count a message once, so they share a unit (MQTT 5.0 §4.8.2); every other
    subscriber is its own unit."""
    shared = trie.parse_shared(topic_filter) is not None
    return (topic_filter, "") if shared else (topic_filter, str(subscriber))


def publishers_heard(cfg: MqttBenchConfig) -> dict[UnitId, list[int]]:
    """For each receiving unit, the publishers whose topic its filter matches, by the
    broker's own subscription trie."""
    index = trie.SubscriptionTrie()
    heard: dict[UnitId, list[int]] = {}
    for i in range(cfg.subscribers):
        topic_filter = cfg.subscribe_filter(i)
        unit = unit_id(topic_filter, i)
        index.add(topic_filter, unit, None)
        heard[unit] = []
    for p in range(cfg.publishers):
        normal, shared = index.match(cfg.publish_topic(p))
        units = {unit for unit, _ in normal}
        units.update(unit for _, _, members in shared for unit in members)
        for unit in units:
            heard[unit].append(p)
    return heard
