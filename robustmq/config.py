"""The node's configuration: one typed, validated, frozen tree.

Sources, each overriding the one before: built-in defaults, a TOML file, environment
variables ``ROBUSTMQ_<SECTION>_<KEY>`` and command-line flags. Every key is declared once
below with its default, its documentation and its allowed range; an unknown key or a bad
value is rejected at start with the key's name, the value and what is allowed
(``ConfigError``). Nothing here starts anything.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, get_type_hints

from robustmq._core import trie
from robustmq.errors import ConfigError, MqttError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ENV_PREFIX = "ROBUSTMQ_"
# Partitions per Kafka topic: one request must not be able to create millions of shards.
# Declared here, not in the Kafka broker, so kafka.default_partitions can share the bound
# without config importing the broker.
MAX_PARTITIONS = 10_000


def option(
    default: Any,
    doc: str,
    *,
    min: float | None = None,  # noqa: A002 - the vocabulary of ranges
    max: float | None = None,  # noqa: A002
    choices: tuple[Any, ...] | None = None,
    hot: str = "",
) -> Any:
    """A config key: its default, what it means and what values are allowed. ``hot`` is
    set on keys the running node takes a new value of (``PUT /api/v1/cluster/config``)
    and says what the new value reaches."""
    meta = {"doc": doc, "min": min, "max": max, "choices": choices, "hot": hot}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True, kw_only=True)
class NodeConfig:
    id: int = option(1, "this node's id, unique in the cluster", min=1, max=2**31 - 1)
    roles: list[str] = option(
        ["meta", "broker", "engine"],
        "roles this process runs",
        choices=("meta", "broker", "engine"),
    )
    data_dir: str = option("./data", "where this node keeps its data")


@dataclass(frozen=True, kw_only=True)
class ClusterConfig:
    name: str = option("robustmq", "the cluster's name")
    peers: list[str] = option(
        [],
        "meta nodes as id@host:port (their gRPC addresses), this node included; empty: a "
        "single-node cluster",
    )
    bind: str = option("0.0.0.0", "address the gRPC server (meta service) binds to")
    grpc_port: int = option(
        1228,
        "gRPC port of the meta service when peers is empty (with peers: this node's entry "
        "gives it); 0 disables gRPC, the meta role then runs only as a single node",
        min=0,
        max=65535,
    )

    def __post_init__(self) -> None:
        self.peer_addresses()

    def peer_addresses(self) -> tuple[tuple[int, str], ...]:
        """``peers`` as (node id, "host:port") pairs, checked."""
        out = []
        for peer in self.peers:
            node_id, _, address = peer.partition("@")
            host, _, port = address.rpartition(":")
            if not (node_id.isdigit() and int(node_id) > 0 and host and port.isdigit()):
                raise ConfigError("cluster.peers", peer, "entries like 1@127.0.0.1:1228")
            out.append((int(node_id), address))
        if len({i for i, _ in out}) != len(out):
            raise ConfigError("cluster.peers", self.peers, "distinct node ids")
        return tuple(out)


@dataclass(frozen=True, kw_only=True)
class MqttConfig:
    bind: str = option("0.0.0.0", "address the MQTT listeners bind to")
    port: int = option(1883, "MQTT over TCP; 0 disables", min=0, max=65535)
    tls_port: int = option(
        8883, "MQTT over TLS; starts only when certfile is set; 0 disables", min=0, max=65535
    )
    ws_port: int = option(8083, "MQTT over WebSocket; 0 disables", min=0, max=65535)
    wss_port: int = option(
        8084,
        "MQTT over WebSocket/TLS; starts only when certfile is set; 0 disables",
        min=0,
        max=65535,
    )
    reuse_port: bool = option(
        False,
        "open the TCP and TLS listeners with SO_REUSEPORT, so that several nodes of one "
        "cluster on one machine share the ports and the kernel spreads clients over them",
    )
    ws_path: str = option("/mqtt", "HTTP path of the WebSocket listeners")
    certfile: str = option("", "PEM certificate (chain) of the TLS listeners")
    keyfile: str = option("", "PEM private key of certfile (empty: inside certfile)")
    cafile: str = option("", "PEM CA bundle that client certificates are checked against")
    verify_client: str = option(
        "none", "client certificates on TLS listeners", choices=("none", "optional", "required")
    )
    max_connections: int = option(1_000_000, "connections accepted at once", min=1)
    max_packet_size: int = option(
        1_048_576,
        "largest packet accepted, in bytes (MQTT 5 Maximum Packet Size)",
        min=64,
        max=268_435_460,
        hot="connections made after the change",
    )
    receive_maximum: int = option(
        128, "QoS 1/2 messages in flight per client, both ways", min=1, max=65535
    )
    max_queued_messages: int = option(
        1000, "messages queued per session while offline or flow-controlled", min=0
    )
    queue_drop_policy: str = option(
        "drop_oldest", "what a full session queue drops", choices=("drop_oldest", "drop_newest")
    )
    backpressure_timeout: float = option(
        5.0,
        "seconds a subscriber that cannot keep up may hold back the publishers of its QoS 0 "
        "messages; after that its QoS 0 messages are dropped (counted) instead",
        min=0,
    )
    max_topic_levels: int = option(
        128,
        "levels in a topic name or filter",
        min=1,
        max=65535,
        hot="every PUBLISH and SUBSCRIBE after the change",
    )
    max_subscriptions_per_client: int = option(0, "0 means unlimited", min=0)
    topic_alias_maximum: int = option(65535, "topic aliases a client may use", min=0, max=65535)
    send_topic_aliases: bool = option(
        False,
        "use MQTT 5 topic aliases toward clients that allow them; off by default because "
        "paho-mqtt (Python) and libmosquitto clients mishandle alias-only PUBLISHes",
    )
    max_keep_alive: int = option(
        0,
        "largest keep alive granted to MQTT 5 clients (Server Keep Alive), in seconds; 0 "
        "grants what the client asks; 3.1/3.1.1 clients, which cannot be told, keep theirs",
        min=0,
        max=65535,
    )
    connect_timeout: float = option(
        10.0,
        "seconds a connection may stay open without sending CONNECT (TLS: after the handshake)",
        min=0.1,
    )
    max_session_expiry_interval: int = option(
        4_294_967_295,
        "largest session expiry granted, in seconds (3.1/3.1.1 persistent sessions get this)",
        min=0,
        max=4_294_967_295,
    )
    retain_available: bool = option(
        True,
        "whether retained messages are supported",
        hot="every PUBLISH after the change; CONNACKs after it say so",
    )
    max_retained_messages: int = option(1_000_000, "retained messages kept; 0 means none", min=0)
    max_retained_payload: int = option(1_048_576, "largest retained payload, bytes", min=0)
    shared_subscription_strategy: str = option(
        "round_robin",
        "how a shared group picks a member",
        choices=("round_robin", "random", "sticky", "hash_clientid"),
    )
    sys_interval: float = option(
        10.0, "seconds between $SYS/brokers/... updates; 0 disables", min=0
    )
    max_delayed_seconds: int = option(
        4_294_967, "largest delay of a $delayed/{seconds}/topic publish", min=1
    )
    max_delayed_messages: int = option(100_000, "delayed publishes pending at once", min=0)
    rewrite: list[dict[str, str]] = option(
        [], "topic rewrite rules: tables with action, source_topic, re, dest_topic"
    )
    auto_subscribe: list[dict[str, Any]] = option(
        [], "subscriptions added at connect: tables with topic and qos"
    )
    server_reference: str = option(
        "", "when set, MQTT 5 clients are redirected here (CONNACK 0x9C), 3.1.1 refused"
    )
    response_information: str = option(
        "", "MQTT 5 Response Information sent to clients that request it (a topic prefix)"
    )


@dataclass(frozen=True, kw_only=True)
class KafkaConfig:
    bind: str = option("0.0.0.0", "address the Kafka listener binds to")
    port: int = option(9092, "Kafka wire protocol over TCP; 0 disables", min=0, max=65535)
    max_request_size: int = option(
        104_857_600,
        "largest request frame accepted, in bytes (Kafka socket.request.max.bytes); a bigger "
        "one closes the connection",
        min=1024,
        max=2**31 - 1,
    )
    default_partitions: int = option(
        1,
        "partitions of an auto-created topic (Kafka num.partitions)",
        min=1,
        max=MAX_PARTITIONS,
        hot="topics created after the change",
    )
    auto_create_topics: bool = option(
        True,
        "create unknown topics on Metadata and Produce (Kafka auto.create.topics.enable)",
        hot="every Metadata and Produce request after the change",
    )
    retention_ms: int = option(
        604_800_000, "default retention.ms of new topics; -1 keeps records forever", min=-1
    )
    retention_bytes: int = option(
        -1, "default retention.bytes per partition of new topics; -1 is unbounded", min=-1
    )
    sasl_mechanisms: list[str] = option(
        [],
        "SASL mechanisms clients must authenticate with against the [auth] users before any "
        "other request; empty: no SASL, every client is anonymous",
        choices=("PLAIN", "SCRAM-SHA-256"),
    )


@dataclass(frozen=True, kw_only=True)
class StorageConfig:
    engine: str = option(
        "leveldb",
        "storage engine for messages and durable sessions; memory keeps nothing across a restart",
        choices=("memory", "leveldb", "segment"),
    )
    fsync: str = option(
        "interval", "when appends reach the disk", choices=("always", "interval", "never")
    )


@dataclass(frozen=True, kw_only=True)
class AuthConfig:
    allow_anonymous: str | bool = option(
        "auto",
        "whether clients without credentials may connect; auto: only while no authenticator "
        "is configured (no password_file users, jwt or http)",
        choices=("auto", True, False, "true", "false"),
    )
    password_file: str = option(
        "",
        "users: a mosquitto_passwd file (username:$7$... lines), or one from robustmq-server passwd",
    )
    authenticators: list[str] = option(
        ["password", "jwt", "http"],
        "order of the authenticator chain (each answers allow, deny or ignore); entries "
        "that are not configured are skipped",
        choices=("password", "jwt", "http"),
    )
    use_identity_as_username: bool = option(
        False,
        "on TLS listeners, the client certificate's CN is the username and authenticates "
        "the client (like Mosquitto); a client without a certificate is refused",
    )
    jwt_secret: str = option("", "HS256 secret of JWT authentication (empty: no HS256)")
    jwt_public_key_file: str = option(
        "", "PEM RSA public key of JWT authentication (RS256; empty: no RS256)"
    )
    jwt_from: str = option(
        "password", "CONNECT field carrying the JWT", choices=("password", "username")
    )
    http_url: str = option("", "URL that HTTP authentication POSTs credentials to (empty: off)")
    http_timeout: float = option(5.0, "seconds HTTP authentication waits for an answer", min=0.01)
    http_cache_ttl: float = option(
        30.0,
        "seconds an HTTP authentication answer is reused for the same credentials; 0: never",
        min=0,
    )
    acl_file: str = option("", "ACL rules, one per line (see docs/security.md); empty: no rules")
    acl_default: str = option(
        "allow", "what happens when no ACL rule applies", choices=("allow", "deny")
    )
    blacklist: list[dict[str, Any]] = option(
        [], "banned clients: tables with one of clientid, username, ip (CIDR) and optional until"
    )
    flapping_max_connects: int = option(
        0, "CONNECTs of one client id within flapping_window that ban it; 0 disables", min=0
    )
    flapping_window: float = option(60.0, "seconds of flapping detection's window", min=0.1)
    flapping_ban_time: float = option(300.0, "seconds a flapping client id stays banned", min=0.1)
    max_connections_per_ip: int = option(0, "connected clients per IP address; 0: unlimited", min=0)
    connect_rate: float = option(
        0.0, "CONNECTs accepted per second on each listener; 0: unlimited", min=0
    )
    connect_burst: int = option(
        100, "CONNECTs a listener accepts at once before connect_rate applies", min=1
    )
    publish_rate: float = option(
        0.0,
        "PUBLISH packets per second per client; 0: unlimited",
        min=0,
        hot="clients connecting after the change",
    )
    publish_byte_rate: float = option(
        0.0,
        "PUBLISH payload bytes per second per client; 0: unlimited",
        min=0,
        hot="clients connecting after the change",
    )


# Kafka's Topic.validate: 1 to 249 of [a-zA-Z0-9._-], not "." or "..".
_KAFKA_TOPIC = re.compile(r"[a-zA-Z0-9._-]{1,249}")
# What a kafka_to_mqtt mqtt_topic template may contain besides literal text.
_PLACEHOLDER = re.compile(r"\$\{([^}]*)\}")
BRIDGE_PLACEHOLDERS = ("key", "topic", "partition")


@dataclass(frozen=True)
class MqttToKafka:
    """One ``[[bridge.mqtt_to_kafka]]`` table, checked."""

    filter: str
    topic: str
    qos: int


@dataclass(frozen=True)
class KafkaToMqtt:
    """One ``[[bridge.kafka_to_mqtt]]`` table, checked."""

    topic: str
    mqtt_topic: str
    qos: int
    retain: bool
    group: str


@dataclass(frozen=True, kw_only=True)
class BridgeConfig:
    mqtt_to_kafka: list[dict[str, Any]] = option(
        [],
        "MQTT publishes copied into Kafka topics: tables with filter (an MQTT topic filter), "
        "topic (the Kafka topic) and qos (subscription QoS, default 1); see docs/bridge.md",
    )
    kafka_to_mqtt: list[dict[str, Any]] = option(
        [],
        "Kafka records published to MQTT: tables with topic (the Kafka topic), mqtt_topic (a "
        "template with ${key}, ${topic}, ${partition}), qos (default 1), retain (default "
        "false) and group (whose committed offsets it keeps, default robustmq-bridge)",
    )

    def __post_init__(self) -> None:
        self.mqtt_to_kafka_routes()
        self.kafka_to_mqtt_routes()

    def mqtt_to_kafka_routes(self) -> tuple[MqttToKafka, ...]:
        routes = []
        for i, entry in enumerate(self.mqtt_to_kafka):
            key = f"bridge.mqtt_to_kafka[{i}]"
            _check_table(key, entry, required=("filter", "topic"), optional=("qos",))
            topic_filter = entry["filter"]
            if not isinstance(topic_filter, str) or topic_filter.startswith("$share/"):
                raise ConfigError(f"{key}.filter", topic_filter, "an MQTT topic filter (no $share)")
            try:
                trie.validate_topic_filter(topic_filter)
            except MqttError as exc:
                raise ConfigError(
                    f"{key}.filter", topic_filter, f"a valid MQTT topic filter ({exc})"
                ) from None
            routes.append(
                MqttToKafka(
                    topic_filter,
                    _kafka_topic(f"{key}.topic", entry["topic"]),
                    _qos(f"{key}.qos", entry.get("qos", 1)),
                )
            )
        return tuple(routes)

    def kafka_to_mqtt_routes(self) -> tuple[KafkaToMqtt, ...]:
        routes: list[KafkaToMqtt] = []
        for i, entry in enumerate(self.kafka_to_mqtt):
            key = f"bridge.kafka_to_mqtt[{i}]"
            _check_table(
                key, entry, required=("topic", "mqtt_topic"), optional=("qos", "retain", "group")
            )
            template = entry["mqtt_topic"]
            names = _PLACEHOLDER.findall(template) if isinstance(template, str) else None
            allowed = "an MQTT topic name; placeholders ${key}, ${topic}, ${partition}"
            if names is None or any(name not in BRIDGE_PLACEHOLDERS for name in names):
                raise ConfigError(f"{key}.mqtt_topic", template, allowed)
            try:
                trie.validate_topic_name(_PLACEHOLDER.sub("x", template))
            except MqttError as exc:
                raise ConfigError(f"{key}.mqtt_topic", template, f"{allowed} ({exc})") from None
            retain, group = entry.get("retain", False), entry.get("group", "robustmq-bridge")
            if not isinstance(retain, bool):
                raise ConfigError(f"{key}.retain", retain, "true or false")
            if not isinstance(group, str) or not group:
                raise ConfigError(f"{key}.group", group, "a non-empty consumer group name")
            route = KafkaToMqtt(
                _kafka_topic(f"{key}.topic", entry["topic"]),
                template,
                _qos(f"{key}.qos", entry.get("qos", 1)),
                retain,
                group,
            )
            if any((r.topic, r.group) == (route.topic, route.group) for r in routes):
                raise ConfigError(
                    f"{key}.group", group, "a group not used by another entry for the same topic"
                )
            routes.append(route)
        return tuple(routes)


def _check_table(
    key: str, entry: Any, required: tuple[str, ...], optional: tuple[str, ...]
) -> None:
    if not isinstance(entry, dict):
        raise ConfigError(key, entry, "a table with " + ", ".join(required + optional))
    for name in entry:
        if name not in required + optional:
            raise ConfigError(
                f"{key}.{name}", entry[name], "a known key: " + ", ".join(required + optional)
            )
    for name in required:
        if name not in entry:
            raise ConfigError(f"{key}.{name}", None, "a value (the key is required)")


def _kafka_topic(key: str, name: Any) -> str:
    if not isinstance(name, str) or not _KAFKA_TOPIC.fullmatch(name) or name in (".", ".."):
        raise ConfigError(key, name, "a Kafka topic name: 1 to 249 of a-z A-Z 0-9 . _ -")
    return name


def _qos(key: str, qos: Any) -> int:
    if qos not in (0, 1, 2) or isinstance(qos, bool):
        raise ConfigError(key, qos, "0, 1 or 2")
    return int(qos)


@dataclass(frozen=True, kw_only=True)
class HttpConfig:
    bind: str = option("0.0.0.0", "address the HTTP listener binds to")
    port: int = option(
        8080, "health, readiness and Prometheus /metrics; 0 disables", min=0, max=65535
    )
    admin_token: str = option(
        "", "when set, every endpoint but /health and /ready needs Authorization: Bearer <it>"
    )


@dataclass(frozen=True, kw_only=True)
class LogConfig:
    level: str = option(
        "info",
        "log level",
        choices=("debug", "info", "warning", "error", "critical"),
        hot="every log line after the change",
    )
    format: str = option("text", "log line format", choices=("text", "json"))


@dataclass(frozen=True, kw_only=True)
class Config:
    node: NodeConfig = field(default_factory=NodeConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    kafka: KafkaConfig = field(default_factory=KafkaConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    bridge: BridgeConfig = field(default_factory=BridgeConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    log: LogConfig = field(default_factory=LogConfig)


SECTIONS: dict[str, type] = {
    f.name: get_type_hints(Config)[f.name] for f in dataclasses.fields(Config)
}


def _parse_text(key: str, text: str, kind: Any) -> Any:
    """A value given as text (environment variable or flag) converted to the key's type."""
    origin = getattr(kind, "__origin__", kind)
    try:
        if kind is bool:
            lowered = text.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if kind is int:
            return int(text, 0)
        if kind is float:
            return float(text)
        if origin is list:
            inner = kind.__args__[0]
            if inner is str:
                return [part.strip() for part in text.split(",") if part.strip()]
            return tomllib.loads(f"v = {text}")["v"]
    except (ValueError, tomllib.TOMLDecodeError):
        raise ConfigError(key, text, _describe(kind, {})) from None
    return text


