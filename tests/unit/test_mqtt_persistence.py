"""``MetaSessionStore`` against a real storage engine (memory, leveldb, segment) and the real
``mqtt`` state machine, in process: what one store writes, a new store over the same
engine loads (a restart), including the states a crash between two writes leaves.

The broker and its clients are not here: tests/integration/test_mqtt_durable*.py run
the real server with paho-mqtt.
"""

from __future__ import annotations

import asyncio
import copy
import time
from typing import Any

import orjson
import pytest

from robustmq.broker.mqtt.message import Message
from robustmq.broker.mqtt.persistence import (
    JOURNAL_VERSION,
    MetaSessionStore,
    NullStore,
    StoredWill,
)
from robustmq.broker.mqtt.session import Delivery, Session
from robustmq.errors import Corrupted
from robustmq.meta.groups.mqtt import MqttStateMachine
from robustmq.storage.engine import LevelDBConfig, MemoryConfig, Record, SegmentConfig
from robustmq.storage.leveldb import LevelDBEngine
from robustmq.storage.memory import MemoryEngine
from robustmq.storage.segment.engine import SegmentEngine


class FakeMeta:
    """The ``mqtt`` group without Raft: commands apply at once."""

    def __init__(self) -> None:
        self.sm = MqttStateMachine()

    async def propose(self, group: str, command: bytes) -> Any:
        return self.sm.apply(command)

    async def read(self, group: str, key: str) -> Any:
        return copy.deepcopy(self.sm.read(key))


@pytest.fixture(params=["memory", "leveldb", "segment"])
async def engine(request, tmp_path):
    engine: Any
    if request.param == "memory":
        engine = await MemoryEngine.open(MemoryConfig())
    elif request.param == "leveldb":
        engine = await LevelDBEngine.open(LevelDBConfig(path=str(tmp_path / "db")))
    else:
        engine = await SegmentEngine.open(SegmentConfig(path=str(tmp_path / "seg")))
    yield engine
    await engine.close()


@pytest.fixture
def meta() -> FakeMeta:
    return FakeMeta()


def _session(store: MetaSessionStore, client_id: str) -> Session:
    store.session_set(client_id, None, 3600)
    session = Session(client_id, 100, False)
    session.persisted = True
    session.journal = store
    return session


def _delivery(payload: bytes, qos: int = 1) -> Delivery:
    return Delivery(Message("t/x", payload, qos, False), qos, False, ())


async def _written(store: MetaSessionStore) -> None:
    """Waits for what the acknowledgements wait for (the broker's hold-back)."""
    done = asyncio.Event()
    store.after_appends(done.set)
    await asyncio.wait_for(done.wait(), 10)


async def _restart(meta: FakeMeta, engine: Any) -> tuple[MetaSessionStore, dict[str, Any]]:
    store = MetaSessionStore(meta, engine, 1)
    sessions, _ = await store.load()
    return store, {s.client_id: s for s in sessions}


async def test_deliveries_in_flight_and_released_survive(meta, engine):
    store = MetaSessionStore(meta, engine, 1)
    sub = _session(store, "sub")
    first, second, third, fourth = (_delivery(b"%d" % i, 2) for i in (1, 2, 3, 4))
    for packet_id, delivery in ((11, first), (12, second), (0, third), (0, fourth)):
        store.message_queued(sub, delivery, packet_id)  # 0: queued, not sent
    assert store.appending, "a PUBACK must wait for the append"
    store.message_sent(sub, third, 13)  # drained before its record was written
    await _written(store)
    assert not store.appending
    store.message_released(sub, second)  # PUBREC in, PUBREL out
    assert store.appending, "a PUBREL must wait for its marker"
    store.message_sent(sub, fourth, 14)  # drained after
    await _written(store)
    store.message_done(sub, first)  # PUBCOMP
    await store.close()

    _, sessions = await _restart(meta, engine)
    loaded = sessions["sub"]
    assert [d.message.payload for d in loaded.queued] == [b"2", b"3", b"4"]
    assert loaded.packet_ids == [12, 13, 14], "a restart must resend with the same ids"
    assert loaded.released == {0}, "the PUBREL state of the second delivery was lost"
    assert [d.qos for d in loaded.queued] == [2, 2, 2]


async def test_inbound_qos2_ids_survive_until_pubrel(meta, engine):
    store = MetaSessionStore(meta, engine, 1)
    pub, sub = _session(store, "pub"), _session(store, "sub")

    def route() -> int:
        sub.deliver(_delivery(b"once", 2))  # offline: queued and journaled
        return 0

    assert store.qos2_publish(pub, 7, route) == 0
    pub.qos2_inbound[7] = None
    assert store.appending, "the PUBREC must wait for the packet id"
    await _written(store)
    await store.close()

    store, sessions = await _restart(meta, engine)
    assert sessions["pub"].qos2_inbound == [7]
    assert [d.message.payload for d in sessions["sub"].queued] == [b"once"]
    pub = Session("pub", 100, False)
    pub.qos2_inbound = {7: None}
    pub.qos2_inbound.pop(7)  # PUBREL
    store.qos2_released(pub)
    await _written(store)
    await store.close()
    _, sessions = await _restart(meta, engine)
    assert sessions["pub"].qos2_inbound == []


