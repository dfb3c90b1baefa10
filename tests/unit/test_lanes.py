"""Tests of the QoS 0 lane, run against both twins (robustmq._core.lanes and the
compiled robustmq._core._lanes): ``scan`` on spec-shaped examples and, by hypothesis,
against the MQTT decoder (what the lane takes must be exactly one ``PublishRun`` to the
decoder); ``forward`` on a broker of real objects whose sockets are recording transports,
against the full path on a twin broker fed the same reads: the same bytes to every
subscriber and the same counters, or False with nothing changed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import select
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from types import ModuleType, SimpleNamespace
from typing import Any, ClassVar

import pytest
import uvloop
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import robustmq._core.lanes as py_lane
from robustmq._core import mqtt, mqtt_codec
from robustmq._core.mqtt_spec import CONNECT, MAX_PACKET_SIZE, PUBLISH_RUN
from robustmq.broker.mqtt import connection
from robustmq.broker.mqtt.connection import MqttConnection
from robustmq.broker.mqtt.listeners import loop_epoll_fd
from robustmq.broker.mqtt.rewrite import TopicRewriter
from robustmq.broker.mqtt.server import MqttBroker
from robustmq.broker.mqtt.sys_topics import sys_values
from robustmq.config import AuthConfig, MqttConfig
from robustmq.errors import MqttError
from robustmq.observability.metrics import _mqtt_metrics

try:
    import robustmq._core._lanes as c_lane
except ImportError:
    c_lane = None

NOT_BUILT = (
    "compiled robustmq._core._lanes is not built "
    "(cythonize -3 -i robustmq/_core/_lanes.pyx, or pip install -e .)"
)
PROPERTY = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@pytest.fixture(params=["py", "c"], ids=["py", "c"])
def lane(request: pytest.FixtureRequest) -> ModuleType:
    if request.param == "c":
        if c_lane is None:
            pytest.skip(NOT_BUILT)
        if not issubclass(MqttConnection, c_lane.ConnectionCore):
            pytest.skip("MqttConnection is on the pure core (ROBUSTMQ_NO_EXTENSIONS=1)")
        return c_lane
    return py_lane


def test_compiled_twin_is_compiled() -> None:
    if c_lane is None:
        pytest.skip(NOT_BUILT)
    assert not c_lane.__file__.endswith(".py")
    expected = {
        "ACCEPT_POLL_NS",
        "FAIR_READ",
        "AcceptPoll",
        "ConnectionCore",
        "KeepAliveWheel",
        "LaneContext",
        "Plan",
        "PlanCache",
        "SessionCore",
        "connect",
        "forward",
        "plain_connect",
        "scan",
    }
    assert set(py_lane.__all__) == set(c_lane.__all__) == expected
    assert c_lane.FAIR_READ == py_lane.FAIR_READ == connection._FAIR_READ
    assert c_lane.ACCEPT_POLL_NS == py_lane.ACCEPT_POLL_NS


def _pub(topic: str, payload: bytes = b"x", version: int = 4, **kw: Any) -> bytes:
    return mqtt_codec.encode_publish(topic, payload, protocol_version=version, **kw)


# ---------------------------------------------------------------------- scan


def test_scan_takes_one_packet_and_runs_on_one_topic(lane: ModuleType) -> None:
    one = _pub("a/b", b"hello")
    assert lane.scan(one, False) == (4, 7, 1, len(one))
    assert one[4:7] == b"a/b"
    big = _pub("a/b", b"y" * 200)  # a two-byte Remaining Length
    two = one + big
    assert lane.scan(two, False) == (4, 7, 2, len(big))
    v5 = _pub("t", b"p", version=5) * 3
    assert lane.scan(v5, True) == (4, 5, 3, len(v5) // 3)


@pytest.mark.parametrize(
    "data, v5, why",
    [
        (_pub("a", qos=1, packet_id=1), False, "QoS 1"),
        (_pub("a", retain=True), False, "RETAIN"),
        (b"\x38" + _pub("a")[1:], False, "DUP on QoS 0"),
        (_pub("a") + _pub("b"), False, "two topics"),
        (_pub("a") + _pub("a", qos=1, packet_id=1), False, "QoS 0 then QoS 1"),
        (_pub("a")[:-1], False, "a packet still arriving"),
        (_pub("a") + b"\x30", False, "a second header still arriving"),
        (_pub("a") + b"\xc0\x00", False, "a PINGREQ behind it"),
        (b"\x30\x84\x00" + _pub("a")[2:], False, "Remaining Length not in its shortest form"),
        (b"\x30\x02\x00\x00", False, "an empty topic"),
        (b"\x30\x04\x00\x05ab", False, "a topic longer than the packet"),
        (_pub("a", properties={"content_type": "x"}, version=5), True, "5.0 properties"),
        (_pub("a"), True, "3.1.1 form read as 5.0 (no property block)"),
        (_pub("a", b"x" * (16 * 1024)), False, "a read of 16 KiB or more"),
        (b"", False, "nothing"),
        (b"\x10\x00", False, "CONNECT"),
    ],
)
def test_scan_leaves_everything_else_to_the_full_path(
    lane: ModuleType, data: bytes, v5: bool, why: str
) -> None:
    assert lane.scan(data, v5) is None, why


def _packets() -> st.SearchStrategy[bytes]:
    """Reads built of PUBLISH packets (mostly lane-shaped, some not) and stray bytes,
    cut anywhere."""
    topic = st.sampled_from(["t", "a/b", "t/é", "x" * 130])
    packet = st.one_of(
        st.builds(lambda t, p: _pub(t, p), topic, st.binary(max_size=300)),
        st.builds(lambda t, p: _pub(t, p, version=5), topic, st.binary(max_size=40)),
        st.builds(lambda t: _pub(t, qos=1, packet_id=7), topic),
        st.builds(lambda t: _pub(t, retain=True), topic),
        st.binary(min_size=1, max_size=6),
    )
    return st.builds(
        lambda parts, cut: b"".join(parts)[: cut or None],
        st.lists(packet, min_size=1, max_size=4),
        st.integers(min_value=0, max_value=200),
    )


@PROPERTY
@given(data=st.one_of(_packets(), st.binary(max_size=64)), v5=st.booleans())
def test_scan_takes_exactly_what_the_decoder_makes_one_run_of(
    lane: ModuleType, data: bytes, v5: bool
) -> None:
    found = lane.scan(data, v5)
    assert found == py_lane.scan(data, v5)  # the twins agree
    if found is None:
        return
    start, end, count, largest = found
    decoder = mqtt_codec.Decoder(5 if v5 else 4, 1 << 20, group_publishes=True)
    try:
        packets, consumed = decoder.decode(data)
    except Exception:  # the decoder may reject the topic's text: the lane checks it too
        packets, consumed = [], -1
    if consumed == -1:
        return
    assert consumed == len(data)
    assert len(packets) == 1
    (run,) = packets
    assert run.packet_type == PUBLISH_RUN and run.qos == 0
    assert (run.count, run.largest, run.data) == (count, largest, data)
    assert run.topic.encode() == data[start:end]


# ---------------------------------------------------------------------- forward


class _Transport:
    """What a connection writes, recorded; closes as uvloop does (connection_lost next)."""

    def __init__(self, conn: MqttConnection) -> None:
        self.conn: MqttConnection | None = conn
        self.out: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.out.append(bytes(data))

    def writelines(self, parts: list[bytes]) -> None:
        self.out.append(b"".join(parts))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            asyncio.get_running_loop().call_soon(self._lost)

    def _lost(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.connection_lost(None)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 1883) if name in ("peername", "sockname") else default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class _Switched(MqttConnection):
    """A connection whose reads try the lanes the test chose (``lane``: a twin's
    ``forward``, ``connect_lane`` a twin's ``connect`` before the CONNACK; None for the
    full path) instead of its own core's."""

    __slots__ = ()
    lane: ClassVar[Callable[[Any, bytes], bool] | None] = None
    connect_lane: ClassVar[Callable[[Any, bytes], bool] | None] = None

    def data_received(self, data: bytes) -> None:
        chosen = _Switched.lane if self.connected else _Switched.connect_lane
        if chosen is None or not chosen(self, data):
            self._read(data)


