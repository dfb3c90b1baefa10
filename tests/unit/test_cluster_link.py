"""The cluster link's pieces without sockets: the frames of forwarded messages (a round
trip keeps topic, payload, QoS, RETAIN, properties, sender, shared groups and a handed-over
delivery's subscription identifiers; a frame that
is cut, padded or garbled is refused whole with ``ForwardFrameError``, never another
exception), and the ``cluster`` group's ``routes`` table (``route.update`` adds, deletes
and replaces a node's filters; ``node.remove`` drops them; a snapshot from before the
table existed restores with it empty), following the other nodes' routes again after
the watch stream fails, a new channel when a node's address changes, what a moved session
was owed delivered to it on its new node (and only there), a message too
large for any frame dropped instead of blocking the link, and the bytes waiting for a
node bounded. Forwarding between real processes is
``tests/cluster/test_mqtt_cluster_routing.py``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from robustmq.broker.mqtt import cluster_link
from robustmq.broker.mqtt.cluster_link import (
    SESSION,
    STORE_ONLY,
    ClusterLink,
    Handover,
    decode_frame,
    encode_entry,
    encode_frame,
)
from robustmq.broker.mqtt.message import Message
from robustmq.broker.mqtt.server import MqttBroker
from robustmq.broker.mqtt.session import Delivery, Inflight
from robustmq.config import MqttConfig
from robustmq.errors import ForwardFrameError, ForwardNotReady, InvalidMetaCommand
from robustmq.meta.groups import ClusterStateMachine, encode_command

topics = st.text(
    st.characters(blacklist_characters="#+\x00", blacklist_categories=("Cs",)), min_size=1
).filter(lambda t: len(t.encode()) < 200)
names = st.text(
    st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=5
)
groups = st.tuples(
    st.text(
        st.characters(blacklist_characters="/#+\x00", blacklist_categories=("Cs",)), min_size=1
    ),
    topics,
)


@given(
    topic=topics,
    payload=st.binary(max_size=300),
    qos=st.integers(0, 2),
    retain=st.booleans(),
    sender=st.text(max_size=30).filter(lambda s: "\x00" not in s),
    shared=st.lists(groups, max_size=3),
    user=st.lists(st.tuples(names, names), max_size=2),
    flags=st.sampled_from([0, STORE_ONLY, SESSION]),
    sub_ids=st.lists(st.integers(1, 268_435_455), max_size=3),
)
def test_a_frame_round_trip_keeps_every_field(
    topic: str,
    payload: bytes,
    qos: int,
    retain: bool,
    sender: str,
    shared: list[tuple[str, str]],
    user: list[tuple[str, str]],
    flags: int,
    sub_ids: list[int],
) -> None:
    properties = {"user_property": user, "content_type": "x/y"} if user else None
    message = Message(topic, payload, qos, retain, properties, sender)
    tags = tuple(f"{g}/{f}" for g, f in shared)
    stamp = (1_700_000_000_123, 9) if flags == STORE_ONLY else None
    handover = None
    if flags == SESSION:
        handover = Handover(sender or "c", tuple(sub_ids), len(sub_ids) * 7, qos == 2)
    frame = encode_frame(7, [encode_entry(message, tags, flags, stamp, handover)] * 2)
    node, sent, entries = decode_frame(frame)
    assert node == 7 and len(entries) == 2 and abs(sent - time.time() * 1000) < 60_000
    got_flags, got, got_groups, got_stamp, got_handover = entries[0]
    assert got_flags == flags and got_groups == frozenset(shared) and got_stamp == stamp
    assert got_handover == handover
    assert (got.topic, got.payload, got.qos, got.retain, got.sender) == (
        topic,
        payload,
        qos,
        retain,
        sender,
    )
    assert got.properties == properties


def test_the_remaining_expiry_travels() -> None:
    message = Message("t", b"p", 1, False, {"message_expiry_interval": 30})
    _, _, [(_, got, _, _, _)] = decode_frame(encode_frame(1, [encode_entry(message, ())]))
    assert got.properties is not None and 29 <= got.properties["message_expiry_interval"] <= 30
    assert got.expires_at > 0


def _valid_frame() -> bytes:
    entries = [
        encode_entry(Message("a/b", b"x" * 10, 1, True, None, "c1"), ("g/a/#",)),
        encode_entry(Message("a/c", b"", 0, False, None, ""), ()),
    ]
    return encode_frame(3, entries)


@pytest.mark.parametrize(
    "frame, reason",
    [
        (b"", "shorter than the frame header"),
        (b"\x01" + _valid_frame()[1:], "version 1"),
        (_valid_frame()[:-1], "truncated"),
        (_valid_frame() + b"\x00", "after the last message"),
        (_valid_frame()[:5] + b"\x00\x00\x00\x03" + _valid_frame()[9:], "truncated"),
    ],
)
def test_a_bad_frame_is_refused_naming_the_problem(frame: bytes, reason: str) -> None:
    with pytest.raises(ForwardFrameError, match=reason):
        decode_frame(frame)


@given(st.binary(max_size=200))
def test_random_bytes_are_refused_or_decoded_never_crash(data: bytes) -> None:
    try:
        decode_frame(data)
    except ForwardFrameError:
        pass


@given(st.data())
def test_a_garbled_valid_frame_is_refused_or_decoded_never_crash(data: st.DataObject) -> None:
    frame = bytearray(_valid_frame())
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(frame) - 1))
        frame[at] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(frame)))
    try:
        decode_frame(bytes(frame[:cut]))
    except ForwardFrameError:
        pass


# ---------------------------------------------------------------------- routes table


def _routes(sm: ClusterStateMachine) -> dict[str, list[str]]:
    return {node: sorted(filters) for node, filters in sm.read("routes").items()}


def test_route_update_adds_deletes_and_replaces_a_nodes_filters() -> None:
    sm = ClusterStateMachine()
    update = lambda **kw: sm.apply(encode_command("route.update", **kw))  # noqa: E731
    update(node_id=1, add=["a/#", "$share/g/b"], delete=[])
    update(node_id=2, add=["c"], delete=[])
    assert _routes(sm) == {"1": ["$share/g/b", "a/#"], "2": ["c"]}
    assert update(node_id=1, add=["d"], delete=["a/#"]) == {"filters": 2}
    assert _routes(sm)["1"] == ["$share/g/b", "d"]
    update(node_id=1, add=["e"], delete=[], replace=True)  # a restarted node
    assert _routes(sm) == {"1": ["e"], "2": ["c"]}
    update(node_id=2, add=[], delete=["c"])
    assert _routes(sm) == {"1": ["e"]}
    sm.apply(encode_command("node.register", id=1, address="h:1", roles=[], heartbeat=1))
    sm.apply(encode_command("node.remove", id=1))
    assert _routes(sm) == {}


@pytest.mark.parametrize(
    "fields",
    [
        {"node_id": 0, "add": [], "delete": []},
        {"node_id": 1, "add": [""], "delete": []},
        {"node_id": 1, "add": [3], "delete": []},
        {"node_id": 1, "add": "a", "delete": []},
        {"node_id": 1, "add": []},
    ],
)
def test_a_bad_route_update_is_refused(fields: dict[str, object]) -> None:
    sm = ClusterStateMachine()
    with pytest.raises(InvalidMetaCommand):
        sm.apply(encode_command("route.update", **fields))
    assert sm.read("routes") == {}


def test_a_snapshot_from_before_the_routes_table_restores() -> None:
    old = {"v": 1, "group": "cluster", "tables": {"nodes": {}, "config": {"k": 1}}}
    sm = ClusterStateMachine()
    sm.restore(orjson.dumps(old))
    assert sm.read("routes") == {} and sm.read("topics") == {}
    assert sm.read("config") == {"k": 1}
    sm.apply(encode_command("route.update", node_id=4, add=["x"], delete=[]))
    again = ClusterStateMachine()
    again.restore(sm.snapshot())
    assert again.read("routes") == {"4": {"x": 1}}


class _Snapshot:
    kind = "snapshot"
    data = b""


class _FailingWatch:
    closed = False

    async def next_events(self) -> list[Any]:
        raise RuntimeError("the stream broke")

    def close(self) -> None:
        self.closed = True


class _QuietWatch:
    """A snapshot, then nothing more."""

    def __init__(self) -> None:
        self.sent = False

    async def next_events(self) -> list[Any]:
        if not self.sent:
            self.sent = True
            return [_Snapshot()]
        await asyncio.Event().wait()
        return []

    def close(self) -> None:
        pass


def _broker() -> MqttBroker:
    return MqttBroker(MqttConfig(port=0, ws_port=0, tls_port=0, wss_port=0, sys_interval=0))


def _link(broker: MqttBroker, **parts: Any) -> ClusterLink:
    """A link of node 1 to node 2 with no routes, quiet, and channels from ``parts``."""
    defaults: dict[str, Any] = {
        "watch": _QuietWatch,
        "routes": lambda: {},
        "addresses": lambda: {1: "127.0.0.1:1", 2: "127.0.0.1:2"},
        "brokers": lambda: {1, 2},
        "channel": lambda address: None,
    }
    # No proposer: the tests give it no routes of its own to propose.
    return ClusterLink(1, broker, None, **{**defaults, **parts})  # type: ignore[arg-type]


async def _until(what: str, check: Any) -> None:
    deadline = time.monotonic() + 5.0
    while not check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.01)


async def test_the_routes_are_followed_again_after_the_watch_stream_fails(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(cluster_link, "FOLLOW_RETRY", 0.05)
    broker = _broker()
    failing = _FailingWatch()
    watches: Iterator[Any] = iter([failing, _QuietWatch()])
    link = _link(
        broker,
        watch=lambda: next(watches),
        routes=lambda: {"2": {"sensors/#": 1}},
    )
    caplog.set_level(logging.ERROR, "robustmq.broker.mqtt.cluster_link")
    follow = asyncio.create_task(link._follow_routes())
    try:
        await _until(
            "node 2's route never followed",
            lambda: link in broker.router.internal_for("sensors/1"),
        )
    finally:
        follow.cancel()
    assert failing.closed
    assert "following the other nodes' routes failed" in caplog.text


class _Call:
    def __init__(self, works: bool | None, limit: int) -> None:
        self.works = works
        self.limit = limit

    async def write(self, frame: bytes) -> None:
        if self.works is None:  # a node that never answers
            await asyncio.Event().wait()
        if not self.works:
            raise ConnectionError("nobody listens at the old address")
        if len(frame) > self.limit:
            raise ConnectionError("RESOURCE_EXHAUSTED: the frame is over the gRPC limit")

    async def read(self) -> bytes:
        return b""

    def cancel(self) -> None:
        pass


class _Channel:
    def __init__(self, address: str, works: bool | None, limit: int = 1 << 30) -> None:
        self.address = address
        self.works = works
        self.limit = limit
        self.closed = False

    def stream_stream(self, method: str) -> Any:
        return lambda: _Call(self.works, self.limit)

    async def close(self) -> None:
        self.closed = True


async def test_a_node_that_moved_gets_a_channel_to_its_new_address() -> None:
    broker = _broker()
    addresses = {1: "127.0.0.1:1", 2: "127.0.0.1:2"}
    channels: list[_Channel] = []

    def channel(address: str) -> _Channel:
        channels.append(_Channel(address, works=address == "127.0.0.1:3"))
        return channels[-1]

    link = _link(broker, addresses=lambda: addresses, channel=channel)
    link.retained(Message("state/1", b"on", 1, True, None, "a-client"))
    try:
        await _until("no channel opened to node 2", lambda: channels)
        addresses[2] = "127.0.0.1:3"  # node 2 came back elsewhere
        await _until(
            "the message never reached node 2's new address",
            lambda: broker.stats["cluster_forwarded_out"] >= 1,
        )
    finally:
        await link.stop()
    assert [c.address for c in channels] == ["127.0.0.1:2", "127.0.0.1:3"]
    assert channels[0].closed


async def test_a_message_too_large_for_any_frame_is_dropped_not_retried_forever(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(cluster_link, "FRAME_LIMIT", 4096)
    broker = _broker()
    link = _link(broker, channel=lambda address: _Channel(address, works=True, limit=4096))
    link.retained(Message("big/1", b"x" * 10_000, 1, True, None, "a-client"))
    link.retained(Message("small/1", b"on", 1, True, None, "a-client"))
    link.retained(Message("small/2", b"y" * 3000, 1, True, None, "a-client"))
    link.retained(Message("small/3", b"z" * 3000, 1, True, None, "a-client"))  # next frame
    try:
        await _until(
            "the link is stuck behind the large message",
            lambda: broker.stats["cluster_forwarded_out"] >= 3,
        )
    finally:
        await link.stop()
    assert broker.stats["cluster_forward_dropped"] == 1


async def test_the_bytes_waiting_for_a_node_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cluster_link, "MAX_QUEUED_BYTES", 10_000)
    broker = _broker()
    link = _link(broker, channel=lambda address: _Channel(address, works=None))
    try:
        for i in range(20):
            link.retained(Message(f"big/{i}", b"x" * 1000, 1, True, None, "a-client"))
        peer = link._peer(2)
        assert peer.queued_bytes <= 10_000
        assert 5 <= peer.queued < 20
        assert broker.stats["cluster_forward_dropped"] == 20 - peer.queued
    finally:
        await link.stop()


async def test_a_shared_groups_turn_goes_with_its_last_route_elsewhere() -> None:
    table: dict[str, dict[str, int]] = {
        "2": {"$share/g/a": 1, "$share/g/b": 1},
        "3": {"$share/g/a": 1},
    }
    link = _link(
        _broker(),
        routes=lambda: table,
        addresses=lambda: {1: "127.0.0.1:1", 2: "127.0.0.1:2", 3: "127.0.0.1:3"},
        brokers=lambda: {1, 2, 3},
    )
    link._sync_routes(None)
    for tag in ("g/a", "g/b"):
        _, groups = link._plan(tag[2:])
        members = next(m for g, f, m in groups if f"{g}/{f}" == tag)
        link._next_member(tag, members)
    assert set(link._turn) == {"g/a", "g/b"}
    del table["2"]
    link._sync_routes({2})
    assert set(link._turn) == {"g/a"}  # node 3 is still a member of g/a
    del table["3"]
    link._sync_routes({3})
    assert link._turn == {}


async def test_a_dropped_message_is_counted_once_across_failed_attempts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A message too large for a frame, at the head of a queue whose node fails twice
    before it answers, is one dropped message, not one per attempt."""
    monkeypatch.setattr(cluster_link, "FRAME_LIMIT", 4096)
    broker = _broker()
    calls = 0

    def flaky(self: _Channel, method: str) -> Any:
        nonlocal calls
        calls += 1
        return lambda: _Call(calls > 2, 1 << 30)  # the first two attempts fail

    monkeypatch.setattr(_Channel, "stream_stream", flaky)
    link = _link(broker, channel=lambda address: _Channel(address, works=True))
    link.retained(Message("big/1", b"x" * 10_000, 1, True, None, "a-client"))
    link.retained(Message("small/1", b"on", 1, True, None, "a-client"))
    try:
        await _until(
            "the small message never got through",
            lambda: broker.stats["cluster_forwarded_out"] >= 1,
        )
    finally:
        await link.stop()
    assert calls == 3
    assert broker.stats["cluster_forward_dropped"] == 1
    assert link._peer(2).queued == 0