@pytest.mark.parametrize(
    ("record", "ids", "kept"),
    [(None, [], []), ({"n": 0, "ids": []}, [], []), ({"n": 1, "ids": [9]}, [9], [b"m"])],
)
async def test_deliveries_of_a_qos2_publish_never_acknowledged_are_voided(
    meta, engine, record, ids, kept
):
    """A crash after the deliveries of a QoS 2 PUBLISH were appended and before its
    packet id record counted it: no PUBREC went out, so the publisher resends it; the
    stored deliveries are voided (for good) so that the resend reaches every subscriber
    once. Once the record counts it, they stay."""
    store = MetaSessionStore(meta, engine, 1)
    _session(store, "pub"), _session(store, "sub")
    await store.close()
    await engine.create_shard("mqtt/queue/sub")
    headers = (("qos", b"2"), ("retain", b"0"), ("origin", b"q:1:9:pub"))
    await engine.append("mqtt/queue/sub", [Record(b"m", b"t/x", headers)])
    if record is not None:
        await engine.put(b"mqtt/qos2/pub", orjson.dumps(record))
    for _ in range(2):  # voided for good, also after the next restart
        store, sessions = await _restart(meta, engine)
        assert sessions["pub"].qos2_inbound == ids
        assert [d.message.payload for d in sessions["sub"].queued] == kept
        await store.close()
    store.qos2_publish(Session("pub", 10, False), 9, lambda: 0)  # the resend
    await store.close()
    count = orjson.loads(await engine.get(b"mqtt/qos2/pub"))["n"]
    assert count == 2, "a publisher's QoS 2 count must not go back"


async def test_delayed_publishes_survive_until_fired(meta, engine):
    store = MetaSessionStore(meta, engine, 1)
    sub = _session(store, "sub")
    due = time.time() + 60
    key = store.delayed_set(due, Message("d/t", b"later", 1, False, None, "p"))
    assert key is not None and store.appending
    await _written(store)
    await store.close()

    store, _ = await _restart(meta, engine)
    [entry] = await store.load_delayed()
    assert entry.key == key
    assert abs(entry.due - due) < 0.01
    assert (entry.message.topic, entry.message.payload, entry.message.qos) == ("d/t", b"later", 1)
    with store.delayed_published(entry.key):
        sub.deliver(_delivery(b"later"))
    await store.close()
    store, _ = await _restart(meta, engine)
    assert await store.load_delayed() == []


async def test_a_fired_delayed_publish_whose_delete_was_lost_does_not_fire_again(meta, engine):
    store = MetaSessionStore(meta, engine, 1)
    _session(store, "sub")
    key = store.delayed_set(time.time() + 60, Message("d/t", b"x", 1, False))
    assert key is not None
    await store.close()
    await engine.create_shard("mqtt/queue/sub")
    headers = (("qos", b"1"), ("retain", b"0"), ("origin", b"d:" + key.encode()))
    await engine.append("mqtt/queue/sub", [Record(b"x", b"d/t", headers)])
    store, _ = await _restart(meta, engine)
    assert await store.load_delayed() == []
    await store.close()
    assert await engine.scan(b"mqtt/delayed/") == []


async def test_a_will_is_kept_until_published(meta, engine):
    store = MetaSessionStore(meta, engine, 1)
    sub = _session(store, "sub")
    _session(store, "w")
    will = StoredWill("will/w", b"gone", 1, True, {"will_delay_interval": 30})
    store.session_will("w", will)
    store.session_online("w", None, False)
    await store.close()

    store, sessions = await _restart(meta, engine)
    assert sessions["w"].will == will
    assert sessions["w"].offline_since is not None
    with store.will_published("w"):
        sub.deliver(_delivery(b"gone"))
    await store.close()
    _, sessions = await _restart(meta, engine)
    assert sessions["w"].will is None
    assert [d.message.payload for d in sessions["sub"].queued] == [b"gone"]


async def test_a_published_will_whose_delete_was_lost_is_not_restored(meta, engine):
    store = MetaSessionStore(meta, engine, 1)
    _session(store, "sub"), _session(store, "w")
    store.session_will("w", StoredWill("will/w", b"gone", 1, False, None))
    await store.close()
    will_id = orjson.loads(await engine.get(b"mqtt/will/w"))["id"]
    await engine.create_shard("mqtt/queue/sub")
    headers = (("qos", b"1"), ("retain", b"0"), ("origin", b"w:" + will_id.encode()))
    await engine.append("mqtt/queue/sub", [Record(b"gone", b"will/w", headers)])
    store, sessions = await _restart(meta, engine)
    assert sessions["w"].will is None
    await store.close()
    assert await engine.get(b"mqtt/will/w") is None