class _Side:
    """A broker with clients on recording transports."""

    def __init__(self, auth: AuthConfig | None = None) -> None:
        self.broker = MqttBroker(MqttConfig(), auth=auth)
        self.clients: dict[str, MqttConnection] = {}

    def connect(
        self, client_id: str, version: int, clean: bool = True, cls: type = _Switched
    ) -> MqttConnection:
        conn = cls(self.broker)
        conn.connection_made(_Transport(conn))  # type: ignore[arg-type]
        props = {"session_expiry_interval": 60} if version == 5 and not clean else None
        conn.data_received(
            mqtt_codec.encode(
                mqtt_codec.Connect(
                    client_id=client_id,
                    protocol_version=version,
                    clean_start=clean,
                    keep_alive=60,
                    properties=props,
                ),
                version,
            )
        )
        self.clients[client_id] = conn
        return conn

    def subscribe(self, client_id: str, topic_filter: str, **options: Any) -> None:
        conn = self.clients[client_id]
        packet = mqtt_codec.Subscribe(1, [mqtt_codec.Subscription(topic_filter, **options)])
        conn.data_received(mqtt_codec.encode(packet, conn.version))

    def written(self) -> dict[str, bytes]:
        out = {}
        for client_id, conn in self.clients.items():
            transport = conn.transport
            out[client_id] = b"".join(transport.out) if transport is not None else b""  # type: ignore[attr-defined]
        return out

    def counts(self) -> tuple[Any, ...]:
        b = self.broker
        b.lane_context.fold()  # what the lane counted, into stats and counters
        c = b.counters
        return (
            dict(b.stats),
            list(c.run_publishes),
            list(c.run_publishes_unrouted),
            list(c.sent_by_qos),
            [list(d) for d in c.dropped],
            list(b.handler_latency.countdown),
            [sum(buckets) for buckets in b.handler_latency.buckets],  # samples per type
            sorted((t, p.messages) for t, p in b.router.plans() if p is not None),
        )


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    yield loop
    loop.close()
    asyncio.set_event_loop(None)


def _both(
    loop: asyncio.AbstractEventLoop,
    lane: ModuleType,
    setup: Any,
    reads: list[tuple[str, bytes]],
    monkeypatch: pytest.MonkeyPatch,
    auth: AuthConfig | None = None,
) -> tuple[_Side, _Side, list[bool]]:
    """The same clients and reads on two brokers: one whose reads go the full way, one
    whose reads try ``lane`` first. Returns both sides and what the lane said per read."""
    taken: list[bool] = []

    def forward(conn: MqttConnection, data: bytes) -> bool:
        taken.append(lane.forward(conn, data))
        return taken[-1]

    async def run() -> tuple[_Side, _Side]:
        sides = []
        for use_lane in (False, True):
            monkeypatch.setattr(_Switched, "lane", None)
            side = _Side(auth)
            setup(side)
            for conn in side.clients.values():
                conn.transport.out.clear()  # type: ignore[union-attr]
            if use_lane:
                monkeypatch.setattr(_Switched, "lane", forward)
            for client_id, data in reads:
                side.clients[client_id].data_received(data)
                await asyncio.sleep(0)
            await asyncio.sleep(0)
            sides.append(side)
        return sides[0], sides[1]

    full, laned = loop.run_until_complete(run())
    return full, laned, taken


def _same(full: _Side, laned: _Side) -> None:
    assert laned.written() == full.written()
    assert laned.counts() == full.counts()


def _v4_pair(side: _Side) -> None:
    side.connect("pub", 4)
    side.connect("sub", 4)
    side.connect("other", 4)
    side.subscribe("sub", "t/#")
    side.subscribe("other", "t/1")


def test_forward_matches_the_full_path_between_3_1_1_clients(lane, loop, monkeypatch) -> None:
    reads = [("pub", _pub("t/1", b"m1")), ("pub", _pub("t/2", b"m2") * 2), ("pub", _pub("u"))]
    full, laned, taken = _both(loop, lane, _v4_pair, reads, monkeypatch)
    _same(full, laned)
    assert taken == [True, True, True]  # "u": a plan with no one in it
    assert laned.written()["sub"] == _pub("t/1", b"m1") + _pub("t/2", b"m2") * 2
    assert laned.written()["other"] == _pub("t/1", b"m1")


def test_forward_leaves_mixed_protocol_versions_to_the_full_path(lane, loop, monkeypatch) -> None:
    def setup(side: _Side) -> None:
        side.connect("pub", 4)
        side.connect("sub4", 4)
        side.connect("sub5", 5)
        side.subscribe("sub4", "t")
        side.subscribe("sub5", "t")

    full, laned, taken = _both(loop, lane, setup, [("pub", _pub("t", b"x"))], monkeypatch)
    _same(full, laned)
    assert taken == [False]
    assert laned.written()["sub5"] == _pub("t", b"x", version=5)


