"""State machines of the meta groups: commands, results, snapshot/restore round trips, and
bad commands refused with a named error and no change of state."""

from __future__ import annotations

import orjson
import pytest

from robustmq.errors import (
    InvalidMetaCommand,
    UnknownMetaCommand,
    UnsupportedMetaCommandVersion,
)
from robustmq.meta.groups import (
    GROUPS,
    ClusterStateMachine,
    MqttStateMachine,
    OffsetsStateMachine,
    encode_command,
)


def test_cluster_nodes_and_config() -> None:
    sm = ClusterStateMachine()
    cmd = encode_command(
        "node.register", id=1, address="127.0.0.1:1228", roles=["meta"], heartbeat=5
    )
    assert sm.apply(cmd) == {"replaced": False}
    assert sm.apply(encode_command("node.heartbeat", id=1, heartbeat=9)) == {"known": True}
    assert sm.apply(encode_command("node.heartbeat", id=1, heartbeat=7)) == {"known": True}
    assert sm.apply(encode_command("node.heartbeat", id=2, heartbeat=7)) == {"known": False}
    assert sm.read("nodes/1") == {
        "id": 1,
        "address": "127.0.0.1:1228",
        "roles": ["meta"],
        "heartbeat": 9,
    }
    sm.apply(encode_command("config.set", key="mqtt.max_qos", value=1))
    assert sm.read("config") == {"mqtt.max_qos": 1}
    assert sm.apply(encode_command("config.delete", key="mqtt.max_qos")) == {"deleted": True}
    assert sm.apply(encode_command("node.remove", id=1)) == {"deleted": True}
    assert sm.read("nodes") == {}


def test_mqtt_sessions_keep_subscriptions_when_resumed() -> None:
    sm = MqttStateMachine()
    sm.apply(encode_command("session.set", client_id="c1", expiry_interval=60, node_id=1))
    sm.apply(encode_command("subscription.set", client_id="c1", filter="a/#", qos=1))
    sm.apply(encode_command("session.set", client_id="c1", expiry_interval=120, node_id=2))
    session = sm.read("sessions/c1")
    assert session["expiry_interval"] == 120
    assert session["subscriptions"] == {"a/#": {"filter": "a/#", "qos": 1, "options": {}}}
    assert sm.apply(encode_command("subscription.delete", client_id="c1", filter="a/#")) == {
        "deleted": True
    }
    with pytest.raises(InvalidMetaCommand, match="no persistent session 'c2'"):
        sm.apply(encode_command("subscription.set", client_id="c2", filter="a", qos=0))
    with pytest.raises(InvalidMetaCommand, match="qos 3"):
        sm.apply(encode_command("subscription.set", client_id="c1", filter="a", qos=3))
    sm.apply(encode_command("retained.set", topic="t/1", payload="aGk=", qos=1, properties={}))
    sm.apply(encode_command("user.set", username="u", password_hash="h", scram=""))
    sm.apply(encode_command("acl.replace", rules=["deny all all #"]))
    assert sm.read("retained/t/1")["payload"] == "aGk="
    assert sm.read("users/u") == {"username": "u", "password_hash": "h", "scram": ""}
    assert sm.read("acl/rules") == {"name": "rules", "rules": ["deny all all #"], "revision": 1}
    assert sm.apply(encode_command("user.delete", username="u")) == {"deleted": True}
    assert sm.apply(encode_command("user.delete", username="u")) == {"deleted": False}


def test_offsets_commit_and_group_delete() -> None:
    sm = OffsetsStateMachine()
    sm.apply(encode_command("offset.commit", group="g", topic="t", partition=0, offset=5))
    sm.apply(encode_command("offset.commit", group="g", topic="t", partition=1, offset=7))
    sm.apply(encode_command("offset.commit", group="h", topic="t", partition=0, offset=1))
    assert sm.read("offsets/g/t/1") == {"offset": 7, "metadata": ""}
    assert sm.apply(encode_command("group.delete", group="g")) == {"deleted": 2}
    assert list(sm.read("offsets")) == ["h/t/0"]
    with pytest.raises(InvalidMetaCommand, match="without '/'"):
        sm.apply(encode_command("offset.commit", group="g", topic="a/b", partition=0, offset=1))
    # A group id may hold "/" (Kafka allows any string): keys split from the right.
    sm.apply(encode_command("offset.commit", group="a/b", topic="t", partition=0, offset=1))
    assert sm.apply(encode_command("group.delete", group="a/b")) == {"deleted": 1}
    assert list(sm.read("offsets")) == ["h/t/0"]


@pytest.mark.parametrize("name", sorted(GROUPS))
def test_snapshot_restore_round_trip(name: str) -> None:
    sm_class = GROUPS[name][1]
    sm = sm_class()
    commands = {
        "cluster": [
            encode_command("node.register", id=3, address="h:1", roles=["broker"], heartbeat=1),
            encode_command("config.set", key="k", value={"nested": [1, 2]}),
        ],
        "mqtt": [
            encode_command("session.set", client_id="c", expiry_interval=5, node_id=1),
            encode_command("subscription.set", client_id="c", filter="x/+", qos=2),
            encode_command("retained.set", topic="r", payload="", qos=0, properties={"a": 1}),
        ],
        "offsets": [encode_command("offset.commit", group="g", topic="t", partition=2, offset=9)],
    }[name]
    for c in commands:
        sm.apply(c)
    copy = sm_class()
    copy.restore(sm.snapshot())
    assert copy.tables == sm.tables
    assert copy.snapshot() == sm.snapshot()


@pytest.mark.parametrize(
    ("command", "error", "match"),
    [
        (b"\xff not json", InvalidMetaCommand, "not JSON"),
        (b"[1, 2]", InvalidMetaCommand, "not a JSON object"),
        (
            orjson.dumps({"op": "config.set", "key": "k", "value": 1}),
            UnsupportedMetaCommandVersion,
            "None",
        ),
        (orjson.dumps({"v": 2, "op": "config.set"}), UnsupportedMetaCommandVersion, "version 2"),
        (orjson.dumps({"v": 1, "op": "node.fly"}), UnknownMetaCommand, "node.fly"),
        (orjson.dumps({"v": 1}), UnknownMetaCommand, "None"),
        (encode_command("config.set", key="k"), InvalidMetaCommand, "'value'"),
        (
            encode_command("node.register", id=True, address="a", roles=[], heartbeat=0),
            InvalidMetaCommand,
            "'id'",
        ),
        (
            encode_command("node.register", id=1, address="a", roles=[1], heartbeat=0),
            InvalidMetaCommand,
            "roles",
        ),
    ],
)
def test_bad_commands_are_named_errors_and_change_nothing(
    command: bytes, error: type[Exception], match: str
) -> None:
    sm = ClusterStateMachine()
    sm.apply(encode_command("config.set", key="keep", value="me"))
    before = sm.snapshot()
    with pytest.raises(error, match=match):
        sm.apply(command)
    assert sm.snapshot() == before


def test_bad_snapshots_and_reads_are_refused() -> None:
    sm = MqttStateMachine()
    with pytest.raises(InvalidMetaCommand, match="not JSON"):
        sm.restore(b"\x00")
    with pytest.raises(UnsupportedMetaCommandVersion):
        sm.restore(orjson.dumps({"v": 9}))
    with pytest.raises(InvalidMetaCommand, match="not one of group 'mqtt'"):
        sm.restore(ClusterStateMachine().snapshot())
    with pytest.raises(InvalidMetaCommand, match="no table 'nope'"):
        sm.read("nope/x")
    assert sm.read("sessions/missing") is None
