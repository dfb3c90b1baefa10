"""The broker's once-a-second sweep (``MqttBroker._sweep``): CONNECT timeout, keep alive
(§3.1.2.10: 1.5 times the keep alive without a packet closes the connection) and the end
of backpressure, on a broker of real objects whose sockets are recording transports and
whose clock is the test's. A connected client is looked at when its keep alive is due,
not every second: the sweep costs nothing for idle clients between their deadlines.
Sockets waiting for CONNECT are looked at in the order they were established.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Iterator
from typing import Any

import pytest

from robustmq._core import mqtt_codec
from robustmq.broker.mqtt import connection
from robustmq.broker.mqtt.connection import MqttConnection
from robustmq.broker.mqtt.server import MqttBroker
from robustmq.config import MqttConfig


class _Transport:
    def __init__(self, conn: MqttConnection) -> None:
        self.conn = conn
        self.closed = False

    def write(self, data: bytes) -> None:
        pass

    def writelines(self, parts: list[bytes]) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 1883) if name == "peername" else default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class _Clock:
    """The connection's monotonic clock, moved by the test (it starts at the real one:
    a new connection and its connection_made, in the compiled core, read the real
    clock)."""

    def __init__(self) -> None:
        self.now = time.monotonic()

    def monotonic(self) -> float:
        return self.now

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)  # the rest of the time module, as it is


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> _Clock:
    clock = _Clock()
    monkeypatch.setattr(connection, "time", clock)
    return clock


@pytest.fixture
def broker(clock: _Clock) -> Iterator[MqttBroker]:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    yield MqttBroker(MqttConfig(connect_timeout=5.0))
    loop.close()
    asyncio.set_event_loop(None)


def _open(broker: MqttBroker) -> MqttConnection:
    conn = MqttConnection(broker)
    conn.connection_made(_Transport(conn))  # type: ignore[arg-type]
    return conn


def _connect(broker: MqttBroker, client_id: str, keep_alive: int) -> MqttConnection:
    conn = _open(broker)
    conn.data_received(mqtt_codec.encode(mqtt_codec.Connect(client_id, keep_alive=keep_alive), 4))
    assert conn.connected
    return conn


def _closed(conn: MqttConnection) -> bool:
    return conn.transport.closed  # type: ignore[union-attr]


def _sweep_until(broker: MqttBroker, clock: _Clock, until: float) -> None:
    """Sweeps once a second of the test's clock, as the task does, up to ``until``."""
    while clock.now + 1 <= until:
        clock.now += 1
        broker._sweep(clock.now)


def test_a_silent_client_is_closed_after_one_and_a_half_keep_alives(broker, clock) -> None:
    start = clock.now
    silent = _connect(broker, "silent", 10)
    _sweep_until(broker, clock, start + 14)
    assert not _closed(silent)
    _sweep_until(broker, clock, start + 17)
    assert _closed(silent)


def test_a_packet_moves_the_deadline(broker, clock) -> None:
    start = clock.now
    talking = _connect(broker, "talking", 10)
    _sweep_until(broker, clock, start + 10)
    talking.data_received(mqtt_codec.encode(mqtt_codec.Pingreq(), 4))
    _sweep_until(broker, clock, start + 24)
    assert not _closed(talking)
    _sweep_until(broker, clock, start + 27)
    assert _closed(talking)


def test_keep_alive_zero_is_never_timed_out(broker, clock) -> None:
    forever = _connect(broker, "forever", 0)
    _sweep_until(broker, clock, clock.now + 200)
    assert not _closed(forever)
    assert not any(forever in due for due in broker.wheel.due.values())
    assert forever.watched == 0


def test_a_client_we_stopped_reading_is_not_timed_out_for_our_silence(broker, clock) -> None:
    start = clock.now
    held = _connect(broker, "held", 10)
    held._pause_reading()
    _sweep_until(broker, clock, start + 40)
    assert not _closed(held)
    held._resume_reading()  # at 40: its silence until now was ours
    _sweep_until(broker, clock, start + 54)
    assert not _closed(held)
    _sweep_until(broker, clock, start + 57)
    assert _closed(held)


def test_no_connect_within_connect_timeout_closes_the_socket(broker, clock) -> None:
    start = clock.now
    mute = _open(broker)
    connected = _connect(broker, "fine", 0)
    _sweep_until(broker, clock, start + 4)
    assert not _closed(mute)
    _sweep_until(broker, clock, start + 7)
    assert _closed(mute)
    assert not _closed(connected)


def test_an_idle_client_is_looked_at_once_per_keep_alive_not_every_second(broker, clock) -> None:
    """A client that pings every second is due at one second at a time, and that
    second moves once in 100 s: when it came (1.5 keep alives after CONNECT)."""
    start = clock.now
    idle = _connect(broker, "idle", 60)
    dues: list[list[int]] = []
    while clock.now < start + 100:
        idle.data_received(mqtt_codec.encode(mqtt_codec.Pingreq(), 4))  # every second
        _sweep_until(broker, clock, clock.now + 1)
        dues.append([due for due, conns in broker.wheel.due.items() if idle in conns])
    assert not _closed(idle)
    assert all(len(due) == 1 for due in dues)  # never twice
    first, *later = [due[0] for due in dues]
    assert first >= start + 90
    moved = [due for due in later if due != first]
    assert moved and len(set(moved)) == 1  # looked at once, at its deadline


def test_the_connect_timeout_counts_from_the_established_connection(broker, clock) -> None:
    """A TLS handshake: the protocol is made at accept, connection_made comes after the
    handshake (which has its own timeout); the CONNECT timeout starts there."""
    late = MqttConnection(broker)
    late.opened_at = late.last_seen = clock.now - 30  # made 30 s ago: a slow handshake
    start = clock.now
    late.connection_made(_Transport(late))  # type: ignore[arg-type]  # (the real clock)
    _sweep_until(broker, clock, start + 4)
    assert not _closed(late)
    _sweep_until(broker, clock, start + 6)
    assert _closed(late)


def test_a_connect_timeout_change_applies_to_the_sockets_waiting(broker, clock) -> None:
    start = clock.now
    first, second = _open(broker), _open(broker)
    broker.config = dataclasses.replace(broker.config, connect_timeout=60.0)
    _sweep_until(broker, clock, start + 10)
    assert not _closed(first) and not _closed(second)
    broker.config = dataclasses.replace(broker.config, connect_timeout=2.0)
    _sweep_until(broker, clock, start + 11)
    assert _closed(first) and _closed(second)


def test_the_sweep_keeps_only_the_sockets_still_waiting_for_connect(broker, clock) -> None:
    # A socket that never sends CONNECT must not hold on to those that came after it
    # (connected or closed) until its own timeout: only the waiting stay.
    waiting = _open(broker)
    connected = _connect(broker, "in", 0)
    gone = _open(broker)

    async def close() -> None:
        gone.connection_lost(None)

    asyncio.get_event_loop().run_until_complete(close())
    assert broker.connecting == [waiting, connected, gone]
    _sweep_until(broker, clock, clock.now + 1)
    assert broker.connecting == [waiting]
    assert not _closed(waiting) and connected.connected


def test_a_closed_connection_leaves_the_sweep(broker, clock) -> None:
    """Nothing of a closed connection is kept until its deadline (up to 27 h)."""
    gone = _connect(broker, "gone", 600)
    assert any(gone in due for due in broker.wheel.due.values())

    async def close() -> None:
        gone.connection_lost(None)

    asyncio.get_event_loop().run_until_complete(close())
    assert not any(gone in due for due in broker.wheel.due.values())
    assert gone.watched == 0
