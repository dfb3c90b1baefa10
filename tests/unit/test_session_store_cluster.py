"""``MetaSessionStore`` in a cluster (``clustered``), in process, and the broker around it.

The ``mqtt`` group is a fake without Raft shared by the stores of several "nodes" (one
engine each): commands apply at once and append to a log that watch streams follow, and
it can be made to answer as a group without a leader. Checked: a node loads only the
sessions whose record names it, once the group has a leader; another node's claim of a
session reaches ``moved`` unless this node's own claim is later in the log; a session
taken while its node was down goes at load with its queue (counted); a persistent
CONNECT waits for the load (0x88 / return code 3 after ``connect_timeout``), a clean one
does not, and what the client sent behind its CONNECT is handled once it is accepted.
tests/cluster/test_mqtt_sessions_cluster.py runs the real servers.
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest

from robustmq._core import mqtt_codec
from robustmq.broker.mqtt.message import Message
from robustmq.broker.mqtt.persistence import MetaSessionStore, StoredSession, _owed
from robustmq.broker.mqtt.server import MqttBroker
from robustmq.broker.mqtt.session import Delivery, Session, SubscriptionOptions
from robustmq.config import MqttConfig
from robustmq.errors import MetaUnavailable
from robustmq.meta.client import GroupStatus, WatchEvent
from robustmq.meta.groups import MqttStateMachine, encode_command
from robustmq.storage.engine import MemoryConfig
from robustmq.storage.memory import MemoryEngine
from tests.conftest import free_port

WAIT = 10.0


class FakeGroup:
    """The cluster's ``mqtt`` group without Raft: every node's store talks to it."""

    addresses = ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]

    def __init__(self) -> None:
        self.sm = MqttStateMachine()
        self.log: list[bytes] = []
        self.leader = True
        self.refused = 0  # requests answered "no leader"
        self._grew = asyncio.Event()

    def append(self, command: bytes) -> Any:
        result = self.sm.apply(command)
        self.log.append(command)
        self._grew.set()
        return result

    def _check_leader(self) -> None:
        if not self.leader:
            self.refused += 1
            raise MetaUnavailable("group 'mqtt': no meta node answered")

    async def propose(self, group: str, command: bytes) -> Any:
        self._check_leader()
        return self.append(command)

    async def read(self, group: str, key: str) -> Any:
        self._check_leader()
        return copy.deepcopy(self.sm.read(key))

    async def status(self, address: str) -> tuple[int, list[GroupStatus]]:
        n = len(self.log)
        role = "leader" if self.leader and address == self.addresses[0] else "follower"
        return 1, [GroupStatus("mqtt", role, 1, self.addresses[0], 1, n, n, 0)]

    async def watch(self, group: str, from_index: int = 1) -> AsyncIterator[WatchEvent]:
        index = from_index
        while True:
            while index > len(self.log):
                self._grew.clear()
                await self._grew.wait()
            yield WatchEvent("entry", index, 1, self.log[index - 1])
            index += 1


class Node:
    """One node's engine and the stores opened over it, one per start."""

    def __init__(self, group: FakeGroup, node_id: int) -> None:
        self.group = group
        self.node_id = node_id
        self.engine: Any = None
        self.moved: list[tuple[str, int | None]] = []  # (client id, the node that took it)
        self.store: MetaSessionStore | None = None

    async def start(self) -> MetaSessionStore:
        if self.engine is None:
            self.engine = await MemoryEngine.open(MemoryConfig())
        store = MetaSessionStore(self.group, self.engine, self.node_id, cache=MqttStateMachine())
        store.follow(lambda client_id, node_id: self.moved.append((client_id, node_id)))
        self.store = store
        return store

    async def stop(self) -> None:
        if self.store is not None:
            await self.store.close()
            self.store = None


@pytest.fixture
async def group() -> FakeGroup:
    return FakeGroup()


@pytest.fixture
async def nodes(group: FakeGroup) -> Any:
    started = {i: Node(group, i) for i in (1, 2)}
    yield started
    for node in started.values():
        await node.stop()
        if node.engine is not None:
            await node.engine.close()


def _session(store: MetaSessionStore, client_id: str, owner: str | None = None) -> Session:
    store.session_set(client_id, owner, 3600)
    session = Session(client_id, 100, False)
    session.persisted = True
    session.journal = store
    return session


