"""Tests of robustmq-bench's connection storms, run against both twins
(robustmq._core.conn_storm and the compiled robustmq._core._conn_storm):
``connack_status`` on spec-shaped CONNACKs and, by hypothesis, on arbitrary bytes (the
twins agree, and a decided status stays decided as more bytes come); ``Storm`` against a
real broker on a real socket (held, refused, pinged, dropped, closed) and against scripted
servers for each way a handshake can fail.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import robustmq._core.conn_storm as py_storm
from robustmq._core import mqtt_codec
from tests.conftest import BrokerThread, free_port

try:
    import robustmq._core._conn_storm as c_storm
except ImportError:
    c_storm = None

NOT_BUILT = "compiled robustmq._core._conn_storm is not built (pip install -e .)"
SECOND = 1_000_000_000


@pytest.fixture(params=["py", "c"], ids=["py", "c"])
def storm(request: pytest.FixtureRequest) -> ModuleType:
    if request.param == "c":
        if c_storm is None:
            pytest.skip(NOT_BUILT)
        return c_storm
    return py_storm


def test_compiled_twin_has_the_reference_api() -> None:
    if c_storm is None:
        pytest.skip(NOT_BUILT)
    assert not c_storm.__file__.endswith(".py")
    assert set(c_storm.__all__) == set(py_storm.__all__)
    for name in ("CONNECT_ERROR", "CLOSED", "TIMED_OUT", "REFUSED", "MALFORMED"):
        assert getattr(c_storm, name) == getattr(py_storm, name)


def _connect(client_id: str, version: int = 4) -> bytes:
    packet = mqtt_codec.Connect(client_id, protocol_version=version, keep_alive=60)
    return bytes(mqtt_codec.encode(packet, version))


# ---------------------------------------------------------------- connack_status


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"\x20\x02\x00\x00", (0, 0)),  # 3.1.1 accepted
        (b"\x20\x02\x01\x00", (0, 0)),  # session present
        (b"\x20\x02\x00\x05", (py_storm.REFUSED, 5)),  # 3.1.1 not authorized
        (b"\x20\x03\x00\x00\x00", (0, 0)),  # 5.0, no properties
        (b"\x20\x03\x00\x87\x00", (py_storm.REFUSED, 0x87)),  # 5.0 not authorized
        (b"\x20\x80\x01\x00\x00", (0, 0)),  # a two-byte Remaining Length (128)
        (b"", None),
        (b"\x20", None),
        (b"\x20\x02\x00", None),  # the code still to come
        (b"\x20\x80", None),  # the Remaining Length still to come
        (b"\x30\x02\x00\x00", (py_storm.MALFORMED, 0x30)),  # a PUBLISH
        (b"\x20\x01\x00", (py_storm.MALFORMED, 0x20)),  # too short for flags and code
        (b"\x20\x80\x80\x80\x80\x01", (py_storm.MALFORMED, 0x20)),  # five length bytes
    ],
)
def test_connack_status_reads_the_fixed_header_and_the_code(storm, data, status) -> None:
    assert storm.connack_status(data) == status


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=12), st.binary(max_size=6))
def test_connack_status_twins_agree_and_stay_decided(data: bytes, more: bytes) -> None:
    status = py_storm.connack_status(data)
    if c_storm is not None:
        assert c_storm.connack_status(data) == status
    if status is not None:
        assert py_storm.connack_status(data + more) == status


# ---------------------------------------------------------------- driving a storm


def _drive(storm: Any, until: Callable[[], bool], timeout: float = 10.0) -> None:
    """Runs ``storm`` on an event loop, as robustmq-bench does, until ``until()``."""

    async def run() -> None:
        loop = asyncio.get_running_loop()
        loop.add_reader(storm.fileno(), storm.step)
        deadline = time.monotonic() + timeout
        try:
            while not until():
                assert time.monotonic() < deadline, "the storm did not finish"
                storm.step()  # the timer's step: timeouts
                await asyncio.sleep(0.01)
        finally:
            loop.remove_reader(storm.fileno())

    asyncio.run(run())


def _connections(broker: BrokerThread) -> int:
    return broker.run(lambda: sum(1 for c in broker.broker.connections if c.connected))


def test_storm_holds_pings_and_closes_real_connections(storm, broker) -> None:
    packets = [_connect(f"storm-{i}", version=4 + i % 2) for i in range(200)]
    s = storm.Storm("127.0.0.1", broker.port, packets, 16, 5 * SECOND)
    s.allow(50)  # a paced storm lets them open in steps
    _drive(s, lambda: s.connected + s.failed == 50)
    assert not s.finished and s.opened == 50
    s.allow(200)
    _drive(s, lambda: s.finished)
    assert (s.connected, s.failed, s.pending, s.first_error) == (200, 0, 0, None)
    assert len(s.latencies) == 200 and all(0 < ns < 5 * SECOND for ns in s.latencies)
    assert s.last_connack_ns > 0
    assert _connections(broker) == 200
    before = time.monotonic()
    s.ping()

    def heard() -> int:  # connections the broker heard from since the ping went out
        return broker.run(lambda: sum(c.last_seen > before for c in broker.broker.connections))

    deadline = time.monotonic() + 5
    while heard() < 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert heard() == 200
    _drive(s, lambda: True)  # reads the PINGRESPs
    assert s.dropped == 0
    s.close()
    deadline = time.monotonic() + 5
    while _connections(broker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _connections(broker) == 0


def test_storm_counts_connacks_that_refuse(storm, broker_factory) -> None:
    b = broker_factory(max_connections=5)
    s = storm.Storm("127.0.0.1", b.port, [_connect(f"q{i}", 5) for i in range(8)], 1, SECOND)
    s.allow(8)
    _drive(s, lambda: s.finished)
    assert (s.connected, s.failed) == (5, 3)
    assert s.failures[storm.REFUSED] == 3
    assert s.first_error == (storm.REFUSED, 0x97)  # Quota exceeded
    s.close()


class _Scripted:
    """A TCP server that treats every connection with ``script(sock)`` in a thread."""

    def __init__(self, script: Callable[[socket.socket], None]) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.script = script
        self.socks: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            self.socks.append(sock)
            self.script(sock)

    def close(self) -> None:
        self.listener.close()
        for sock in self.socks:
            sock.close()


def _silent(sock: socket.socket) -> None:
    pass


def _garbage(sock: socket.socket) -> None:
    sock.recv(100)
    sock.sendall(b"\x30\x00")


def _hangs_up(sock: socket.socket) -> None:
    sock.recv(100)
    sock.close()


def _accepts_then_drops(sock: socket.socket) -> None:
    sock.recv(100)
    sock.sendall(b"\x20\x02\x00\x00")
    threading.Timer(0.2, sock.close).start()


@pytest.mark.parametrize(
    ("script", "kind", "value"),
    [
        (_silent, py_storm.TIMED_OUT, 0),
        (_garbage, py_storm.MALFORMED, 0x30),
        (_hangs_up, py_storm.CLOSED, 0),
    ],
)
def test_storm_counts_each_way_a_handshake_fails(storm, script, kind, value) -> None:
    server = _Scripted(script)
    try:
        s = storm.Storm("127.0.0.1", server.port, [_connect(f"x{i}") for i in range(3)], 3,
                        SECOND // 5)  # fmt: skip
        s.allow(3)
        _drive(s, lambda: s.finished)
        assert (s.connected, s.failed, s.pending) == (0, 3, 0)
        assert s.failures[kind] == 3 and s.first_error == (kind, value)
        s.close()
    finally:
        server.close()


def test_storm_counts_refused_tcp_connects(storm) -> None:
    s = storm.Storm("127.0.0.1", free_port(), [_connect("nobody")], 1, SECOND)  # nothing there
    s.allow(1)
    _drive(s, lambda: s.finished)
    assert s.first_error == (storm.CONNECT_ERROR, errno.ECONNREFUSED)
    s.close()


def test_storm_counts_held_connections_the_broker_closes(storm) -> None:
    server = _Scripted(_accepts_then_drops)
    try:
        s = storm.Storm("127.0.0.1", server.port, [_connect(f"d{i}") for i in range(4)], 4,
                        SECOND)  # fmt: skip
        s.allow(4)
        _drive(s, lambda: s.finished)
        assert s.connected == 4
        _drive(s, lambda: s.dropped == 4)
        s.close()
    finally:
        server.close()


def test_storm_counts_sockets_it_cannot_open(storm) -> None:
    """Out of descriptors, each connection still counts, as a failed connect (EMFILE)."""
    script = f"""
