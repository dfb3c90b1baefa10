"""Micro benchmark of the QoS 0 lane: one read holding one 64-byte QoS 0 PUBLISH, from a
3.1.1 client to one subscriber, through ``MqttConnection.data_received`` of a broker of
real objects whose sockets are no-op transports. Three ways side by side: the full path
(decoder, handler, write batching), the lane's pure-Python reference and its compiled
twin; each once with warm caches (a read after a read) and once with 16 MiB written
between reads, which evicts the core's L1 and L2 caches as the kernel and the load
generator do between messages at light load. And the connect lane: a new connection's
plain 3.1.1 CONNECT, the same three ways. Run:
``python -m pytest benchmarks/test_bench_lanes.py -p no:cacheprovider``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

import robustmq._core.lanes as py_lane
from robustmq._core import compiled, lane, mqtt_codec
from robustmq.broker.mqtt.connection import MqttConnection
from robustmq.broker.mqtt.server import MqttBroker
from robustmq.config import MqttConfig


class _Transport:
    """A socket that takes every write and is never closing."""

    def write(self, data: bytes) -> None:
        pass

    def writelines(self, parts: list[bytes]) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 1883) if name == "peername" else default


class _Full(MqttConnection):
    """Every read the full way."""

    __slots__ = ()

    def data_received(self, data: bytes) -> None:
        self._read(data)


class _PyLane(MqttConnection):
    """Reads offered to the pure-Python lanes first."""

    __slots__ = ()

    def data_received(self, data: bytes) -> None:
        if not (py_lane.forward if self.connected else py_lane.connect)(self, data):
            self._read(data)


_WAYS = {"full": _Full, "py": _PyLane, "c": MqttConnection}


def _client(broker: MqttBroker, client_id: str, cls: type[MqttConnection]) -> MqttConnection:
    conn = cls(broker)
    conn.connection_made(_Transport())  # type: ignore[arg-type]
    conn.data_received(mqtt_codec.encode(mqtt_codec.Connect(client_id), 4))
    return conn


@pytest.fixture(params=["full", "py", "c"], ids=["full path", "lane py", "lane c"])
def publisher(request: pytest.FixtureRequest) -> Iterator[Any]:
    """The publisher: the full path, the pure lane, or ``MqttConnection`` as it is (its
    compiled core's ``data_received`` and lane)."""
    if request.param == "c" and not compiled(lane):
        pytest.skip("compiled robustmq._core._lanes is not built")
    cls = _WAYS[request.param]
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)

    async def setup() -> MqttConnection:
        broker = MqttBroker(MqttConfig())
        pub, sub = _client(broker, "pub", cls), _client(broker, "sub", _Full)
        sub.data_received(
            mqtt_codec.encode(mqtt_codec.Subscribe(1, [mqtt_codec.Subscription("t/1")]), 4)
        )
        return pub

    yield loop.run_until_complete(setup())
    loop.close()
    asyncio.set_event_loop(None)


def test_one_publish_per_read(benchmark: Any, publisher: MqttConnection) -> None:
    data = mqtt_codec.encode_publish("t/1", b"x" * 64)
    context = publisher.broker.lane_context
    context.fold()
    received = publisher.broker.stats["messages_sent"]
    benchmark.group = "one QoS 0 PUBLISH per read, one subscriber"
    benchmark(publisher.data_received, data)
    context.fold()
    assert publisher.broker.stats["messages_sent"] > received


def test_one_publish_per_read_cold_caches(benchmark: Any, publisher: MqttConnection) -> None:
    data = mqtt_codec.encode_publish("t/1", b"x" * 64)
    junk = np.zeros(16 * 1024 * 1024 // 8, dtype=np.int64)

    def evict() -> None:
        junk[::8] += 1  # one write per 64-byte line

    benchmark.group = "one QoS 0 PUBLISH per read, one subscriber, caches evicted"
    benchmark.pedantic(publisher.data_received, (data,), setup=evict, rounds=3000)


@pytest.mark.parametrize("version", [4, 5], ids=["3.1.1", "5.0"])
@pytest.mark.parametrize("way", ["full", "py", "c"], ids=["full path", "lane py", "lane c"])
def test_one_plain_connect(benchmark: Any, way: str, version: int) -> None:
    """A new connection's first read: a plain 3.1.1 or 5.0 CONNECT (clean session, keep
    alive 60, no properties), to its CONNACK; each round a new connection and client
    id."""
    if way == "c" and not compiled(lane):
        pytest.skip("compiled robustmq._core._lanes is not built")
    cls = _WAYS[way]
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    broker = loop.run_until_complete(asyncio.sleep(0, MqttBroker(MqttConfig())))
    ids = iter(range(1 << 30))

    def fresh() -> tuple[tuple[Any, ...], dict[str, Any]]:
        conn = cls(broker)
        conn.connection_made(_Transport())  # type: ignore[arg-type]
        packet = mqtt_codec.Connect(f"client-{next(ids)}", protocol_version=version)
        connect = mqtt_codec.encode(packet, version)
        return (conn, connect), {}

    def read(conn: MqttConnection, data: bytes) -> None:
        conn.data_received(data)

    benchmark.group = f"one plain CONNECT ({version}), new connection"
    benchmark.pedantic(read, setup=fresh, rounds=5000)
    assert len(broker.sessions) == 5000 and all(c.connected for c in broker.connections)
    loop.close()
    asyncio.set_event_loop(None)