def test_forward_between_5_0_clients_honours_no_local(lane, loop, monkeypatch) -> None:
    def setup(side: _Side) -> None:
        side.connect("pub", 5)
        side.connect("sub", 5)
        side.subscribe("pub", "t", no_local=True)
        side.subscribe("sub", "t")

    data = _pub("t", b"x", version=5)
    full, laned, taken = _both(loop, lane, setup, [("pub", data)], monkeypatch)
    _same(full, laned)
    assert taken == [True]
    assert laned.written() == {"pub": b"", "sub": data}


def test_forward_leaves_an_offline_subscriber_to_the_full_path(lane, loop, monkeypatch) -> None:
    def setup(side: _Side) -> None:
        side.connect("pub", 5)
        gone = side.connect("gone", 5, clean=False)
        side.subscribe("gone", "t")
        gone.data_received(b"\xe0\x00")  # DISCONNECT: the session stays, offline

    full, laned, taken = _both(loop, lane, setup, [("pub", _pub("t", version=5) * 3)], monkeypatch)
    _same(full, laned)
    assert taken == [False]
    assert sum(laned.broker.counters.dropped[3]) == 3  # OFFLINE, QoS 0 is not queued


@pytest.mark.parametrize(
    "data, why",
    [
        (_pub("t/+"), "a wildcard in a topic name"),
        (_pub("t/\x00"), "U+0000 in a topic name"),
        (b"\x30\x04\x00\x02\xff\xfe", "a topic that is not UTF-8"),
        (_pub("$SYS/x"), "a $ topic"),
        (_pub("t/1", retain=True), "RETAIN"),
    ],
)
def test_forward_leaves_bad_or_special_publishes_to_the_full_path(
    lane, loop, monkeypatch, data: bytes, why: str
) -> None:
    full, laned, taken = _both(
        loop, lane, _v4_pair, [("pub", data), ("pub", _pub("t/1"))], monkeypatch
    )
    _same(full, laned)
    assert taken[0] is False, why


def test_forward_keeps_order_behind_output_waiting_for_the_loop(lane, loop, monkeypatch) -> None:
    """A retained message queued for a subscriber by a timer write waits for the next
    loop iteration: what the lane forwards goes behind it, not ahead."""

    async def run() -> bytes:
        monkeypatch.setattr(_Switched, "lane", lane.forward)
        side = _Side()
        _v4_pair(side)
        sub = side.clients["sub"]
        sub.transport.out.clear()  # type: ignore[union-attr]
        sub.write(b"first")  # not in a read: flushed on the next loop iteration
        side.clients["pub"].data_received(_pub("t/1", b"second"))
        await asyncio.sleep(0)
        return b"".join(sub.transport.out)  # type: ignore[union-attr]

    assert loop.run_until_complete(run()) == b"first" + _pub("t/1", b"second")


def test_forward_steps_aside_for_paused_subscribers(lane, loop, monkeypatch) -> None:
    async def run() -> list[bool]:
        side = _Side()
        _v4_pair(side)
        pub, sub = side.clients["pub"], side.clients["sub"]
        data = _pub("t/1")
        said = [lane.forward(pub, data)]
        sub.paused = True
        said.append(lane.forward(pub, data))
        return said

    assert loop.run_until_complete(run()) == [True, False]


def test_forward_times_the_sampled_read_itself(lane, loop, monkeypatch) -> None:
    # The second read is the one in 64 the handler timing samples: the lane takes it and
    # records a sample of PUBLISH_RUN, as the full path would, and restarts the countdown.
    def setup(side: _Side) -> None:
        _v4_pair(side)
        side.broker.handler_latency.countdown[PUBLISH_RUN] = 2

    reads = [("pub", _pub("t/1", b"m1")), ("pub", _pub("t/1", b"m2")), ("pub", _pub("t/2"))]
    full, laned, taken = _both(loop, lane, setup, reads, monkeypatch)
    _same(full, laned)
    assert taken == [True, True, True]
    latency = laned.broker.handler_latency
    assert sum(latency.buckets[PUBLISH_RUN]) == 1
    assert latency.countdown[PUBLISH_RUN] == latency.every - 1
    assert latency.sum_ns[PUBLISH_RUN] > 0
    assert laned.written()["sub"] == _pub("t/1", b"m1") + _pub("t/1", b"m2") + _pub("t/2")


def test_forward_asks_the_acl_and_leaves_refusals_to_the_full_path(
    lane, loop, monkeypatch, tmp_path
) -> None:
    acl = tmp_path / "acl"
    acl.write_text("allow all all t/1\ndeny all publish t/2\nallow all all #\n")
    reads = [("pub", _pub("t/1", b"ok")), ("pub", _pub("t/2", b"no")), ("pub", _pub("t/1"))]
    auth = AuthConfig(acl_file=str(acl))
    full, laned, taken = _both(loop, lane, _v4_pair, reads, monkeypatch, auth)
    _same(full, laned)
    assert laned.clients["pub"].authorizer is not None
    assert taken == [True, False, True]
    assert laned.broker.stats["acl_denied_publish"] == 1
    assert laned.written()["sub"] == _pub("t/1", b"ok") + _pub("t/1")


class _Bridge:
    """An internal subscriber (what the MQTT to Kafka bridge is to the router)."""

    def __init__(self) -> None:
        self.messages: list[Any] = []

    def deliver_messages(self, messages: list[Any]) -> None:
        self.messages += messages


def test_forward_leaves_topics_an_internal_subscriber_wants_to_the_full_path(
    lane, loop, monkeypatch
) -> None:
    bridges: list[_Bridge] = []

    def setup(side: _Side) -> None:
        _v4_pair(side)
        bridges.append(_Bridge())
        side.broker.router.subscribe_internal(bridges[-1], "t/2")

    reads = [("pub", _pub("t/1", b"a")), ("pub", _pub("t/2", b"b"))]
    full, laned, taken = _both(loop, lane, setup, reads, monkeypatch)
    _same(full, laned)
    assert taken == [True, False]
    assert [m.payload for m in bridges[1].messages] == [b"b"]


@pytest.fixture(params=["py", "c"], ids=["py", "c"])
def core(request: pytest.FixtureRequest) -> type:
    """A connection core of each twin whose full path records what it is handed."""
    module = py_lane if request.param == "py" else c_lane
    if module is None:
        pytest.skip(NOT_BUILT)

    class Recording(module.ConnectionCore):  # type: ignore[name-defined,misc]
        __slots__ = ("full",)

        def _read(self, data: bytes) -> None:
            self.full.append(data)

    return Recording