import resource, socket
from {storm.__name__} import Storm, CONNECT_ERROR
listener = socket.create_server(("127.0.0.1", 0))
s = Storm("127.0.0.1", listener.getsockname()[1], [b"\\x10"] * 5, 5, 10**9)
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (s.fileno() + 1, hard))
s.allow(5)
print(s.opened, s.failed, s.failures[CONNECT_ERROR], s.first_error)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split(maxsplit=3) == [
        "5",
        "5",
        "5",
        f"({storm.CONNECT_ERROR}, {errno.EMFILE})\n",
    ]


def test_storm_refuses_a_host_that_is_not_an_address(storm) -> None:
    with pytest.raises(OSError):
        storm.Storm("localhost", 1883, [], 1, SECOND)


@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=10))
def test_storm_twins_judge_any_reply_alike(reply: bytes) -> None:
    """A server that answers CONNECT with ``reply`` and hangs up: both twins end the
    handshake as ``connack_status`` reads the reply (CLOSED while it is undecided)."""
    status = py_storm.connack_status(reply)
    expected = (1, 0, None) if status == (0, 0) else (0, 1, status or (py_storm.CLOSED, 0))

    def answer(sock: socket.socket) -> None:
        sock.recv(100)
        sock.sendall(reply)
        sock.close()

    for module in (py_storm, c_storm) if c_storm is not None else (py_storm,):
        server = _Scripted(answer)
        try:
            s = module.Storm("127.0.0.1", server.port, [_connect("any")], 1, 5 * SECOND)
            s.allow(1)
            _drive(s, lambda s=s: s.finished)
            assert (s.connected, s.failed, s.first_error) == expected
            s.close()
        finally:
            server.close()