async def test_an_ended_session_leaves_nothing_behind(meta, engine):
    store = MetaSessionStore(meta, engine, 1)
    sub = _session(store, "gone")
    store.session_will("gone", StoredWill("w", b"x", 0, False, None))
    store.qos2_publish(sub, 3, lambda: 0)
    sub.qos2_inbound[3] = None
    sub.deliver(_delivery(b"queued"))
    await _written(store)
    store.session_deleted("gone")
    await store.close()
    _, sessions = await _restart(meta, engine)
    assert sessions == {}
    for prefix in (b"mqtt/session/", b"mqtt/will/"):
        assert await engine.scan(prefix) == [], prefix
    # What stays is the count of its QoS 2 PUBLISHes (persistence.py says why).
    assert orjson.loads(await engine.get(b"mqtt/qos2/gone")) == {"n": 1, "ids": []}
    assert await engine.list_shards("mqtt/queue/") == []


async def test_a_newer_journal_format_is_refused(meta, engine):
    await engine.put(b"mqtt/journal-version", b"%d" % (JOURNAL_VERSION + 1))
    with pytest.raises(Corrupted, match="newer than this broker"):
        await MetaSessionStore(meta, engine, 1).load()


async def test_the_journal_version_is_recorded(meta, engine):
    await MetaSessionStore(meta, engine, 1).load()
    assert await engine.get(b"mqtt/journal-version") == b"%d" % JOURNAL_VERSION


async def test_the_null_store_keeps_nothing():
    store = NullStore()
    assert store.journal() is None
    assert store.delayed_set(time.time(), Message("t", b"", 1, False)) is None
    called = []
    store.after_appends(lambda: called.append(1))
    assert called == [1] and not store.appending
    with store.will_published("c"), store.delayed_published(None):
        pass
    assert await store.load() == ([], [])
    assert await store.load_delayed() == []


class GatedEngine:
    """An engine whose appends wait for ``gate``: what happens while a record is written."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.gate = asyncio.Event()
        self.appending = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)

    async def append(self, shard: str, records: Any) -> range:
        self.appending.set()
        await self.gate.wait()
        return await self.engine.append(shard, records)


async def test_a_delivery_sent_or_released_while_its_record_is_written_gets_markers(meta, engine):
    gated = GatedEngine(engine)
    store = MetaSessionStore(meta, gated, 1)
    sub = _session(store, "sub")
    delivery = _delivery(b"late", 2)
    store.message_queued(sub, delivery)  # queued: no packet id yet
    await asyncio.wait_for(gated.appending.wait(), 10)
    store.message_sent(sub, delivery, 42)  # drained while its record is being appended
    store.message_released(sub, delivery)  # and released (a timer's write is not held)
    gated.gate.set()
    await _written(store)
    await store.close()
    _, sessions = await _restart(meta, engine)
    assert sessions["sub"].packet_ids == [42]
    assert sessions["sub"].released == {0}
    other = _delivery(b"other")  # an id() reused later must not inherit packet id 42
    assert store._packet_ids == {} and id(other) not in store._sent_late


async def test_a_queue_drained_in_order_costs_one_marker(meta, engine):
    store = MetaSessionStore(meta, engine, 1)
    sub = _session(store, "sub")
    deliveries = [_delivery(b"%d" % i) for i in range(6)]
    for delivery in deliveries:
        store.message_queued(sub, delivery)
    await _written(store)
    # Ids wrap from 65535 to 1; the fifth is not consecutive: a second marker.
    for delivery, packet_id in zip(deliveries[:5], (65534, 65535, 1, 2, 9), strict=True):
        store.message_sent(sub, delivery, packet_id)
    await _written(store)
    await store.close()
    shard = "mqtt/queue/sub"
    records = await engine.read(shard, await engine.earliest_offset(shard))
    markers = [dict(r.headers)["sent"] for r in records if r.key is None]
    assert markers == [b"0:65534:4", b"4:9:1"]
    _, sessions = await _restart(meta, engine)
    assert sessions["sub"].packet_ids == [65534, 65535, 1, 2, 9, 0]


async def test_trims_never_pass_the_oldest_delivery_not_done(meta, engine):
    store = MetaSessionStore(meta, engine, 1)
    sub = _session(store, "sub")
    deliveries = [_delivery(b"%d" % i) for i in range(100)]
    for delivery in deliveries:
        store.message_queued(sub, delivery)
    await _written(store)
    for delivery in deliveries[1:]:  # all but the oldest acknowledged
        store.message_done(sub, delivery)
    await store.close()
    store, sessions = await _restart(meta, engine)
    assert len(sessions["sub"].queued) == 100, "trimmed past a delivery not acknowledged"
    restored = Session("sub", 100, False)
    for delivery in sessions["sub"].queued:
        store.message_done(restored, delivery)
    await store.close()
    _, sessions = await _restart(meta, engine)
    assert sessions["sub"].queued == []
