"""Users and rules in the Meta Service: the ``mqtt`` group's user and rule-list commands
(validation, revisions, seeding, snapshot round trip), the broker's cache following a real
``MultiRaftHost`` through its watch stream, and the authenticator chain following the
users it holds."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from robustmq.broker.auth.authn import DENY, AuthResult, ConnectInfo
from robustmq.broker.auth.security import Security
from robustmq.broker.auth.users import MemoryUserStore, new_user, user_from_record, user_record
from robustmq.broker.mqtt.meta_rules import MetaRules, RuleReplica
from robustmq.broker.mqtt.server import MqttBroker
from robustmq.config import AuthConfig, MqttConfig
from robustmq.errors import InvalidMetaCommand, MetaConflict
from robustmq.meta.groups import encode_command
from robustmq.meta.groups.mqtt import MqttStateMachine
from robustmq.meta.host import HostConfig, InMemoryNetwork, MultiRaftHost
from tests.unit.meta.cluster_util import until

REWRITE = {"action": "publish", "source_topic": "a/#", "re": "^a/(.*)$", "dest_topic": "b/$1"}


def _apply(sm: MqttStateMachine, op: str, **fields: Any) -> Any:
    return sm.apply(encode_command(op, **fields))


# ------------------------------------------------------------------ group commands


@pytest.mark.parametrize(
    ("op", "fields", "message"),
    [
        ("user.set", {"username": "", "password_hash": "h"}, "not a username"),
        ("user.set", {"username": "a:b", "password_hash": "h"}, "not a username"),
        ("user.set", {"username": "a\x01", "password_hash": "h"}, "not a username"),
        ("user.set", {"username": "a", "password_hash": ""}, "empty password_hash"),
        ("user.set", {"username": "a", "password_hash": "h", "scram": 1}, "'scram'"),
        ("user.set", {"username": "a", "password_hash": "h", "create": "yes"}, "'create'"),
        ("acl.replace", {"rules": "allow all all #"}, "'rules'"),
        ("acl.replace", {"rules": ["allow all all"]}, "not an ACL line"),
        ("acl.replace", {"rules": ["permit all all #"]}, "not an ACL line"),
        ("acl.replace", {"rules": ["allow all read #"]}, "not an ACL line"),
        ("acl.replace", {"rules": ["allow all all #\ndeny all all #"]}, "not an ACL line"),
        ("acl.replace", {"rules": [7]}, "not an ACL line"),
        ("acl.replace", {"rules": [], "revision": "0"}, "'revision'"),
        ("rewrite.replace", {"rules": [{**REWRITE, "re": "("}]}, "bad re"),
        ("rewrite.replace", {"rules": [{**REWRITE, "action": "both"}]}, "known action"),
        ("rewrite.replace", {"rules": [{**REWRITE, "extra": "x"}]}, "known action"),
        ("rewrite.replace", {"rules": [{**REWRITE, "dest_topic": ""}]}, "known action"),
        ("autosub.replace", {"rules": [{"topic": "a", "qos": 3}]}, "qos 0, 1 or 2"),
        ("autosub.replace", {"rules": [{"topic": "a", "qos": True}]}, "qos 0, 1 or 2"),
        ("autosub.replace", {"rules": [{"topic": "", "qos": 0}]}, "qos 0, 1 or 2"),
        ("autosub.replace", {"rules": [{"topic": "a"}]}, "qos 0, 1 or 2"),
    ],
)
def test_bad_user_and_rule_commands_are_refused_and_change_nothing(
    op: str, fields: dict[str, Any], message: str
) -> None:
    sm = MqttStateMachine()
    before = sm.snapshot()
    with pytest.raises(InvalidMetaCommand, match=message):
        _apply(sm, op, **fields)
    assert sm.snapshot() == before


def test_user_set_create_and_update_conditions() -> None:
    sm = MqttStateMachine()
    assert _apply(sm, "user.set", username="u", password_hash="h1", create=True) == {
        "replaced": False
    }
    with pytest.raises(MetaConflict, match="exists"):
        _apply(sm, "user.set", username="u", password_hash="h2", create=True)
    with pytest.raises(MetaConflict, match="does not exist"):
        _apply(sm, "user.set", username="v", password_hash="h2", create=False)
    _apply(sm, "user.set", username="u", password_hash="h3", scram="s", create=False)
    assert sm.read("users/u") == {"username": "u", "password_hash": "h3", "scram": "s"}
    assert sm.read("users/v") is None


def test_rule_lists_keep_order_count_revisions_and_refuse_stale_changes() -> None:
    sm = MqttStateMachine()
    first = ["deny all publish secret/#", "allow all all #"]
    assert _apply(sm, "acl.replace", rules=first, revision=0) == {"applied": True, "revision": 1}
    assert sm.read("acl/rules") == {"name": "rules", "rules": first, "revision": 1}
    # A change computed from revision 0 after another one came first.
    with pytest.raises(MetaConflict, match="list them again"):
        _apply(sm, "acl.replace", rules=[], revision=0)
    assert _apply(sm, "acl.replace", rules=first[::-1], revision=1)["revision"] == 2
    assert sm.read("acl/rules")["rules"] == first[::-1]
    # Without a revision the list is replaced whatever it is.
    assert _apply(sm, "acl.replace", rules=[])["revision"] == 3


def test_seeding_applies_only_while_the_group_holds_no_list() -> None:
    sm = MqttStateMachine()
    assert _apply(sm, "rewrite.replace", rules=[REWRITE], seed=True) == {
        "applied": True,
        "revision": 1,
    }
    _apply(sm, "rewrite.replace", rules=[], revision=1)
    # The operator removed every rule: the config file's rules must not come back.
    assert _apply(sm, "rewrite.replace", rules=[REWRITE], seed=True) == {
        "applied": False,
        "revision": 2,
    }
    assert sm.read("rewrite/rules")["rules"] == []


def test_snapshot_restores_users_and_rules_and_old_snapshots_get_empty_rule_tables() -> None:
    sm = MqttStateMachine()
    _apply(sm, "user.set", username="u", password_hash="h")
    _apply(sm, "acl.replace", rules=["allow all all #"])
    _apply(sm, "rewrite.replace", rules=[REWRITE])
    _apply(sm, "autosub.replace", rules=[{"topic": "t/${clientid}", "qos": 1}])
    again = MqttStateMachine()
    again.restore(sm.snapshot())
    assert again.tables == sm.tables
    old = orjson.dumps(
        {
            "v": 1,
            "group": "mqtt",
            "tables": {"sessions": {}, "retained": {}, "users": {}, "acl": {}},
        }
    )
    again.restore(old)
    assert again.tables["rewrite"] == {} and again.tables["auto_subscribe"] == {}
    with pytest.raises(InvalidMetaCommand, match="wrong tables"):
        again.restore(orjson.dumps({"v": 1, "group": "mqtt", "tables": {"sessions": {}}}))


def test_replica_applies_rule_commands_ignores_others_and_a_snapshot_replaces_it() -> None:
    replica = RuleReplica()
    assert replica.apply_event("entry", encode_command("acl.replace", rules=["deny all all #"]))
    assert (
        replica.apply_event(
            "entry", encode_command("session.set", client_id="c", expiry_interval=1, node_id=1)
        )
        == set()
    )
    # Refused by the group, refused here the same way.
    assert (
        replica.apply_event("entry", encode_command("acl.replace", rules=[], revision=9)) == set()
    )
    assert replica.apply_event("entry", b"") == set()
    group = MqttStateMachine()
    _apply(group, "user.set", username="u", password_hash="h")
    assert replica.apply_event("snapshot", group.snapshot()) == {
        "users",
        "acl",
        "rewrite",
        "auto_subscribe",
    }
    assert replica.tables["users"] == {"u": {"username": "u", "password_hash": "h", "scram": ""}}
    assert replica.rule_list("acl") is None


def test_a_user_record_carries_the_hash_and_scram_but_never_the_password() -> None:
    user = new_user("alice", "s3cret-pw")
    record = user_record(user)
    assert "s3cret-pw" not in orjson.dumps(record).decode()
    assert user_from_record(record) == user
    with pytest.raises(ValueError):
        user_from_record({"username": "alice", "password_hash": "plain"})


# ------------------------------------------------------------------ authentication


def test_the_chain_follows_the_users_as_a_password_file_would() -> None:
    users = MemoryUserStore(loaded=False)
    security = Security.from_config(AuthConfig(), Counter(), users)
    info = ConnectInfo("c", "alice", b"pw", "127.0.0.1")
    assert security.authn is not None  # not loaded: nobody is let in on trust
    outcome = security.authn.authenticate(info)
    assert isinstance(outcome, AuthResult) and outcome.outcome == DENY and outcome.unavailable
    users.loaded = True
    security.refresh_authn()
    assert security.authn is None  # no users, no jwt or http: authentication off (auto)
    users.put(new_user("alice", "pw"))
    security.refresh_authn()
    assert security.authn is not None and not security.authn.allow_anonymous
    chain = security.authn
    security.refresh_authn()
    assert security.authn is chain  # nothing changed: the same chain goes on
    allowed = Security.from_config(AuthConfig(allow_anonymous=True), Counter(), users)
    assert allowed.authn is not None and allowed.authn.allow_anonymous


# ------------------------------------------------------------------ the cache


@pytest.fixture
async def host(tmp_path: Path) -> AsyncIterator[MultiRaftHost]:
    network = InMemoryNetwork()
    config = HostConfig(
        node_id=1,
        peers=((1, "127.0.0.1:1"),),
        data_dir=str(tmp_path),
        tick_interval=0.02,
        snapshot_entries=10_000,
    )
    h = MultiRaftHost(config, network.transport(1))
    network.connect(h)
    await h.start()
    yield h
    await h.stop()


async def _cache(host: MultiRaftHost, **mqtt: Any) -> tuple[MetaRules, MqttBroker]:
    auth = AuthConfig()
    config = MqttConfig(**mqtt)
    rules = MetaRules(host, host, auth, config)
    broker = MqttBroker(config, "1", auth, users=rules.users)
    await rules.start(broker, wait=15.0)
    assert rules.loaded.is_set()
    return rules, broker


async def test_the_cache_follows_changes_proposed_directly_on_the_group(
    host: MultiRaftHost,
) -> None:
    rules, broker = await _cache(host)
    try:
        assert broker.security.authn is None and rules.users is not None
        user = new_user("bob", "pw")
        await host.propose("mqtt", encode_command("user.set", **user_record(user)))
        await until(lambda: rules.users.get("bob") == user, what="user in the cache")
        assert broker.security.authn is not None  # authentication is on now
        assert "SCRAM-SHA-256" in broker.auth_methods
        await host.propose("mqtt", encode_command("acl.replace", rules=["deny all all x/#"]))
        acl = broker.security.acl
        await until(lambda: acl is not None and len(acl.rules) == 1, what="ACL rule")
        await host.propose("mqtt", encode_command("rewrite.replace", rules=[REWRITE]))
        await until(lambda: bool(broker.rewriter), what="rewrite rule")
        assert broker.rewriter.rewrite("publish", "a/z", "c", None) == "b/z"
        await host.propose(
            "mqtt", encode_command("autosub.replace", rules=[{"topic": "t/${clientid}", "qos": 1}])
        )
        await until(lambda: broker.auto_subscribe == [("t/${clientid}", 1)], what="auto-sub")
        await host.propose("mqtt", encode_command("user.delete", username="bob"))
        await until(lambda: rules.users.get("bob") is None, what="user gone")
        assert broker.security.authn is None and "SCRAM-SHA-256" not in broker.auth_methods
    finally:
        await rules.stop()


async def test_a_cache_started_after_compaction_loads_from_the_snapshot(
    host: MultiRaftHost,
) -> None:
    await until(lambda: host.groups["mqtt"].node.lead, what="a leader")
    await host.propose("mqtt", encode_command("acl.replace", rules=["deny all all x/#"]))
    await host.propose("mqtt", encode_command("user.set", username="u", password_hash="$7$x"))
    await host.snapshot("mqtt")
    assert host.groups["mqtt"].store.first_index() > 1  # index 1 is compacted away
    rules, broker = await _cache(host)
    try:
        acl = broker.security.acl
        assert acl is not None and [r.topic for r in acl.rules] == ["x/#"]
        # "$7$x" is no usable record: logged and left out, the rest loads.
        assert rules.users is not None and len(rules.users) == 0
    finally:
        await rules.stop()


async def test_config_rules_seed_the_group_once_and_the_group_then_wins(
    host: MultiRaftHost,
) -> None:
    seed = {"mqtt": [{"source_topic": "s/#", "re": "^s/(.*)$", "dest_topic": "d/$1"}]}
    rules, broker = await _cache(host, rewrite=seed["mqtt"])
    await until(lambda: rules.replica.rule_list("rewrite") is not None, what="seeded")
    listed, revision = rules.rule_list("rewrite")
    assert [r["source_topic"] for r in listed] == ["s/#"] and revision == 1
    await rules.replace("rewrite", [], revision)
    assert not broker.rewriter
    with pytest.raises(MetaConflict):
        await rules.replace("rewrite", [REWRITE], revision)  # computed from a stale list
    await rules.stop()
    # A restart with the same config: the group's (empty) list stays in force.
    again, broker = await _cache(host, rewrite=seed["mqtt"])
    try:
        assert not broker.rewriter and again.rule_list("rewrite") == ([], 2)
    finally:
        await again.stop()