def _queued(store: MetaSessionStore, client_id: str, *payloads: bytes) -> Session:
    """A persistent session with a QoS 1 message queued per payload."""
    session = _session(store, client_id)
    for payload in payloads:
        session.deliver(Delivery(Message("t", payload, 1, False), 1, False, ()))
    return session


async def _moved(
    store: MetaSessionStore, client_id: str, node_id: int, *payloads: bytes
) -> Callable[[], None]:
    """``client_id``'s session, with a queue of ``payloads``, moved to ``node_id`` and
    its queue handed over: the callback that ends the handover."""
    _queued(store, client_id, *payloads)
    await _written(store)
    done = store.handing_over(client_id)
    store.session_moved(client_id, node_id, len(payloads))
    return done


async def _written(store: MetaSessionStore) -> None:
    done = asyncio.Event()
    store.after_appends(done.set)
    await asyncio.wait_for(done.wait(), WAIT)
    await asyncio.wait_for(store._idle.wait(), WAIT)


async def _until(what: str, check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT
    while not check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.01)


async def _cache_current(store: MetaSessionStore, group: FakeGroup) -> None:
    await _until("the cache follows the group", lambda: store._applied == len(group.log))


async def test_a_node_loads_only_its_sessions_and_sees_the_others(group, nodes):
    one, two = await nodes[1].start(), await nodes[2].start()
    for store in (one, two):
        assert await store.load() == ([], [])
    _session(one, "on-one", "alice")
    one.subscription_set("on-one", "a/#", SubscriptionOptions(1, False, False, 0))
    _session(two, "on-two", "bob")
    two.subscription_set("on-two", "b/+", SubscriptionOptions(2, True, False, 7))
    await _written(one)
    await _written(two)
    await nodes[1].stop()

    again = await nodes[1].start()
    sessions, _ = await again.load()
    assert [s.client_id for s in sessions] == ["on-one"]
    assert sessions[0].subscriptions == {"a/#": SubscriptionOptions(1, False, False, 0)}
    elsewhere = again.session_elsewhere("on-two")
    assert elsewhere is not None and elsewhere.owner == "bob"
    assert elsewhere.subscriptions == {"b/+": SubscriptionOptions(2, True, False, 7)}
    assert again.session_elsewhere("on-one") is None, "its own session is not elsewhere"
    assert again.session_elsewhere("nobody") is None


async def test_the_load_waits_until_the_group_has_a_leader(group, nodes):
    group.leader = False
    store = await nodes[1].start()
    loading = asyncio.create_task(store.load())
    await _until("two attempts refused", lambda: group.refused >= 2)
    assert not loading.done()
    assert store.session_elsewhere("x") is None
    group.append(encode_command("session.set", client_id="x", expiry_interval=9, node_id=2))
    group.leader = True
    assert await asyncio.wait_for(loading, WAIT) == ([], [])
    assert store.session_elsewhere("x") is not None, "the load saw the group as of its leader"


async def test_another_nodes_claim_moves_a_session_unless_ours_is_later(group, nodes):
    one, two = await nodes[1].start(), await nodes[2].start()
    for store in (one, two):
        await store.load()
    _session(one, "c")
    await _written(one)
    await _cache_current(one, group)
    assert nodes[1].moved == []

    # Node 1 claims again; node 2's claim lands in the log first: node 1's wins.
    one.session_set("c", None, 60)
    group.append(encode_command("session.set", client_id="c", expiry_interval=1, node_id=2))
    await _written(one)
    await _cache_current(one, group)
    assert nodes[1].moved == [], "an older claim of another node moved the session"
    assert group.sm.read("sessions/c")["node_id"] == 1

    _session(two, "c")  # the client connects to node 2
    await _written(two)
    await _until("node 1 learns of the move", lambda: nodes[1].moved == [("c", 2)])
    # A delete by another node (its client came back with a clean session) too.
    _session(one, "d")
    await _written(one)
    two.session_deleted("d")
    await _written(two)
    await _until("node 1 learns of the delete", lambda: nodes[1].moved == [("c", 2), ("d", None)])
    # Its own delete is not a move.
    _session(one, "e")
    await _written(one)
    one.session_deleted("e")
    await _written(one)
    await _cache_current(one, group)
    assert nodes[1].moved == [("c", 2), ("d", None)]