def test_core_fields_start_the_same_in_both_twins(core: type) -> None:
    conn = core(broker := SimpleNamespace(lane_context=None))
    assert conn.broker is broker and conn.context is None
    assert (conn.decoder, conn.transport, conn.publish_quota, conn.authorizer) == (None,) * 4
    assert (conn.client_id, conn.version, conn.connected, conn.closing, conn.paused) == (
        "",
        4,
        False,
        False,
        False,
    )
    assert (conn.alias_maximum, conn.read_pauses, conn._buffer, conn._out) == (0, 0, b"", None)
    assert conn.client_max_packet == conn.max_packet == MAX_PACKET_SIZE
    assert conn._flush_scheduled is False
    assert conn.last_seen > 0
    conn.paused, conn.version, conn.alias_maximum = True, 5, 10
    assert (conn.paused, conn.version, conn.alias_maximum) == (True, 5, 10)


def test_keep_alive_wheels_file_the_same_on_both_cores() -> None:
    if c_lane is None:
        pytest.skip(NOT_BUILT)
    broker = MqttBroker(MqttConfig())
    filed = []
    for module in (py_lane, c_lane):
        wheel = module.KeepAliveWheel(100)  # swept up to second 100
        conns = [type("C", (module.ConnectionCore,), {"__slots__": ()})(broker) for _ in "abc"]
        wheel.watch(conns[0], 150.2)  # looked at in the sweep of second 151
        wheel.watch(conns[1], 50.0)  # already past: the next sweep
        wheel.watch(conns[2], 150.9)
        wheel.watch(conns[0], 170.0)  # watched again: moves
        wheel.unwatch(conns[2])
        wheel.unwatch(conns[2])  # not watched: nothing
        due = {
            second: sorted(conns.index(c) for c in bucket) for second, bucket in wheel.due.items()
        }
        filed.append((due, [c.watched for c in conns], wheel.swept))
    assert filed[0] == filed[1] == ({151: [], 101: [1], 171: [0]}, [171, 101, 0], 100)


def test_new_sessions_start_the_same_on_both_cores() -> None:
    """Every field of a new session is the same on the compiled core as on the pure
    one, its three dicts its own, and each field takes what the broker stores in it."""
    if c_lane is None:
        pytest.skip(NOT_BUILT)
    py_session, c_session = made = [
        type("S", (module.SessionCore,), {"__slots__": ()})("c1", 500, True)
        for module in (py_lane, c_lane)
    ]
    for name in py_lane.SessionCore.__slots__:
        assert getattr(py_session, name) == getattr(c_session, name), name
    assert (c_session.client_id, c_session.max_queued, c_session.drop_oldest) == ("c1", 500, True)
    for session in made:
        assert session.subscriptions is not session.inflight is not session.qos2_inbound
        session.expiry_interval = 0xFFFFFFFF  # never expires
        session.moved_to = 3
        session.moved_to = None
        session._next_packet_id = 65535
        session.persisted = True
        assert (session.expiry_interval, session.moved_to, session.persisted) == (
            0xFFFFFFFF, None, True,
        )  # fmt: skip


def test_new_connections_start_the_same_on_both_cores() -> None:
    """Every field of a new connection of a broker, and what ``connection_made`` files
    it under, are the same on the compiled core as on the pure one."""
    if c_lane is None:
        pytest.skip(NOT_BUILT)
    broker = MqttBroker(MqttConfig(max_packet_size=5000))
    py_conn, c_conn = made = [
        type("Conn", (module.ConnectionCore,), {"__slots__": ()})(broker)
        for module in (py_lane, c_lane)
    ]
    for name in py_lane.ConnectionCore.__slots__:
        py_value, c_value = getattr(py_conn, name), getattr(c_conn, name)
        if name in ("last_seen", "opened_at"):
            assert py_value > 0 and c_value > 0, name
        elif name == "decoder":
            for decoder in (py_value, c_value):
                assert type(decoder) is mqtt.Decoder  # the selected codec twin's
                assert (decoder.protocol_version, decoder.max_packet_size) == (0, 5000)
                assert decoder.group_publishes
        else:
            assert py_value == c_value, name
    assert py_conn.max_packet == 5000
    transport = object()
    for conn in made:
        conn.connection_made(transport)
        assert conn.transport is transport and conn.opened_at == conn.last_seen > 0
    assert broker.connections == set(made) and broker.connecting == made
    assert broker.stats["connections_total"] == 2


def test_core_hands_what_the_lane_does_not_take_to_the_full_path(core: type) -> None:
    conn = core(SimpleNamespace(lane_context=None))
    conn.full = []
    conn.data_received(_pub("t/1"))  # not connected: never the lane's
    conn.data_received(bytearray(b"\x30\x00"))
    assert conn.full == [_pub("t/1"), bytearray(b"\x30\x00")]