def _describe(kind: Any, meta: Mapping[str, Any]) -> str:
    if meta.get("choices"):
        return "one of " + ", ".join(map(str, meta["choices"]))
    name = getattr(kind, "__name__", str(kind))
    lo, hi = meta.get("min"), meta.get("max")
    if lo is not None and hi is not None:
        return f"{name} in [{lo}, {hi}]"
    if lo is not None:
        return f"{name} >= {lo}"
    return name


def _check(key: str, value: Any, kind: Any, meta: Mapping[str, Any]) -> Any:
    origin = getattr(kind, "__origin__", kind)
    ok_type: bool
    if kind is float:
        ok_type = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok_type else value
    elif kind is int:
        ok_type = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok_type = isinstance(value, origin)
    if not ok_type:
        raise ConfigError(key, value, _describe(kind, meta))
    # NaN compares false with any bound and inf passes an open upper bound: neither is a
    # rate, a timeout or a size, whichever source (file, environment, API) it came from.
    if kind is float and not math.isfinite(value):
        raise ConfigError(key, value, "a finite " + _describe(kind, meta))
    lo, hi, choices = meta.get("min"), meta.get("max"), meta.get("choices")
    if lo is not None and value < lo or hi is not None and value > hi:
        raise ConfigError(key, value, _describe(kind, meta))
    if choices:
        items = value if isinstance(value, list) else [value]
        if any(item not in choices for item in items):
            raise ConfigError(key, value, _describe(kind, meta))
    return value