def _handover_frame(owed: list[Any], extra: list[Any]) -> tuple[bytes, list[int]]:
    """A frame of node 1 handing ``owed`` to ``mover``'s session on node 2 and ``extra``
    to ``gone``'s, and what ``hand_over`` returned for each. Node 2 does not answer, so
    the entries stay queued; the link reroutes its queue first (a shared group has a
    member on node 3), which must leave handovers alone."""
    table = {"3": {"$share/g/s/#": 1}}
    link = _link(
        _broker(),
        routes=lambda: table,
        addresses=lambda: {1: "127.0.0.1:1", 2: "127.0.0.1:2", 3: "127.0.0.1:3"},
        brokers=lambda: {1, 2, 3},
        channel=lambda address: _Channel(address, works=None),
    )
    link._sync_routes(None)
    done: list[str] = []
    taken = [
        link.hand_over("mover", 2, owed, lambda: done.append("mover")),
        link.hand_over("gone", 2, extra, lambda: done.append("gone")),
    ]
    peer = link._peer(2)
    link._reroute(peer)
    batch, count = link._frame(peer)
    assert count == peer.queued == len(owed) + len(extra)
    assert "mover" not in done, "done while its entries still wait for node 2"
    return encode_frame(1, batch), taken


def _new_node_holding(client_id: str) -> tuple[MqttBroker, Any]:
    """Node 2's broker, holding ``client_id``'s persistent session (offline)."""
    two = _broker()
    session = two.new_session(client_id, None)
    session.persisted = True
    two.sessions[client_id] = session
    return two, session