@pytest.fixture
def full_reads(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every read ``MqttConnection`` hands to its full path (``_read``), recorded."""
    reads: list[bytes] = []
    read = MqttConnection._read

    def recording(self: MqttConnection, data: bytes) -> None:
        reads.append(data)
        read(self, data)

    monkeypatch.setattr(MqttConnection, "_read", recording)
    return reads


def test_the_connection_entry_takes_the_lane_for_plain_qos0_only(loop, full_reads) -> None:
    """``MqttConnection.data_received`` (its core's) forwards a plain QoS 0 read itself
    and hands a QoS 1 one to the full path (``_read``)."""

    async def run() -> _Side:
        side = _Side()
        side.connect("pub", 4, cls=MqttConnection)
        side.connect("sub", 4)
        side.subscribe("sub", "t/#", qos=1)
        side.clients["sub"].transport.out.clear()  # type: ignore[union-attr]
        full_reads.clear()
        side.clients["pub"].data_received(_pub("t/1", b"lane"))
        qos1 = mqtt_codec.encode(mqtt_codec.Publish("t/1", b"full", qos=1, packet_id=7), 4)
        side.clients["pub"].data_received(qos1)
        side.clients["pub"].data_received(bytearray(_pub("t/1", b"frame")))  # WebSocket's
        await asyncio.sleep(0)
        return side

    side = loop.run_until_complete(run())
    assert full_reads == [
        mqtt_codec.encode(mqtt_codec.Publish("t/1", b"full", qos=1, packet_id=7), 4),
        bytearray(_pub("t/1", b"frame")),
    ]
    written = side.written()["sub"]
    assert written.startswith(_pub("t/1", b"lane"))
    assert b"frame" in written
    assert b"full" in written


def test_forward_reads_cached_plans_and_asks_the_router_after_a_change(
    lane, loop, monkeypatch
) -> None:
    """The lane answers a topic from the router's plan cache without calling the router;
    after a subscription change (a new trie generation) or a new max_topic_levels it asks
    the router again, and forwards by the new plan."""
    asked: list[str] = []

    async def run() -> _Side:
        side = _Side()
        _v4_pair(side)
        router = side.broker.router
        forwarding = router.forwarding

        def counting(topic: str, max_levels: int) -> Any:
            asked.append(topic)
            return forwarding(topic, max_levels)

        monkeypatch.setattr(router, "forwarding", counting)
        monkeypatch.setattr(_Switched, "lane", lane.forward)
        for client in side.clients.values():
            client.transport.out.clear()  # type: ignore[union-attr]
        pub = side.clients["pub"]
        pub.data_received(_pub("t/1", b"1"))  # first time: planned by the router
        pub.data_received(_pub("t/1", b"2"))  # cached
        side.connect("late", 4)
        side.subscribe("late", "t/1")  # a new generation
        side.clients["late"].transport.out.clear()  # type: ignore[union-attr]
        pub.data_received(_pub("t/1", b"3"))
        pub.data_received(_pub("t/1", b"4"))
        config = side.broker.config  # a hot config change replaces it
        side.broker.config = dataclasses.replace(
            config, max_topic_levels=config.max_topic_levels + 1
        )
        pub.data_received(_pub("t/1", b"5"))
        await asyncio.sleep(0)
        return side

    side = loop.run_until_complete(run())
    assert asked == ["t/1", "t/1", "t/1"]
    written = side.written()
    assert written["other"] == b"".join(_pub("t/1", bytes([c])) for c in b"12345")
    assert written["late"] == b"".join(_pub("t/1", bytes([c])) for c in b"345")


def test_forward_leaves_publishes_to_the_full_path_while_rewrite_rules_exist(
    lane, loop, monkeypatch
) -> None:
    def setup(side: _Side) -> None:
        side.connect("pub", 4)
        side.connect("sub", 4)
        side.subscribe("sub", "#")
        rule = {"action": "publish", "source_topic": "t/#", "re": "^t/(.+)$", "dest_topic": "x/$1"}
        side.broker.rewriter = TopicRewriter([rule])  # as the rules API replaces it

    full, laned, taken = _both(loop, lane, setup, [("pub", _pub("t/1", b"r"))], monkeypatch)
    _same(full, laned)
    assert taken == [False]
    assert laned.written()["sub"] == _pub("x/1", b"r")


def test_what_the_lane_counts_reaches_sys_topics_and_metrics(lane, loop, monkeypatch) -> None:
    # The lane counts in its context's integers; $SYS and /metrics must show them with
    # what the full path counted, without anyone folding them in first.
    reads = [("pub", _pub("t/1", b"m1")), ("pub", _pub("t/2", b"m2") * 2)]
    full, laned, taken = _both(loop, lane, _v4_pair, reads, monkeypatch)
    assert taken == [True, True]
    values, expected = sys_values(laned.broker), sys_values(full.broker)
    for key in ("messages/received", "messages/sent", "bytes/received", "bytes/sent"):
        assert values[key] == expected[key], key
    assert (values["messages/received"], values["messages/sent"]) == ("3", "4")
    assert lane.forward(laned.clients["pub"], _pub("t/1", b"m3"))  # more, after the fold
    samples = {
        m.name: [(s.labels, s.value) for s in m.samples] for m in _mqtt_metrics(laned.broker)
    }
    assert samples["robustmq_mqtt_messages_received"] == [({}, 4.0)]
    assert ({"qos": "0"}, 6.0) in samples["robustmq_mqtt_messages_sent_by_qos"]


def test_forward_holds_each_connection_to_its_own_packet_limit(lane, loop, monkeypatch) -> None:
    # max_packet_size applies to connections made after a change: the publisher keeps the
    # limit of 100 its decoder was made with, and the lane must not forward past it.
    def setup(side: _Side) -> None:
        side.broker.config = dataclasses.replace(side.broker.config, max_packet_size=100)
        side.connect("pub", 4)
        side.broker.config = dataclasses.replace(side.broker.config, max_packet_size=1000)
        side.connect("sub", 4)
        side.subscribe("sub", "t/#")

    reads = [("pub", _pub("t/1", b"x" * 50)), ("pub", _pub("t/1", b"y" * 150))]
    full, laned, taken = _both(loop, lane, setup, reads, monkeypatch)
    _same(full, laned)
    assert taken == [True, False]
    assert laned.written()["sub"] == _pub("t/1", b"x" * 50)
    assert laned.clients["pub"].closing  # the full path's verdict: packet too large


def test_forward_sees_rewrite_rules_added_after_it_forwarded(lane, loop, monkeypatch) -> None:
    rule = {"action": "publish", "source_topic": "t/#", "re": "^t/(.+)$", "dest_topic": "x/$1"}

    def setup(side: _Side) -> None:
        side.connect("pub", 4)
        side.connect("sub", 4)
        side.subscribe("sub", "#")

    def read(side: _Side) -> None:
        side.clients["pub"].data_received(_pub("t/1", b"a"))
        side.broker.rewriter = TopicRewriter([rule])  # as the rules API replaces it
        side.clients["pub"].data_received(_pub("t/1", b"b"))

    taken: list[bool] = []

    def forward(conn: MqttConnection, data: bytes) -> bool:
        taken.append(lane.forward(conn, data))
        return taken[-1]

    full, laned, _ = _both(loop, lane, setup, [], monkeypatch)
    monkeypatch.setattr(_Switched, "lane", None)
    read(full)
    monkeypatch.setattr(_Switched, "lane", forward)
    read(laned)
    _same(full, laned)
    assert taken == [True, False]
    assert laned.written()["sub"] == _pub("t/1", b"a") + _pub("x/1", b"b")


# ---------------------------------------------------------------------- connect


def _connect(client_id: str = "c1", version: int = 4, clean: bool = True, **kw: Any) -> bytes:
    packet = mqtt_codec.Connect(client_id, protocol_version=version, clean_start=clean, **kw)
    return mqtt_codec.encode(packet, version)


def test_plain_connect_reads_the_version_client_id_and_keep_alive(lane: ModuleType) -> None:
    assert lane.plain_connect(_connect("c1", keep_alive=60)) == (4, "c1", 60)
    assert lane.plain_connect(_connect("sensor 7/~!", keep_alive=0)) == (4, "sensor 7/~!", 0)
    longest = "x" * 115  # a one-byte Remaining Length: 127
    assert lane.plain_connect(_connect(longest, keep_alive=65535)) == (4, longest, 65535)
    assert _connect(longest)[1] == 127
    assert lane.plain_connect(_connect("c1", version=5, keep_alive=30)) == (5, "c1", 30)
    longest = "x" * 114  # 5.0: one byte more for the property length
    assert lane.plain_connect(_connect(longest, version=5)) == (5, longest, 60)
    assert _connect(longest, version=5)[1] == 127


_NOT_PLAIN = [
    (_connect("c1", version=5, properties={"session_expiry_interval": 60}), "5.0 properties"),
    (_connect("c1", version=5, properties={"receive_maximum": 10}), "5.0 Receive Maximum"),
    (_connect("x" * 115, version=5), "5.0: a two-byte Remaining Length"),
    (_connect("c1", version=5, clean=False), "5.0: a persistent session"),
    (_connect("c1", version=5, username="u"), "5.0: a username"),
    (_connect("c1", version=3), "3.1 (MQIsdp)"),
    (_connect("c1", clean=False), "a persistent session"),
    (_connect("c1", will=mqtt_codec.Will("w/t", b"bye")), "a will"),
    (_connect("c1", username="u"), "a username"),
    (_connect("c1", username="u", password=b"p"), "a password"),
    (_connect(""), "no client id"),
    (_connect("capteur-é"), "a client id beyond ASCII"),
    (_connect("c\t1"), "a control character"),
    (_connect("x" * 116), "a two-byte Remaining Length"),
    (_connect("c1") + b"\xc0\x00", "a PINGREQ behind it"),
    (_connect("c1")[:-1], "a CONNECT still arriving"),
    (b"\x12" + _connect("c1")[1:], "reserved fixed-header flags"),
    (_connect("c1")[:9] + b"\x03" + _connect("c1")[10:], "reserved connect flag"),
    (b"\x10\x00", "empty"),
    (_pub("t/1"), "a PUBLISH"),
]


@pytest.mark.parametrize("data, why", _NOT_PLAIN)
def test_plain_connect_leaves_everything_else_to_the_full_path(
    lane: ModuleType, data: bytes, why: str
) -> None:
    assert lane.plain_connect(data) is None, why


def _connect_reads() -> st.SearchStrategy[bytes]:
    """CONNECTs of every protocol version and flag (plain ones among them), then a
    byte changed and the read cut anywhere."""
    client_id = st.one_of(
        st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=120),
        st.text(st.characters(min_codepoint=1, max_codepoint=0x2FF), max_size=30),
    )

    def build(
        cid: str, version: int, clean: bool, keep_alive: int, user: bool, expiry: bool
    ) -> bytes:
        props = {"session_expiry_interval": 10} if expiry and version == 5 else None
        try:
            return _connect(
                cid,
                version,
                clean,
                keep_alive=keep_alive,
                username="u" if user else None,
                properties=props,
            )
        except (MqttError, ValueError):
            return _connect("c")  # not encodable (3.1 ids are at most 23 characters)

    packet = st.builds(
        build,
        client_id,
        st.sampled_from([3, 4, 4, 4, 5, 5]),
        st.booleans(),
        st.integers(0, 65535),
        st.booleans(),
        st.booleans(),
    )

    def damage(data: bytes, pos: int, byte: int | None, cut: int) -> bytes:
        if byte is not None and data:
            data = data[: pos % len(data)] + bytes([byte]) + data[pos % len(data) + 1 :]
        return data[: cut or None]

    return st.builds(
        damage,
        packet,
        st.integers(0, 200),
        st.one_of(st.none(), st.integers(0, 255)),
        st.one_of(st.just(0), st.integers(0, 140)),
    )


@PROPERTY
@given(data=st.one_of(_connect_reads(), st.binary(max_size=40)))
def test_plain_connect_takes_exactly_what_the_decoder_reads_as_a_plain_connect(
    lane: ModuleType, data: bytes
) -> None:
    found = lane.plain_connect(data)
    assert found == py_lane.plain_connect(data)  # the twins agree
    try:
        packets, consumed = mqtt_codec.Decoder(0, MAX_PACKET_SIZE).decode(data)
    except MqttError:
        packets, consumed = [], -1
    plain = (
        consumed == len(data)
        and len(packets) == 1
        and isinstance(packets[0], mqtt_codec.Connect)
        and packets[0].protocol_version in (4, 5)
        and packets[0].clean_start
        and not packets[0].properties
        and packets[0].will is None
        and packets[0].username is None
        and packets[0].password is None
        and 1 <= len(packets[0].client_id) <= 115
        and all(" " <= c <= "~" for c in packets[0].client_id)
    )
    if found is not None:
        assert plain, "the lane took what the decoder does not read as a plain CONNECT"
        p = packets[0]
        assert found == (p.protocol_version, p.client_id, p.keep_alive)
    elif plain:
        assert data[1] >= 0x80, "a plain CONNECT the lane did not take"  # a longer length


def _assigned(client_id: str) -> str:
    """A client id, with one the broker assigned (random) as the same on two brokers."""
    return "auto-*" if client_id.startswith("auto-") else client_id


def _state(conn: MqttConnection) -> dict[str, Any]:
    """Everything a connection holds, its objects by what they hold (the same on two
    brokers), times by what follows from them."""
    names = set(py_lane.ConnectionCore.__slots__) | set(MqttConnection.__slots__)
    state: dict[str, Any] = {}
    for name in sorted(names - {"broker", "context", "transport"}):
        value = getattr(conn, name, "<unset>")
        if name in ("last_seen", "opened_at"):  # opened_at: 0 once connected
            value = value > 0
        elif name == "watched":  # the sweep after 1.5 keep alives
            value = value and value - int(conn.last_seen + conn.keep_alive * 1.5)
        elif name == "decoder":
            value = (value.protocol_version, value.max_packet_size, value.group_publishes)
        elif name == "session" and value is not None:
            session = value
            value = {n: getattr(session, n) for n in py_lane.SessionCore.__slots__}
            value["connection"] = session.connection is conn
            value["drops"] = session.drops is conn.broker.counters
            value["client_id"] = _assigned(session.client_id)
        elif name == "client_id":
            value = _assigned(value)
        elif value is not None and not isinstance(value, (bool, int, float, str, bytes)):
            value = type(value).__name__  # the ACL's authorizer, a publish quota
        state[name] = value
    return state


def _connects(
    loop: asyncio.AbstractEventLoop,
    lane: ModuleType,
    monkeypatch: pytest.MonkeyPatch,
    reads: list[tuple[str, bytes]],
    setup: Callable[[_Side], None] | None = None,
    auth: AuthConfig | None = None,
) -> tuple[_Side, _Side, list[bool]]:
    """The same reads from new clients (by name) on two brokers: one whose reads go the
    full way, one whose reads before a CONNACK try ``lane.connect`` first. Returns both
    sides and what the lane said per read it was offered."""
    taken: list[bool] = []

    def connect(conn: MqttConnection, data: bytes) -> bool:
        taken.append(lane.connect(conn, data))
        return taken[-1]

    async def run() -> list[_Side]:
        sides = []
        for use_lane in (False, True):
            monkeypatch.setattr(_Switched, "connect_lane", None)
            side = _Side(auth)
            if setup is not None:
                setup(side)
            if use_lane:
                monkeypatch.setattr(_Switched, "connect_lane", connect)
            for name, data in reads:
                conn = side.clients.get(name)
                if conn is None:
                    conn = side.clients[name] = _Switched(side.broker)
                    conn.connection_made(_Transport(conn))  # type: ignore[arg-type]
                conn.data_received(data)
                await asyncio.sleep(0)
            await asyncio.sleep(0)
            sides.append(side)
        return sides

    full, laned = loop.run_until_complete(run())
    return full, laned, taken


def _same_connections(full: _Side, laned: _Side) -> None:
    _same(full, laned)
    for side in (full, laned):
        side.broker.lane_context.fold()
    f, c = full.broker, laned.broker
    assert list(c.counters.packets_received) == list(f.counters.packets_received)
    assert list(c.counters.packets_sent) == list(f.counters.packets_sent)
    assert {n: _state(conn) for n, conn in laned.clients.items()} == {
        n: _state(conn) for n, conn in full.clients.items()
    }
    assert sorted(map(_assigned, c.sessions)) == sorted(map(_assigned, f.sessions))
    assert len(c.connections) == len(f.connections)
    assert sum(map(len, c.wheel.due.values())) == sum(map(len, f.wheel.due.values()))


def test_connect_matches_the_full_path_for_plain_connects(lane, loop, monkeypatch) -> None:
    subscribe = mqtt_codec.encode(mqtt_codec.Subscribe(1, [mqtt_codec.Subscription("t/#")]), 4)
    reads = [
        ("a", _connect("a", keep_alive=60)),
        ("b", _connect("b", keep_alive=0)),
        ("c", _connect("c c~!", keep_alive=1)),
        ("a", subscribe),  # the clients the lane accepted go on as any other
        ("b", _pub("t/1", b"hello")),
    ]
    full, laned, taken = _connects(loop, lane, monkeypatch, reads)
    _same_connections(full, laned)
    assert taken == [True, True, True]
    written = laned.written()
    assert written["b"] == written["c"] == b"\x20\x02\x00\x00"
    assert written["a"] == b"\x20\x02\x00\x00\x90\x03\x00\x01\x00" + _pub("t/1", b"hello")
    assert laned.broker.counters.packets_received[CONNECT] == 3


@pytest.mark.parametrize("data, why", _NOT_PLAIN)
def test_connect_leaves_other_first_reads_to_the_full_path(
    lane, loop, monkeypatch, data: bytes, why: str
) -> None:
    full, laned, taken = _connects(loop, lane, monkeypatch, [("a", data)])
    _same_connections(full, laned)
    assert taken == [False], why


def test_connect_leaves_a_connect_in_two_reads_to_the_full_path(lane, loop, monkeypatch) -> None:
    data = _connect("a")
    full, laned, taken = _connects(loop, lane, monkeypatch, [("a", data[:5]), ("a", data[5:])])
    _same_connections(full, laned)
    assert taken == [False, False]
    assert laned.clients["a"].connected


def _ban(side: _Side) -> None:
    side.broker.security.limits.blacklist.ban("clientid", "nobody")


def _full(side: _Side) -> None:
    side.broker.config = dataclasses.replace(side.broker.config, max_connections=1)


def _redirect(side: _Side) -> None:
    side.broker.config = dataclasses.replace(side.broker.config, server_reference="b:1883")


def _auto_subscribe(side: _Side) -> None:
    side.broker.auto_subscribe = [("inbox/${clientid}", 1)]


@pytest.mark.parametrize(
    "setup, auth, why",
    [
        (None, AuthConfig(jwt_secret="s"), "authentication"),
        (None, AuthConfig(acl_default="deny"), "an ACL"),
        (None, AuthConfig(publish_rate=10), "a publish quota"),
        (_ban, None, "a blacklist"),
        (_full, None, "max_connections"),
        (_redirect, None, "server_reference"),
        (_auto_subscribe, None, "auto-subscriptions"),
    ],
)
def test_connect_steps_aside_when_the_broker_checks_more(
    lane, loop, monkeypatch, setup: Any, auth: AuthConfig | None, why: str
) -> None:
    reads = [("a", _connect("a")), ("b", _connect("b"))]
    full, laned, taken = _connects(loop, lane, monkeypatch, reads, setup, auth)
    _same_connections(full, laned)
    # max_connections 1: "a" is the one connection, "b" the one too many.
    assert taken == ([True, False] if setup is _full else [False, False]), why


def test_connect_leaves_a_client_id_with_a_session_to_the_full_path(
    lane, loop, monkeypatch
) -> None:
    # The second "a" takes the session over and the first connection is closed (3.1.1
    # has no DISCONNECT from the server): the full path's work.
    reads = [("a", _connect("a")), ("a2", _connect("a")), ("b", _connect("b"))]
    full, laned, taken = _connects(loop, lane, monkeypatch, reads)
    _same_connections(full, laned)
    assert taken == [True, False, True]
    assert (
        laned.clients["a"].closing and laned.broker.sessions["a"].connection is laned.clients["a2"]
    )


def test_the_connection_entry_takes_the_connect_lane_for_plain_connects(loop, full_reads) -> None:
    """``MqttConnection.data_received`` (its core's) accepts a plain CONNECT itself and
    hands one with properties to the full path (``_read``)."""

    async def run() -> _Side:
        side = _Side()
        side.connect("plain", 4, cls=MqttConnection)
        side.connect("five", 5, cls=MqttConnection)
        side.connect("kept", 5, clean=False, cls=MqttConnection)  # a session expiry
        await asyncio.sleep(0)
        return side

    side = loop.run_until_complete(run())
    assert [mqtt_codec.Decoder(0).decode(d)[0][0].client_id for d in full_reads] == ["kept"]
    assert all(conn.connected for conn in side.clients.values())
    assert side.written()["plain"] == b"\x20\x02\x00\x00"
    assert side.written()["five"] == side.broker.plain_connack_v5()


def _v5_reads() -> list[tuple[str, bytes]]:
    subscribe = mqtt_codec.encode(mqtt_codec.Subscribe(1, [mqtt_codec.Subscription("t/#")]), 5)
    return [
        ("a", _connect("a", version=5, keep_alive=60)),
        ("b", _connect("b", version=5, keep_alive=0)),
        ("c", _connect("c c~!", version=5, keep_alive=20)),
        ("a", subscribe),
        ("b", _pub("t/1", b"hello", version=5)),
    ]


def test_connect_matches_the_full_path_for_plain_5_0_connects(lane, loop, monkeypatch) -> None:
    full, laned, taken = _connects(loop, lane, monkeypatch, _v5_reads())
    _same_connections(full, laned)
    assert taken == [True, True, True]
    connack = mqtt_codec.Decoder(5).decode(laned.written()["b"])[0][0]
    assert (connack.session_present, connack.reason_code) == (False, 0)
    assert connack.properties["receive_maximum"] == laned.broker.config.receive_maximum
    assert laned.clients["a"].version == laned.clients["a"].decoder.protocol_version == 5


def _no_retain(side: _Side) -> None:
    side.broker.config = dataclasses.replace(side.broker.config, retain_available=False)


def _longest_keep_alive(side: _Side) -> None:
    side.broker.config = dataclasses.replace(side.broker.config, max_keep_alive=30)


@pytest.mark.parametrize(
    "setup, expected",
    [
        (_no_retain, [True, True, True]),  # Retain Available 0 in its CONNACK
        (_longest_keep_alive, [False, False, True]),  # 60 and 0 get Server Keep Alive 30
    ],
)
def test_connect_follows_the_config_for_5_0_clients(
    lane, loop, monkeypatch, setup: Any, expected: list[bool]
) -> None:
    full, laned, taken = _connects(loop, lane, monkeypatch, _v5_reads(), setup)
    _same_connections(full, laned)
    assert taken == expected


def test_connect_sends_the_5_0_connack_of_the_config_in_force(lane, loop) -> None:
    async def run() -> list[bytes]:
        side = _Side()
        written = []
        for name, receive in (("a", 0), ("b", 10), ("c", 0)):
            if receive:  # a hot change replaces the config
                side.broker.config = dataclasses.replace(side.broker.config, receive_maximum=10)
            conn = _Switched(side.broker)
            conn.connection_made(_Transport(conn))  # type: ignore[arg-type]
            assert lane.connect(conn, _connect(name, version=5))
            written.append(b"".join(conn.transport.out))  # type: ignore[union-attr]
        return written

    a, b, c = loop.run_until_complete(run())
    receive = [mqtt_codec.Decoder(5).decode(x)[0][0].properties["receive_maximum"] for x in (a, b)]
    assert receive == [MqttConfig().receive_maximum, 10]
    assert b == c


# ---------------------------------------------------------------------- accept poll

EPOLL_LOOPS = pytest.mark.parametrize(
    "new_loop", [uvloop.new_event_loop, asyncio.SelectorEventLoop], ids=["uvloop", "selector"]
)


def _on_loop(new_loop: Callable[[], asyncio.AbstractEventLoop], main: Callable[[], Any]) -> Any:
    loop = new_loop()
    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()


async def _watched_pair() -> tuple[socket.socket, socket.socket, asyncio.Future[bytes]]:
    """A socket pair whose first end the running loop reads: (read end, write end, what
    the loop got)."""
    loop = asyncio.get_running_loop()
    a, b = socket.socketpair()
    got: asyncio.Future[bytes] = loop.create_future()
    loop.add_reader(a.fileno(), lambda: got.done() or got.set_result(a.recv(1)))
    await asyncio.sleep(0.01)  # registered by the loop's next poll
    return a, b, got


@EPOLL_LOOPS
def test_loop_epoll_fd_is_the_instance_the_loop_waits_in(new_loop) -> None:
    async def main() -> None:
        fd = await loop_epoll_fd(asyncio.get_running_loop())
        assert fd is not None
        assert os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:[eventpoll]"
        a, b, got = await _watched_pair()
        with select.epoll.fromfd(os.dup(fd)) as ep:
            assert a.fileno() not in [f for f, _ in ep.poll(0)]
            b.send(b"x")
            assert a.fileno() in [f for f, _ in ep.poll(0)]
        assert await asyncio.wait_for(got, 5) == b"x"  # looking took nothing from the loop
        a.close()
        b.close()

    _on_loop(new_loop, main)


@EPOLL_LOOPS
def test_accept_poll_keeps_polling_until_the_loop_has_an_event(lane, new_loop) -> None:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        fd = await loop_epoll_fd(loop)
        assert fd is not None
        a, b, got = await _watched_pair()
        start = time.monotonic()
        assert lane.AcceptPoll(fd, 20_000_000, loop.call_soon).run() is False  # nothing came
        idle = time.monotonic() - start
        # Another process writes within a 10 s window (the compiled poll keeps the GIL).
        write = "import os, sys, time; time.sleep(0.05); os.write(int(sys.argv[1]), b'x')"
        writer = subprocess.Popen(
            [sys.executable, "-c", write, str(b.fileno())], pass_fds=(b.fileno(),)
        )
        assert lane.AcceptPoll(fd, 10_000_000_000, loop.call_soon).run() is True
        writer.wait()
        assert await asyncio.wait_for(got, 5) == b"x"  # and the loop still gets it
        a.close()
        b.close()
        return idle

    assert _on_loop(new_loop, main) >= 0.02  # it polled for its whole window


def test_accept_poll_is_scheduled_once_until_it_runs(lane) -> None:
    scheduled: list[Callable[[], bool]] = []
    with select.epoll() as empty:
        poll = lane.AcceptPoll(empty.fileno(), 0, scheduled.append)
        poll.arm()
        poll.arm()  # the same loop iteration: already scheduled
        assert len(scheduled) == 1 and poll.armed
        assert scheduled[0]() is False and not poll.armed
        poll.arm()
        assert len(scheduled) == 2