async def test_a_snapshot_in_the_stream_tells_of_the_sessions_that_moved(group, nodes):
    one = await nodes[1].start()
    await one.load()
    for client_id in ("stays", "taken", "ended"):
        _session(one, client_id)
    await _written(one)
    await _cache_current(one, group)
    # A watcher that fell behind the group's compaction gets its state, not the entries.
    state = MqttStateMachine()
    state.restore(group.sm.snapshot())
    for command in (
        encode_command("session.set", client_id="taken", expiry_interval=5, node_id=2),
        encode_command("session.delete", client_id="ended", node_id=2),
    ):
        state.apply(command)
    one._on_event(WatchEvent("snapshot", len(group.log) + 2, 1, state.snapshot()))
    assert sorted(nodes[1].moved, key=str) == [("ended", None), ("taken", 2)]


async def test_a_moved_session_leaves_nothing_here_and_is_counted(group, nodes):
    one = await nodes[1].start()
    await one.load()
    done = await _moved(one, "m", 2, b"0", b"1", b"2")
    await _written(one)
    engine = nodes[1].engine
    # Kept until node 2 has them: a crash meanwhile hands them over again at start.
    assert await engine.list_shards("mqtt/queue/") == ["mqtt/queue/m"]
    done()
    await _written(one)
    assert await engine.list_shards("mqtt/queue/") == []
    assert await engine.get(b"mqtt/session/m") is None
    assert (one.moved_away, one.handed_over) == (1, 3)
    assert group.sm.read("sessions/m")["node_id"] == 1, "the group's record is not this node's"


def test_what_a_stored_queue_still_owes_skips_acknowledged_deliveries():
    stored = StoredSession("c", None, 60, None)
    stored.queued = [Delivery(Message("t", b"%d" % k, 2, False), 2, False, ()) for k in range(5)]
    # 0 went out with id 5, which 2 was sent with later (so 0 was acknowledged); 1's
    # PUBREL went out; 3 and 4 were never sent.
    stored.packet_ids = [5, 6, 5, 0, 0]
    stored.released = {1}
    owed = [(d.message.payload, packet_id, released) for d, packet_id, released in _owed(stored)]
    assert owed == [(b"1", 6, True), (b"2", 5, False), (b"3", 0, False), (b"4", 0, False)]


async def test_a_session_taken_while_its_node_was_down_goes_at_load(group, nodes, caplog):
    one = await nodes[1].start()
    await one.load()
    _queued(one, "away", b"0", b"1", b"2", b"3")
    _session(one, "kept")
    await _written(one)
    await nodes[1].stop()
    two = await nodes[2].start()
    await two.load()
    _session(two, "away")  # its client connected to node 2 meanwhile
    await _written(two)

    again = await nodes[1].start()
    sessions, _ = await again.load()
    assert [s.client_id for s in sessions] == ["kept"]
    assert (again.moved_away, again.handed_over) == (1, 4)
    assert "moved to node 2 while this node was down: 4 messages" in caplog.text
    [(client_id, node_id, owed, done)] = again.owed_elsewhere()
    assert (client_id, node_id) == ("away", 2)
    assert [(d.message.payload, packet_id) for d, packet_id, _ in owed] == [
        (b"0", 0),
        (b"1", 0),
        (b"2", 0),
        (b"3", 0),
    ]
    assert again.owed_elsewhere() == [], "handed out once"
    await _written(again)
    engine = nodes[1].engine
    assert await engine.get(b"mqtt/session/away") is None
    assert await engine.list_shards("mqtt/queue/") == ["mqtt/queue/away"], "kept until done"
    done()
    await _written(again)
    assert await engine.list_shards("mqtt/queue/") == []


async def test_delayed_publishes_stored_while_loading_are_not_loaded_again(group, nodes):
    group.leader = False
    store = await nodes[1].start()
    store.delayed_set(time.time() + 60, Message("later", b"x", 1, False))
    await _written(store)
    loading = asyncio.create_task(store.load())
    await _until("an attempt refused", lambda: group.refused >= 1)
    group.leader = True
    await asyncio.wait_for(loading, WAIT)
    assert await store.load_delayed() == [], "scheduled already: it would fire twice"


# ---------------------------------------------------------------------- the broker