class _Conn:
    """What a session's connection is asked for when a handover arrives."""

    send_quota = 10
    paused = False

    def __init__(self) -> None:
        self.sent: list[tuple[str, int, bool]] = []

    def send_publish(self, delivery: Delivery, packet_id: int, dup: bool = False) -> None:
        self.sent.append((delivery.message.payload.decode(), packet_id, dup))

    def send_pubrel(self, packet_id: int) -> None:
        self.sent.append(("PUBREL", packet_id, False))


async def test_a_handover_reaches_the_session_on_its_new_node_and_nowhere_else() -> None:
    """Node 1 hands what it owed ``mover`` to node 2: each delivery's QoS, retain flag,
    subscription identifiers, shared group, sender and remaining expiry arrive; those in
    flight go in flight under their packet identifiers (a QoS 2 one released, still
    released), unless node 2 uses the identifier already, and the rest are queued, in
    order; a handover for a session node 2 does not hold is dropped and counted."""
    expiring = Message("s/2", b"q2", 2, False, {"message_expiry_interval": 60}, "pub")
    owed = [
        (
            Delivery(Message("s/1", b"f1", 2, True, {"content_type": "t"}, "pub"), 1, True, (4, 9)),
            4,
            False,
        ),
        (Delivery(Message("s/1", b"f2", 2, False, None, "pub"), 2, False, ()), 5, True),
        (Delivery(Message("s/1", b"f3", 2, False, None, "pub"), 2, False, ()), 6, False),
        (Delivery(expiring, 2, False, ()), 0, False),
        (
            Delivery(Message("s/3", b"q3", 1, False, None, "pub"), 1, False, (), ("g", "s/#")),
            0,
            False,
        ),
    ]
    frame, taken = _handover_frame(owed, owed[:1])
    assert taken == [5, 1]

    two, session = _new_node_holding("mover")
    held = Inflight(Delivery(Message("x", b"mine", 1, False), 1, False, ()))
    session.inflight[6] = held  # node 2 sent packet id 6 itself meanwhile
    await _link(two).receive(frame)
    inflight = {
        pid: (e.delivery.message.payload, e.released) for pid, e in session.inflight.items()
    }
    assert inflight == {4: (b"f1", False), 5: (b"f2", True), 6: (b"mine", False)}
    first = session.inflight[4].delivery
    assert (first.qos, first.retain, first.sub_ids, first.message.sender) == (
        1,
        True,
        (4, 9),
        "pub",
    )
    assert first.message.properties == {"content_type": "t"}
    queued = list(session.queue or ())
    assert [(d.message.payload, d.qos, d.shared) for d in queued] == [
        (b"f3", 2, None),
        (b"q2", 2, None),
        (b"q3", 1, ("g", "s/#")),
    ]
    assert 59 <= queued[1].message.expires_at - time.monotonic() <= 60
    assert two.stats["cluster_forward_dropped"] == 1  # "gone" is not a session of node 2


