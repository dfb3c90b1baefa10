"""The Kafka message definitions the codec is driven by: one table, no code that runs.

Each entry transcribes a request or response JSON definition from Apache Kafka's
``clients/src/main/resources/common/message/`` (``validVersions``, ``flexibleVersions``
and, per field, ``versions``, ``nullableVersions``, ``tag``/``taggedVersions``, ``default``),
with field names in snake_case. Only the versions this broker implements are listed
(``valid``), so ``ApiVersions`` advertises exactly this table (``SUPPORTED``). How bytes are
read and written lives in ``kafka_codec.py``; what the broker does with a request lives in
``robustmq/broker/kafka``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

NO_DEFAULT: Any = object()


class Field(NamedTuple):
    """One field of a message or struct.

    type: ``int8 int16 int32 int64 uint16 float64 varint varlong bool uuid string bytes
    records``, ``[]<scalar>`` for an array of scalars, ``[]`` for an array of the nested
    ``fields``, or ``struct`` for a single nested struct (tagged structs only).
    versions / nullable: "a+", "a-b" or "a" (Kafka's version-range syntax).
    tag: the tag of a tagged field (present only in flexible versions).
    """

    name: str
    type: str
    versions: str
    nullable: str | None
    tag: int | None
    default: Any
    fields: tuple[Field, ...]


def f(
    name: str,
    type_: str,
    versions: str = "0+",
    *fields: Field,
    nullable: str | None = None,
    tag: int | None = None,
    default: Any = NO_DEFAULT,
) -> Field:
    return Field(name, type_, versions, nullable, tag, default, fields)


class Message(NamedTuple):
    api_key: int
    name: str
    valid: str
    flexible: str
    fields: tuple[Field, ...]


class Api(NamedTuple):
    key: int
    name: str
    request: Message
    response: Message


def parse_range(spec: str | None) -> tuple[int, int]:
    """Kafka's version-range syntax: "3+", "2-4", "5"; "none" and None are empty."""
    if spec is None or spec == "none":
        return (1, 0)
    if spec.endswith("+"):
        return (int(spec[:-1]), 32767)
    lo, _, hi = spec.partition("-")
    return (int(lo), int(hi or lo))


def in_range(version: int, spec: str | None) -> bool:
    lo, hi = parse_range(spec)
    return lo <= version <= hi


THROTTLE = f("throttle_time_ms", "int32", "1+")


def _api(key: int, name: str, valid: str, flexible: str, req: tuple, resp: tuple) -> Api:
    return Api(
        key,
        name,
        Message(key, name + "Request", valid, flexible, req),
        Message(key, name + "Response", valid, flexible, resp),
    )


# ProduceRequest.json / ProduceResponse.json. v3 is the first with record batches v2
# (magic 2), which is the only format this broker stores.
PRODUCE = _api(
    0,
    "Produce",
    "3-9",
    "9+",
    (
        f("transactional_id", "string", "3+", nullable="0+", default=None),
        f("acks", "int16"),
        f("timeout_ms", "int32"),
        f(
            "topic_data",
            "[]",
            "0+",
            f("name", "string"),
            f(
                "partition_data",
                "[]",
                "0+",
                f("index", "int32"),
                f("records", "records", nullable="0+", default=None),
            ),
        ),
    ),
    (
        f(
            "responses",
            "[]",
            "0+",
            f("name", "string"),
            f(
                "partition_responses",
                "[]",
                "0+",
                f("index", "int32"),
                f("error_code", "int16"),
                f("base_offset", "int64"),
                f("log_append_time_ms", "int64", "2+", default=-1),
                f("log_start_offset", "int64", "5+", default=-1),
                f(
                    "record_errors",
                    "[]",
                    "8+",
                    f("batch_index", "int32", "8+"),
                    f("batch_index_error_message", "string", "8+", nullable="8+", default=None),
                ),
                f("error_message", "string", "8+", nullable="8+", default=None),
            ),
        ),
        THROTTLE,
    ),
)

# FetchRequest.json / FetchResponse.json. v13+ address topics by id; not offered.
FETCH = _api(
    1,
    "Fetch",
    "4-12",
    "12+",
    (
        f("cluster_id", "string", "12+", nullable="12+", tag=0, default=None),
        f("replica_id", "int32", default=-1),
        f("max_wait_ms", "int32"),
        f("min_bytes", "int32"),
        f("max_bytes", "int32", "3+", default=0x7FFFFFFF),
        f("isolation_level", "int8", "4+", default=0),
        f("session_id", "int32", "7+", default=0),
        f("session_epoch", "int32", "7+", default=-1),
        f(
            "topics",
            "[]",
            "0+",
            f("topic", "string"),
            f(
                "partitions",
                "[]",
                "0+",
                f("partition", "int32"),
                f("current_leader_epoch", "int32", "9+", default=-1),
                f("fetch_offset", "int64"),
                f("last_fetched_epoch", "int32", "12+", default=-1),
                f("log_start_offset", "int64", "5+", default=-1),
                f("partition_max_bytes", "int32"),
            ),
        ),
        f(
            "forgotten_topics_data",
            "[]",
            "7+",
            f("topic", "string", "7+"),
            f("partitions", "[]int32", "7+"),
        ),
        f("rack_id", "string", "11+", default=""),
    ),
    (
        THROTTLE,
        f("error_code", "int16", "7+"),
        f("session_id", "int32", "7+", default=0),
        f(
            "responses",
            "[]",
            "0+",
            f("topic", "string"),
            f(
                "partitions",
                "[]",
                "0+",
                f("partition_index", "int32"),
                f("error_code", "int16"),
                f("high_watermark", "int64"),
                f("last_stable_offset", "int64", "4+", default=-1),
                f("log_start_offset", "int64", "5+", default=-1),
                f(
                    "diverging_epoch",
                    "struct",
                    "12+",
                    f("epoch", "int32", "12+", default=-1),
                    f("end_offset", "int64", "12+", default=-1),
                    tag=0,
                    default=None,
                ),
                f(
                    "current_leader",
                    "struct",
                    "12+",
                    f("leader_id", "int32", "12+", default=-1),
                    f("leader_epoch", "int32", "12+", default=-1),
                    tag=1,
                    default=None,
                ),
                f(
                    "snapshot_id",
                    "struct",
                    "12+",
                    f("end_offset", "int64", "12+", default=-1),
                    f("epoch", "int32", "12+", default=-1),
                    tag=2,
                    default=None,
                ),
                f(
                    "aborted_transactions",
                    "[]",
                    "4+",
                    f("producer_id", "int64", "4+"),
                    f("first_offset", "int64", "4+"),
                    nullable="4+",
                    default=None,
                ),
                f("preferred_read_replica", "int32", "11+", default=-1),
                f("records", "records", nullable="0+", default=None),
            ),
        ),
    ),
)

# ListOffsetsRequest.json / ListOffsetsResponse.json. v0 (max_num_offsets, old-style
# offsets) and v7+ (MAX_TIMESTAMP) are not offered.
LIST_OFFSETS = _api(
    2,
    "ListOffsets",
    "1-6",
    "6+",
    (
        f("replica_id", "int32", default=-1),
        f("isolation_level", "int8", "2+", default=0),
        f(
            "topics",
            "[]",
            "0+",
            f("name", "string"),
            f(
                "partitions",
                "[]",
                "0+",
                f("partition_index", "int32"),
                f("current_leader_epoch", "int32", "4+", default=-1),
                f("timestamp", "int64"),
            ),
        ),
    ),
    (
        f("throttle_time_ms", "int32", "2+"),
        f(
            "topics",
            "[]",
            "0+",
            f("name", "string"),
            f(
                "partitions",
                "[]",
                "0+",
                f("partition_index", "int32"),
                f("error_code", "int16"),
                f("timestamp", "int64", "1+", default=-1),
                f("offset", "int64", "1+", default=-1),
                f("leader_epoch", "int32", "4+", default=-1),
            ),
        ),
    ),
)

# MetadataRequest.json / MetadataResponse.json. v10+ carry topic ids; not offered.
METADATA = _api(
    3,
    "Metadata",
    "0-9",
    "9+",
    (
        f("topics", "[]", "0+", f("name", "string"), nullable="1+", default=None),
        f("allow_auto_topic_creation", "bool", "4+", default=True),
        f("include_cluster_authorized_operations", "bool", "8+"),
        f("include_topic_authorized_operations", "bool", "8+"),
    ),
    (
        f("throttle_time_ms", "int32", "3+"),
        f(
            "brokers",
            "[]",
            "0+",
            f("node_id", "int32"),
            f("host", "string"),
            f("port", "int32"),
            f("rack", "string", "1+", nullable="1+", default=None),
        ),
        f("cluster_id", "string", "2+", nullable="2+", default=None),
        f("controller_id", "int32", "1+", default=-1),
        f(
            "topics",
            "[]",
            "0+",
            f("error_code", "int16"),
            f("name", "string"),
            f("is_internal", "bool", "1+"),
            f(
                "partitions",
                "[]",
                "0+",
                f("error_code", "int16"),
                f("partition_index", "int32"),
                f("leader_id", "int32"),
                f("leader_epoch", "int32", "7+", default=-1),
                f("replica_nodes", "[]int32"),
                f("isr_nodes", "[]int32"),
                f("offline_replicas", "[]int32", "5+"),
            ),
            f("topic_authorized_operations", "int32", "8+", default=-(2**31)),
        ),
        f("cluster_authorized_operations", "int32", "8+", default=-(2**31)),
    ),
)

# OffsetCommitRequest.json / OffsetCommitResponse.json.
OFFSET_COMMIT = _api(
    8,
    "OffsetCommit",
    "0-8",
    "8+",
    (
        f("group_id", "string"),
        f("generation_id", "int32", "1+", default=-1),
        f("member_id", "string", "1+", default=""),
        f("group_instance_id", "string", "7+", nullable="7+", default=None),
        f("retention_time_ms", "int64", "2-4", default=-1),
        f(
            "topics",
            "[]",
            "0+",
            f("name", "string"),
            f(
                "partitions",
                "[]",
                "0+",
                f("partition_index", "int32"),
                f("committed_offset", "int64"),
                f("committed_leader_epoch", "int32", "6+", default=-1),
                f("commit_timestamp", "int64", "1", default=-1),
                f("committed_metadata", "string", nullable="0+", default=None),
            ),
        ),
    ),
    (
        f("throttle_time_ms", "int32", "3+"),
        f(
            "topics",
            "[]",
            "0+",
            f("name", "string"),
            f("partitions", "[]", "0+", f("partition_index", "int32"), f("error_code", "int16")),
        ),
    ),
)

# OffsetFetchRequest.json / OffsetFetchResponse.json. v8+ batch several groups; not offered.
OFFSET_FETCH = _api(
    9,
    "OffsetFetch",
    "0-7",
    "6+",
    (
        f("group_id", "string"),
        f(
            "topics",
            "[]",
            "0+",
            f("name", "string"),
            f("partition_indexes", "[]int32"),
            nullable="2+",
            default=None,
        ),
        f("require_stable", "bool", "7+"),
    ),
    (
        f("throttle_time_ms", "int32", "3+"),
        f(
            "topics",
            "[]",
            "0+",
            f("name", "string"),
            f(
                "partitions",
                "[]",
                "0+",
                f("partition_index", "int32"),
                f("committed_offset", "int64"),
                f("committed_leader_epoch", "int32", "5+", default=-1),
                f("metadata", "string", nullable="0+", default=None),
                f("error_code", "int16"),
            ),
        ),
        f("error_code", "int16", "2+"),
    ),
)

# FindCoordinatorRequest.json / FindCoordinatorResponse.json. v4+ batch keys; not offered.
FIND_COORDINATOR = _api(
    10,
    "FindCoordinator",
    "0-3",
    "3+",
    (f("key", "string"), f("key_type", "int8", "1+")),
    (
        THROTTLE,
        f("error_code", "int16"),
        f("error_message", "string", "1+", nullable="1+", default=None),
        f("node_id", "int32"),
        f("host", "string"),
        f("port", "int32"),
    ),
)

# JoinGroupRequest.json / JoinGroupResponse.json.
JOIN_GROUP = _api(
    11,
    "JoinGroup",
    "0-7",
    "6+",
    (
        f("group_id", "string"),
        f("session_timeout_ms", "int32"),
        f("rebalance_timeout_ms", "int32", "1+", default=-1),
        f("member_id", "string"),
        f("group_instance_id", "string", "5+", nullable="5+", default=None),
        f("protocol_type", "string"),
        f("protocols", "[]", "0+", f("name", "string"), f("metadata", "bytes")),
    ),
    (
        f("throttle_time_ms", "int32", "2+"),
        f("error_code", "int16"),
        f("generation_id", "int32", default=-1),
        f("protocol_type", "string", "7+", nullable="7+", default=None),
        f("protocol_name", "string", "0+", nullable="7+", default=""),
        f("leader", "string"),
        f("member_id", "string"),
        f(
            "members",
            "[]",
            "0+",
            f("member_id", "string"),
            f("group_instance_id", "string", "5+", nullable="5+", default=None),
            f("metadata", "bytes"),
        ),
    ),
)

# HeartbeatRequest.json / HeartbeatResponse.json.
HEARTBEAT = _api(
    12,
    "Heartbeat",
    "0-4",
    "4+",
    (
        f("group_id", "string"),
        f("generation_id", "int32"),
        f("member_id", "string"),
        f("group_instance_id", "string", "3+", nullable="3+", default=None),
    ),
    (THROTTLE, f("error_code", "int16")),
)

# LeaveGroupRequest.json / LeaveGroupResponse.json. v3 turned member_id into a batch.
LEAVE_GROUP = _api(
    13,
    "LeaveGroup",
    "0-4",
    "4+",
    (
        f("group_id", "string"),
        f("member_id", "string", "0-2", default=""),
        f(
            "members",
            "[]",
            "3+",
            f("member_id", "string", "3+"),
            f("group_instance_id", "string", "3+", nullable="3+", default=None),
        ),
    ),
    (
        THROTTLE,
        f("error_code", "int16"),
        f(
            "members",
            "[]",
            "3+",
            f("member_id", "string", "3+"),
            f("group_instance_id", "string", "3+", nullable="3+", default=None),
            f("error_code", "int16", "3+"),
        ),
    ),
)

# SyncGroupRequest.json / SyncGroupResponse.json.
SYNC_GROUP = _api(
    14,
    "SyncGroup",
    "0-5",
    "4+",
    (
        f("group_id", "string"),
        f("generation_id", "int32"),
        f("member_id", "string"),
        f("group_instance_id", "string", "3+", nullable="3+", default=None),
        f("protocol_type", "string", "5+", nullable="5+", default=None),
        f("protocol_name", "string", "5+", nullable="5+", default=None),
        f("assignments", "[]", "0+", f("member_id", "string"), f("assignment", "bytes")),
    ),
    (
        THROTTLE,
        f("error_code", "int16"),
        f("protocol_type", "string", "5+", nullable="5+", default=None),
        f("protocol_name", "string", "5+", nullable="5+", default=None),
        f("assignment", "bytes"),
    ),
)

# DescribeGroupsRequest.json / DescribeGroupsResponse.json.
DESCRIBE_GROUPS = _api(
    15,
    "DescribeGroups",
    "0-5",
    "5+",
    (f("groups", "[]string"), f("include_authorized_operations", "bool", "3+")),
    (
        THROTTLE,
        f(
            "groups",
            "[]",
            "0+",
            f("error_code", "int16"),
            f("group_id", "string"),
            f("group_state", "string"),
            f("protocol_type", "string"),
            f("protocol_data", "string"),
            f(
                "members",
                "[]",
                "0+",
                f("member_id", "string"),
                f("group_instance_id", "string", "4+", nullable="4+", default=None),
                f("client_id", "string"),
                f("client_host", "string"),
                f("member_metadata", "bytes"),
                f("member_assignment", "bytes"),
            ),
            f("authorized_operations", "int32", "3+", default=-(2**31)),
        ),
    ),
)

# ListGroupsRequest.json / ListGroupsResponse.json.
LIST_GROUPS = _api(
    16,
    "ListGroups",
    "0-4",
    "3+",
    (f("states_filter", "[]string", "4+"),),
    (
        THROTTLE,
        f("error_code", "int16"),
        f(
            "groups",
            "[]",
            "0+",
            f("group_id", "string"),
            f("protocol_type", "string"),
            f("group_state", "string", "4+"),
        ),
    ),
)

# ApiVersionsRequest.json / ApiVersionsResponse.json. The response header is v0 in every
# version (KIP-511), so a client can read the error even when it sent too new a version.
API_VERSIONS = _api(
    18,
    "ApiVersions",
    "0-3",
    "3+",
    (
        f("client_software_name", "string", "3+"),
        f("client_software_version", "string", "3+"),
    ),
    (
        f("error_code", "int16"),
        f(
            "api_keys",
            "[]",
            "0+",
            f("api_key", "int16"),
            f("min_version", "int16"),
            f("max_version", "int16"),
        ),
        THROTTLE,
        f(
            "supported_features",
            "[]",
            "3+",
            f("name", "string", "3+"),
            f("min_version", "int16", "3+"),
            f("max_version", "int16", "3+"),
            tag=0,
        ),
        f("finalized_features_epoch", "int64", "3+", tag=1, default=-1),
    ),
)

# CreateTopicsRequest.json / CreateTopicsResponse.json.
CREATE_TOPICS = _api(
    19,
    "CreateTopics",
    "0-5",
    "5+",
    (
        f(
            "topics",
            "[]",
            "0+",
            f("name", "string"),
            f("num_partitions", "int32"),
            f("replication_factor", "int16"),
            f(
                "assignments",
                "[]",
                "0+",
                f("partition_index", "int32"),
                f("broker_ids", "[]int32"),
            ),
            f(
                "configs",
                "[]",
                "0+",
                f("name", "string"),
                f("value", "string", nullable="0+", default=None),
            ),
        ),
        f("timeout_ms", "int32"),
        f("validate_only", "bool", "1+"),
    ),
    (
        f("throttle_time_ms", "int32", "2+"),
        f(
            "topics",
            "[]",
            "0+",
            f("name", "string"),
            f("error_code", "int16"),
            f("error_message", "string", "1+", nullable="0+", default=None),
            f("topic_config_error_code", "int16", "5+", tag=0),
            f("num_partitions", "int32", "5+", default=-1),
            f("replication_factor", "int16", "5+", default=-1),
            f(
                "configs",
                "[]",
                "5+",
                f("name", "string", "5+"),
                f("value", "string", "5+", nullable="5+", default=None),
                f("read_only", "bool", "5+"),
                f("config_source", "int8", "5+", default=-1),
                f("is_sensitive", "bool", "5+"),
                nullable="5+",
                default=None,
            ),
        ),
    ),
)

# DeleteTopicsRequest.json / DeleteTopicsResponse.json. v6+ address topics by id.
DELETE_TOPICS = _api(
    20,
    "DeleteTopics",
    "0-4",
    "4+",
    (f("topic_names", "[]string"), f("timeout_ms", "int32")),
    (
        THROTTLE,
        f("responses", "[]", "0+", f("name", "string"), f("error_code", "int16")),
    ),
)

# InitProducerIdRequest.json / InitProducerIdResponse.json. Only for idempotent producers:
# a transactional_id is refused (no transactions yet).
INIT_PRODUCER_ID = _api(
    22,
    "InitProducerId",
    "0-4",
    "2+",
    (
        f("transactional_id", "string", nullable="0+", default=None),
        f("transaction_timeout_ms", "int32"),
        f("producer_id", "int64", "3+", default=-1),
        f("producer_epoch", "int16", "3+", default=-1),
    ),
    (
        f("throttle_time_ms", "int32"),
        f("error_code", "int16"),
        f("producer_id", "int64", default=-1),
        f("producer_epoch", "int16", default=-1),
    ),
)

# SaslHandshakeRequest.json / SaslHandshakeResponse.json. v1 means the SASL bytes follow
# in SaslAuthenticate requests (KIP-152), v0 that they follow as raw size-prefixed frames.
SASL_HANDSHAKE = _api(
    17,
    "SaslHandshake",
    "0-1",
    "none",
    (f("mechanism", "string"),),
    (f("error_code", "int16"), f("mechanisms", "[]string")),
)

# DeleteRecordsRequest.json / DeleteRecordsResponse.json.
DELETE_RECORDS = _api(
    21,
    "DeleteRecords",
    "0-2",
    "2+",
    (
        f(
            "topics",
            "[]",
            "0+",
            f("name", "string"),
            f("partitions", "[]", "0+", f("partition_index", "int32"), f("offset", "int64")),
        ),
        f("timeout_ms", "int32"),
    ),
    (
        f("throttle_time_ms", "int32"),
        f(
            "topics",
            "[]",
            "0+",
            f("name", "string"),
            f(
                "partitions",
                "[]",
                "0+",
                f("partition_index", "int32"),
                f("low_watermark", "int64"),
                f("error_code", "int16"),
            ),
        ),
    ),
)

# OffsetForLeaderEpochRequest.json / OffsetForLeaderEpochResponse.json.
OFFSET_FOR_LEADER_EPOCH = _api(
    23,
    "OffsetForLeaderEpoch",
    "0-4",
    "4+",
    (
        f("replica_id", "int32", "3+", default=-2),
        f(
            "topics",
            "[]",
            "0+",
            f("topic", "string"),
            f(
                "partitions",
                "[]",
                "0+",
                f("partition", "int32"),
                f("current_leader_epoch", "int32", "2+", default=-1),
                f("leader_epoch", "int32"),
            ),
        ),
    ),
    (
        f("throttle_time_ms", "int32", "2+"),
        f(
            "topics",
            "[]",
            "0+",
            f("topic", "string"),
            f(
                "partitions",
                "[]",
                "0+",
                f("error_code", "int16"),
                f("partition", "int32"),
                f("leader_epoch", "int32", "1+", default=-1),
                f("end_offset", "int64", default=-1),
            ),
        ),
    ),
)

# DescribeConfigsRequest.json / DescribeConfigsResponse.json.
DESCRIBE_CONFIGS = _api(
    32,
    "DescribeConfigs",
    "0-4",
    "4+",
    (
        f(
            "resources",
            "[]",
            "0+",
            f("resource_type", "int8"),
            f("resource_name", "string"),
            f("configuration_keys", "[]string", nullable="0+", default=None),
        ),
        f("include_synonyms", "bool", "1+", default=False),
        f("include_documentation", "bool", "3+", default=False),
    ),
    (
        f("throttle_time_ms", "int32"),
        f(
            "results",
            "[]",
            "0+",
            f("error_code", "int16"),
            f("error_message", "string", nullable="0+", default=None),
            f("resource_type", "int8"),
            f("resource_name", "string"),
            f(
                "configs",
                "[]",
                "0+",
                f("name", "string"),
                f("value", "string", nullable="0+", default=None),
                f("read_only", "bool"),
                f("is_default", "bool", "0"),
                f("config_source", "int8", "1+", default=-1),
                f("is_sensitive", "bool"),
                f(
                    "synonyms",
                    "[]",
                    "1+",
                    f("name", "string", "1+"),
                    f("value", "string", "1+", nullable="0+", default=None),
                    f("source", "int8", "1+"),
                ),
                f("config_type", "int8", "3+", default=0),
                f("documentation", "string", "3+", nullable="0+", default=None),
            ),
        ),
    ),
)

# AlterConfigsRequest.json / AlterConfigsResponse.json.
ALTER_CONFIGS = _api(
    33,
    "AlterConfigs",
    "0-2",
    "2+",
    (
        f(
            "resources",
            "[]",
            "0+",
            f("resource_type", "int8"),
            f("resource_name", "string"),
            f(
                "configs",
                "[]",
                "0+",
                f("name", "string"),
                f("value", "string", nullable="0+", default=None),
            ),
        ),
        f("validate_only", "bool"),
    ),
    (
        f("throttle_time_ms", "int32"),
        f(
            "responses",
            "[]",
            "0+",
            f("error_code", "int16"),
            f("error_message", "string", nullable="0+", default=None),
            f("resource_type", "int8"),
            f("resource_name", "string"),
        ),
    ),
)

# SaslAuthenticateRequest.json / SaslAuthenticateResponse.json.
SASL_AUTHENTICATE = _api(
    36,
    "SaslAuthenticate",
    "0-2",
    "2+",
    (f("auth_bytes", "bytes"),),
    (
        f("error_code", "int16"),
        f("error_message", "string", nullable="0+", default=None),
        f("auth_bytes", "bytes"),
        f("session_lifetime_ms", "int64", "1+", default=0),
    ),
)

# CreatePartitionsRequest.json / CreatePartitionsResponse.json.
CREATE_PARTITIONS = _api(
    37,
    "CreatePartitions",
    "0-3",
    "2+",
    (
        f(
            "topics",
            "[]",
            "0+",
            f("name", "string"),
            f("count", "int32"),
            f(
                "assignments",
                "[]",
                "0+",
                f("broker_ids", "[]int32"),
                nullable="0+",
                default=None,
            ),
        ),
        f("timeout_ms", "int32"),
        f("validate_only", "bool"),
    ),
    (
        f("throttle_time_ms", "int32"),
        f(
            "results",
            "[]",
            "0+",
            f("name", "string"),
            f("error_code", "int16"),
            f("error_message", "string", nullable="0+", default=None),
        ),
    ),
)

# DeleteGroupsRequest.json / DeleteGroupsResponse.json.
DELETE_GROUPS = _api(
    42,
    "DeleteGroups",
    "0-2",
    "2+",
    (f("groups_names", "[]string"),),
    (
        f("throttle_time_ms", "int32"),
        f("results", "[]", "0+", f("group_id", "string"), f("error_code", "int16")),
    ),
)

# IncrementalAlterConfigsRequest.json / IncrementalAlterConfigsResponse.json.
INCREMENTAL_ALTER_CONFIGS = _api(
    44,
    "IncrementalAlterConfigs",
    "0-1",
    "1+",
    (
        f(
            "resources",
            "[]",
            "0+",
            f("resource_type", "int8"),
            f("resource_name", "string"),
            f(
                "configs",
                "[]",
                "0+",
                f("name", "string"),
                f("config_operation", "int8"),
                f("value", "string", nullable="0+", default=None),
            ),
        ),
        f("validate_only", "bool"),
    ),
    (
        f("throttle_time_ms", "int32"),
        f(
            "responses",
            "[]",
            "0+",
            f("error_code", "int16"),
            f("error_message", "string", nullable="0+", default=None),
            f("resource_type", "int8"),
            f("resource_name", "string"),
        ),
    ),
)

# DescribeClusterRequest.json / DescribeClusterResponse.json (flexible from v0). v1's
# endpoint_type 2 (controllers) is answered with this node too: it is the controller.
DESCRIBE_CLUSTER = _api(
    60,
    "DescribeCluster",
    "0-1",
    "0+",
    (
        f("include_cluster_authorized_operations", "bool"),
        f("endpoint_type", "int8", "1+", default=1),
    ),
    (
        f("throttle_time_ms", "int32"),
        f("error_code", "int16"),
        f("error_message", "string", nullable="0+", default=None),
        f("endpoint_type", "int8", "1+", default=1),
        f("cluster_id", "string"),
        f("controller_id", "int32", default=-1),
        f(
            "brokers",
            "[]",
            "0+",
            f("broker_id", "int32"),
            f("host", "string"),
            f("port", "int32"),
            f("rack", "string", nullable="0+", default=None),
        ),
        f("cluster_authorized_operations", "int32", default=-(2**31)),
    ),
)

APIS: dict[int, Api] = {
    api.key: api
    for api in (
        PRODUCE,
        FETCH,
        LIST_OFFSETS,
        METADATA,
        OFFSET_COMMIT,
        OFFSET_FETCH,
        FIND_COORDINATOR,
        JOIN_GROUP,
        HEARTBEAT,
        LEAVE_GROUP,
        SYNC_GROUP,
        DESCRIBE_GROUPS,
        LIST_GROUPS,
        SASL_HANDSHAKE,
        API_VERSIONS,
        CREATE_TOPICS,
        DELETE_TOPICS,
        DELETE_RECORDS,
        INIT_PRODUCER_ID,
        OFFSET_FOR_LEADER_EPOCH,
        DESCRIBE_CONFIGS,
        ALTER_CONFIGS,
        SASL_AUTHENTICATE,
        CREATE_PARTITIONS,
        DELETE_GROUPS,
        INCREMENTAL_ALTER_CONFIGS,
        DESCRIBE_CLUSTER,
    )
}

# What ApiVersions advertises: api key -> (min, max), straight from the table.
SUPPORTED: dict[int, tuple[int, int]] = {
    key: parse_range(api.request.valid) for key, api in sorted(APIS.items())
}