def _build_section(name: str, cls: type, values: Mapping[str, Any]) -> Any:
    hints = get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        f = known.get(key)
        if f is None:
            raise ConfigError(f"{name}.{key}", value, "a known key: " + ", ".join(sorted(known)))
        kwargs[key] = _check(f"{name}.{key}", value, hints[key], f.metadata)
    return cls(**kwargs)


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Defaults < TOML file < ``ROBUSTMQ_<SECTION>_<KEY>`` < ``overrides`` ("section.key")."""
    raw: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    if path is not None:
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except OSError as exc:
            raise ConfigError(
                "--config", str(path), f"a readable TOML file ({exc.strerror})"
            ) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError("--config", str(path), f"valid TOML ({exc})") from None
        for section, values in data.items():
            if section not in SECTIONS or not isinstance(values, dict):
                raise ConfigError(section, values, "a section: " + ", ".join(SECTIONS))
            raw[section].update(values)
    env = os.environ if environ is None else environ
    for section, cls in SECTIONS.items():
        hints = get_type_hints(cls)
        for f in dataclasses.fields(cls):
            text = env.get(f"{ENV_PREFIX}{section.upper()}_{f.name.upper()}")
            if text is not None:
                raw[section][f.name] = _parse_text(f"{section}.{f.name}", text, hints[f.name])
    for dotted, value in (overrides or {}).items():
        section, _, key = dotted.partition(".")
        if section not in raw:
            raise ConfigError(dotted, value, "a section: " + ", ".join(SECTIONS))
        raw[section][key] = value
    return Config(**{name: _build_section(name, cls, raw[name]) for name, cls in SECTIONS.items()})


def check_key(dotted: str, value: Any) -> tuple[str, str, Any, str]:
    """``section.key`` and a value for it, checked as a config file's would be (a string
    is read as an environment variable's text): (section, key, value, what a change
    reaches, or "" when the key is not hot-reloadable). ``ConfigError`` otherwise."""
    section, _, key = dotted.partition(".")
    cls = SECTIONS.get(section)
    if cls is None:
        raise ConfigError(dotted, value, "a section: " + ", ".join(SECTIONS))
    known = {f.name: f for f in dataclasses.fields(cls)}
    f = known.get(key)
    if f is None:
        raise ConfigError(dotted, value, "a known key: " + ", ".join(sorted(known)))
    kind = get_type_hints(cls)[key]
    if isinstance(value, str) and kind is not str:
        value = _parse_text(dotted, value, kind)
    return section, key, _check(dotted, value, kind, f.metadata), f.metadata["hot"]


def describe_keys() -> list[tuple[str, Any, str, str]]:
    """(key, default, allowed, doc) for every key, for docs and ``config-check --list``."""
    rows = []
    for section, cls in SECTIONS.items():
        hints = get_type_hints(cls)
        for f in dataclasses.fields(cls):
            default = (
                f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            )
            rows.append(
                (
                    f"{section}.{f.name}",
                    default,
                    _describe(hints[f.name], f.metadata),
                    f.metadata["doc"],
                )
            )
    return rows


def markdown_table() -> str:
    """The key table of docs/configuration.md (``python -m robustmq.config`` prints it)."""
    rows = ["| key | default | allowed | meaning |", "|---|---|---|---|"]
    rows += [f"| `{k}` | `{d!r}` | {a} | {doc} |" for k, d, a, doc in describe_keys()]
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())
