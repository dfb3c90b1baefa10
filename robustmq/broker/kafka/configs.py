"""Topic and broker configs as DescribeConfigs, AlterConfigs and IncrementalAlterConfigs
see them: the topic config keys this broker knows (type, range, documentation, the broker
key that supplies their default), the validation of a topic's config set, and the
described entries with their source and synonyms.

Where a topic's values are kept (with the topic, in ``registry.py``) and how they become
its partitions' shard config is not here; the request handlers live in ``admin.py``.
Broker configs are the ``[kafka]`` section of the node's config file: described, never
altered at run time.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from robustmq.config import KafkaConfig
from robustmq.errors import KafkaInvalidConfig
from robustmq.storage import ShardConfig

# DescribeConfigsRequest ResourceType (Kafka's ConfigResource.Type).
RESOURCE_TOPIC = 2
RESOURCE_BROKER = 4

# DescribeConfigsResponse ConfigSource (Kafka's DescribeConfigsResponse.ConfigSource).
SOURCE_TOPIC = 1
SOURCE_STATIC_BROKER = 4
SOURCE_DEFAULT = 5

# What Kafka's ConfigDef reads as an INT or a LONG (Long.parseLong after trim): no "_"
# separators, no other digits than ASCII ones, which Python's int() would take.
_INTEGER = re.compile(r"[+-]?[0-9]+")

# DescribeConfigsResponse ConfigType (Kafka's ConfigDef.Type as numbered in the protocol).
TYPE_BOOLEAN = 1
TYPE_STRING = 2
TYPE_INT = 3
TYPE_LONG = 5
TYPE_LIST = 7

_INT32_MAX = 2**31 - 1
# Kafka's message.max.bytes default: the largest record batch a topic without its own
# max.message.bytes accepts (1 MiB plus the batch's log overhead).
MESSAGE_MAX_BYTES = 1_048_588
_INT64_MAX = 2**63 - 1
_SHARD_DEFAULTS = ShardConfig()


@dataclass(frozen=True)
class TopicKey:
    """A topic config key. ``broker_key`` is the broker config that supplies the default
    (a synonym in DescribeConfigs); ``default`` reads it from the ``[kafka]`` section."""

    name: str
    type: int
    broker_key: str
    default: Callable[[KafkaConfig], str]
    builtin: str  # the value when the [kafka] section does not set it
    doc: str
    low: int = 0
    high: int = _INT64_MAX


TOPIC_KEYS: dict[str, TopicKey] = {
    k.name: k
    for k in (
        TopicKey(
            "retention.ms",
            TYPE_LONG,
            "log.retention.ms",
            lambda c: str(c.retention_ms),
            str(KafkaConfig().retention_ms),
            "How long records are kept, in milliseconds; -1 keeps them forever. Whole "
            "batches are deleted once their newest record is older.",
            low=-1,
        ),
        TopicKey(
            "retention.bytes",
            TYPE_LONG,
            "log.retention.bytes",
            lambda c: str(c.retention_bytes),
            str(KafkaConfig().retention_bytes),
            "Largest size of a partition before its oldest records are deleted; -1 is unbounded.",
            low=-1,
        ),
        TopicKey(
            "segment.bytes",
            TYPE_INT,
            "log.segment.bytes",
            lambda c: str(_SHARD_DEFAULTS.segment_bytes),
            str(_SHARD_DEFAULTS.segment_bytes),
            "Size of one segment file of the segment storage engine.",
            low=4096,
            high=_INT32_MAX,
        ),
        TopicKey(
            "segment.ms",
            TYPE_LONG,
            "log.roll.ms",
            lambda c: str(_SHARD_DEFAULTS.segment_ms),
            str(_SHARD_DEFAULTS.segment_ms),
            "Age after which the segment storage engine starts a new segment file.",
            low=1,
        ),
        TopicKey(
            "cleanup.policy",
            TYPE_LIST,
            "log.cleanup.policy",
            lambda c: "delete",
            "delete",
            "delete: records go by retention.ms and retention.bytes. compact is not supported.",
        ),
        TopicKey(
            "max.message.bytes",
            TYPE_INT,
            "message.max.bytes",
            lambda c: str(MESSAGE_MAX_BYTES),
            str(MESSAGE_MAX_BYTES),
            "Largest record batch (after compression) a produce may append; a bigger one "
            "gets MESSAGE_TOO_LARGE.",
            high=_INT32_MAX,
        ),
    )
}


def validate(configs: dict[str, str]) -> None:
    """``KafkaInvalidConfig`` naming the first key that is unknown or has a bad value."""
    for name, value in configs.items():
        key = TOPIC_KEYS.get(name)
        if key is None:
            raise KafkaInvalidConfig(
                f"unknown topic config {name!r}; supported: {', '.join(TOPIC_KEYS)}"
            )
        if key.type == TYPE_LIST:
            policies = [p.strip() for p in value.split(",")]
            if "compact" in policies:
                raise KafkaInvalidConfig(
                    f"{name}={value}: log compaction is not supported; only delete"
                )
            if policies != ["delete"]:
                raise KafkaInvalidConfig(f"{name}={value}: only delete is supported")
            continue
        if _INTEGER.fullmatch(value.strip()) is None:
            raise KafkaInvalidConfig(f"{name}={value!r}: not an integer")
        number = int(value)
        if not key.low <= number <= key.high:
            raise KafkaInvalidConfig(f"{name}={number}: allowed {key.low} .. {key.high}")


def describe_topic(
    configs: dict[str, str],
    kafka: KafkaConfig,
    keys: list[str] | None,
    synonyms: bool,
    documentation: bool,
) -> list[dict[str, Any]]:
    """The DescribeConfigs entries of a topic whose own configs are ``configs``; ``keys``
    None or empty means every key, as in Kafka's ConfigHelper (names the broker does not
    know are left out, as Kafka does)."""
    out = []
    for name in keys or list(TOPIC_KEYS):
        key = TOPIC_KEYS.get(name)
        if key is None:
            continue
        default = key.default(kafka)
        # Most specific first, as Kafka lists synonyms.
        chain = []
        if name in configs:
            chain.append((name, configs[name], SOURCE_TOPIC))
        if default != key.builtin:
            chain.append((key.broker_key, default, SOURCE_STATIC_BROKER))
        chain.append((key.broker_key, key.builtin, SOURCE_DEFAULT))
        _, value, source = chain[0]
        out.append(
            _entry(name, value, source, False, key.type, key.doc, documentation)
            | {"synonyms": _synonyms(chain) if synonyms else []}
        )
    return out


def describe_broker(
    kafka: KafkaConfig, node_id: int, keys: list[str] | None, synonyms: bool, documentation: bool
) -> list[dict[str, Any]]:
    """The DescribeConfigs entries of this broker: its ``[kafka]`` section, read-only;
    ``keys`` None or empty means every key."""
    builtin = KafkaConfig()
    # (name, type, value, value without a config file, doc)
    table = [
        ("broker.id", TYPE_INT, str(node_id), None, "This node's id ([node] id)."),
        (
            "num.partitions",
            TYPE_INT,
            str(kafka.default_partitions),
            str(builtin.default_partitions),
            "Partitions of an auto-created topic ([kafka] default_partitions).",
        ),
        (
            "auto.create.topics.enable",
            TYPE_BOOLEAN,
            str(kafka.auto_create_topics).lower(),
            str(builtin.auto_create_topics).lower(),
            "Whether Metadata and Produce create unknown topics ([kafka] auto_create_topics).",
        ),
        (
            "socket.request.max.bytes",
            TYPE_INT,
            str(kafka.max_request_size),
            str(builtin.max_request_size),
            "Largest request frame ([kafka] max_request_size).",
        ),
        (
            "sasl.enabled.mechanisms",
            TYPE_LIST,
            ",".join(kafka.sasl_mechanisms),
            "",
            "SASL mechanisms clients authenticate with ([kafka] sasl_mechanisms).",
        ),
    ] + [
        (
            k.broker_key,
            k.type,
            k.default(kafka),
            k.builtin,
            f"Default of the topic config {k.name}.",
        )
        for k in TOPIC_KEYS.values()
    ]
    out = []
    for name, type_, value, default, doc in table:
        if keys and name not in keys:
            continue
        source = SOURCE_DEFAULT if value == default else SOURCE_STATIC_BROKER
        chain = [(name, value, source)]
        if source != SOURCE_DEFAULT and default is not None:
            chain.append((name, default, SOURCE_DEFAULT))
        out.append(
            _entry(name, value, source, True, type_, doc, documentation)
            | {"synonyms": _synonyms(chain) if synonyms else []}
        )
    return out


def _entry(
    name: str, value: str, source: int, read_only: bool, type_: int, doc: str, documentation: bool
) -> dict[str, Any]:
    return {
        "name": name,
        "value": value,
        "read_only": read_only,
        "is_default": source == SOURCE_DEFAULT,
        "config_source": source,
        "is_sensitive": False,
        "config_type": type_,
        "documentation": doc if documentation else None,
    }


def _synonyms(chain: list[tuple[str, str, int]]) -> list[dict[str, Any]]:
    return [{"name": n, "value": v, "source": s} for n, v, s in chain]