async def _mqtt(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def _packet(reader: asyncio.StreamReader, version: int) -> Any:
    decoder = mqtt_codec.Decoder(version)
    data = b""
    while True:
        packets, _ = decoder.decode(data)
        if packets:
            return packets[0]
        chunk = await asyncio.wait_for(reader.read(1), WAIT)
        assert chunk, "the broker closed the connection"
        data += chunk


def _connect(client_id: str, version: int, persistent: bool) -> bytes:
    properties = {"session_expiry_interval": 600} if version == 5 and persistent else None
    connect = mqtt_codec.Connect(
        client_id, protocol_version=version, clean_start=not persistent, properties=properties
    )
    return mqtt_codec.encode(connect, version)


@pytest.fixture
async def broker(group, nodes) -> Any:
    port = free_port()
    config = MqttConfig(
        bind="127.0.0.1", port=port, ws_port=0, tls_port=0, wss_port=0, connect_timeout=1.0
    )
    store = await nodes[1].start()
    broker = MqttBroker(config, "1", None, store)
    group.leader = False
    await broker.start()
    yield broker, port
    await broker.stop()
    nodes[1].store = None


async def test_a_persistent_connect_waits_for_the_load_and_a_clean_one_does_not(group, broker):
    mqtt, port = broker
    clean_reader, clean_writer = await _mqtt(port)
    clean_writer.write(_connect("clean", 4, persistent=False))
    assert (await _packet(clean_reader, 4)).reason_code == 0

    reader, writer = await _mqtt(port)
    subscribe = mqtt_codec.Subscribe(1, [mqtt_codec.Subscription("s/#", 1)])
    # The SUBSCRIBE behind the CONNECT waits with it, and is handled once it is accepted.
    writer.write(_connect("waits", 5, persistent=True) + mqtt_codec.encode(subscribe, 5))
    await _until("the CONNECT waits", lambda: mqtt.loading)
    group.leader = True
    connack = await _packet(reader, 5)
    assert (connack.reason_code, connack.session_present) == (0, False)
    assert isinstance(await _packet(reader, 5), mqtt_codec.Suback)
    assert mqtt.loading is None
    for w in (clean_writer, writer):
        w.close()


@pytest.mark.parametrize(("version", "refused"), [(5, 0x88), (4, 3)])
async def test_a_persistent_connect_is_refused_when_the_load_takes_too_long(
    group, broker, caplog, version, refused
):
    _, port = broker
    reader, writer = await _mqtt(port)
    writer.write(_connect(f"late-{version}", version, persistent=True))
    connack = await _packet(reader, version)
    assert (connack.reason_code, connack.session_present) == (refused, False)
    assert await asyncio.wait_for(reader.read(), WAIT) == b"", "the connection stays open"
    assert "persistent session refused (server unavailable)" in caplog.text
    writer.close()


async def test_a_session_that_expired_while_its_node_was_down_is_removed(group, nodes):
    one = await nodes[1].start()
    await one.load()
    _session(one, "expired")
    _session(one, "kept")
    await _written(one)
    await nodes[1].stop()
    # Offline for longer than its expiry interval (3600 s).
    state = {"owner": None, "offline_since": time.time() - 7200}
    await nodes[1].engine.put(b"mqtt/session/expired", orjson.dumps(state))

    store = await nodes[1].start()
    config = MqttConfig(bind="127.0.0.1", port=0, ws_port=0, tls_port=0, wss_port=0)
    broker = MqttBroker(config, "1", None, store)
    await broker.start()
    try:
        await _until("sessions loaded", lambda: broker.loading is None)
        assert set(broker.sessions) == {"kept"}
        await _until("its record deleted", lambda: group.sm.read("sessions/expired") is None)
    finally:
        await broker.stop()
        nodes[1].store = None


async def test_a_session_back_before_its_handover_ended_starts_a_new_queue(group, nodes):
    """A session moved away (its queue kept while the handover is under way) and its
    client came straight back: the old entries go before the new ones are written, the
    late end of that handover leaves the new queue alone, and so does it after the
    session moved away again (only the later handover's end drops the queue)."""
    one = await nodes[1].start()
    await one.load()
    first = await _moved(one, "bouncer", 2, b"old0", b"old1", b"old2")
    _queued(one, "bouncer", b"new")
    await _written(one)
    second = one.handing_over("bouncer")
    group.append(encode_command("session.set", client_id="bouncer", expiry_interval=60, node_id=3))
    one.session_moved("bouncer", 3, 1)
    first()  # the link finished with the old entries
    await _written(one)
    engine = nodes[1].engine
    assert await engine.list_shards("mqtt/queue/") == ["mqtt/queue/bouncer"]
    await nodes[1].stop()

    again = await nodes[1].start()
    await again.load()
    [(client_id, node_id, owed, _)] = again.owed_elsewhere()
    assert (client_id, node_id) == ("bouncer", 3)
    assert [d.message.payload for d, _, _ in owed] == [b"new"]
    second()  # from the run before: nothing to do any more