async def test_a_handover_to_a_connected_session_is_resent_at_once() -> None:
    owed = [
        (Delivery(Message("s/1", b"f1", 1, False, None, "pub"), 1, False, ()), 4, False),
        (Delivery(Message("s/1", b"f2", 2, False, None, "pub"), 2, False, ()), 5, True),
        (Delivery(Message("s/1", b"f3", 2, False, None, "pub"), 2, False, ()), 6, False),
    ]
    frame, _ = _handover_frame(owed, [])
    two, session = _new_node_holding("mover")
    conn = _Conn()
    conn.send_quota = 2  # room for one more in flight after f1
    conn.paused = True  # a client not reading gets its resends as after a reconnect
    session.connection = conn
    await _link(two).receive(frame)
    assert conn.sent == [("f1", 4, True), ("PUBREL", 5, False)]
    assert not session.inflight[6].sent and session._unsent == 1  # waits for the window


async def test_a_handover_is_done_once_its_entries_are_answered_or_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The old node keeps its stored copy until ``done``: called once the node holding
    the session answered the frames, or once the entries were dropped (an unknown
    address, the link's bounds); an empty handover is done at once."""
    owed = [
        (Delivery(Message("s/1", b"%d" % k, 1, False), 1, False, ()), 0, False) for k in range(3)
    ]
    broker = _broker()
    link = _link(broker, channel=lambda address: _Channel(address, works=True))
    done: list[str] = []
    try:
        assert link.hand_over("answered", 2, owed, lambda: done.append("answered")) == 3
        assert link.hand_over("empty", 2, [], lambda: done.append("empty")) == 0
        assert done == ["empty"]
        await _until("no answer heard", lambda: "answered" in done)
        assert broker.stats["cluster_forwarded_out"] == 3
    finally:
        await link.stop()

    lost = _link(_broker(), addresses=lambda: {1: "127.0.0.1:1"})  # node 2 unknown
    try:
        lost.hand_over("unknown", 2, owed, lambda: done.append("unknown"))
        await _until("dropped entries never done", lambda: "unknown" in done)
    finally:
        await lost.stop()

    monkeypatch.setattr(cluster_link, "MAX_QUEUED", 2)
    full = _link(_broker(), channel=lambda address: _Channel(address, works=None))
    try:
        assert full.hand_over("full", 2, owed, lambda: done.append("full")) == 2
        assert "full" not in done  # two still wait
        full._drop_all(full._peer(2), "a test")
        assert done[-1] == "full"
    finally:
        await full.stop()


async def test_an_in_flight_handover_behind_a_queue_is_queued_as_new() -> None:
    """While the session's queue holds something, an in-flight delivery handed over
    takes no packet identifier of its own: journaled after the queued ones, a restart
    would take a queued one that later got that identifier for acknowledged."""
    owed = [(Delivery(Message("s/1", b"f1", 1, False, None, "pub"), 1, False, ()), 4, False)]
    frame, _ = _handover_frame(owed, [])
    two, session = _new_node_holding("mover")
    session.deliver(Delivery(Message("x", b"waiting", 1, False), 1, False, ()))  # offline
    await _link(two).receive(frame)
    assert session.inflight == {}
    assert [d.message.payload for d in session.queue or ()] == [b"waiting", b"f1"]


async def test_a_handover_for_a_session_that_moved_on_follows_it() -> None:
    """Node 2 does not hold the session any more (its client went back to node 1, or on
    to node 3): the entries go to the node the group's record names."""
    owed = [(Delivery(Message("s/1", b"f1", 2, False, None, "pub"), 2, False, (5,)), 4, True)]
    frame, _ = _handover_frame(owed, [])
    two = _broker()
    two.store.session_node = lambda client_id: 3  # type: ignore[method-assign]
    link = _link(
        two,
        addresses=lambda: {1: "127.0.0.1:1", 2: "127.0.0.1:2", 3: "127.0.0.1:3"},
        channel=lambda address: _Channel(address, works=None),
    )
    try:
        await link.receive(frame)
        [(message, _, flags, _, handover)] = link._peer(3).queue
    finally:
        await link.stop()
    assert (message.payload, flags) == (b"f1", SESSION)
    assert handover == Handover("mover", (5,), 4, True)
    assert two.stats["cluster_forward_dropped"] == 0


async def test_a_node_loading_its_sessions_refuses_handovers_whole() -> None:
    owed = [(Delivery(Message("s/1", b"q1", 1, False, None, "pub"), 1, False, ()), 0, False)]
    frame, _ = _handover_frame(owed, [])
    two, session = _new_node_holding("mover")
    two.loading = []  # recover() is under way
    with pytest.raises(ForwardNotReady, match="loading its sessions"):
        await _link(two).receive(frame)
    assert not session.queue and two.stats["cluster_forwarded_in"] == 0


async def test_a_handover_to_a_session_taken_over_elsewhere_stays_with_it() -> None:
    """Node 2 still holds the session, though a connection to node 3 took it over: the
    entries go into it, and move on with it once node 2 sees the move."""
    owed = [(Delivery(Message("s/1", b"q1", 1, False, None, "pub"), 1, False, ()), 0, False)]
    frame, _ = _handover_frame(owed, [])
    two, session = _new_node_holding("mover")
    session.moved_to = 3
    await _link(two).receive(frame)
    assert [d.message.payload for d in session.queue or ()] == [b"q1"]
    assert two.stats["cluster_forward_dropped"] == 0
