"""Connection storms for ``robustmq-bench mqtt conn``: plain TCP MQTT handshakes (TCP
connect, CONNECT, CONNACK) driven from one epoll instance, with no event-loop transport,
future or task per connection. Through the event loop's own connection setup a handshake
cost the tool about 30 us of CPU, which on a 2-core machine shared with the broker held
it to about 60 % of the C load generator's connect rate. ``_conn_storm.pyx`` is the
compiled twin; the tests compare both against real and scripted brokers.

``Storm(host, port, packets, max_pending, timeout_ns)`` opens one connection per CONNECT
packet in ``packets``, in order, as ``allow`` lets it and with at most ``max_pending``
handshakes in flight. ``host`` is an IPv4 or IPv6 address (the caller resolves names).
A connection sends its CONNECT once its TCP connect completes, and is done when a whole
CONNACK header has come: held (reason code 0) or failed, and closed. The caller registers
``fileno()`` with its event loop, calls ``step()`` when it is readable and from a timer
(which also ends handshakes older than ``timeout_ns``), and reads the counts.

Held connections stay registered: ``ping()`` sends each a PINGREQ, ``step()`` reads and
drops whatever the broker sends them and counts one it closes as ``dropped``; ``close()``
sends each a DISCONNECT and closes everything.

A failure is counted by kind in ``failures`` (``CONNECT_ERROR``: the TCP connect failed,
value the errno; ``CLOSED``: closed or reset before a CONNACK, value the errno or 0;
``TIMED_OUT``; ``REFUSED``: value the CONNACK's reason code; ``MALFORMED``: something else
came, value its first byte) and the first one is kept in ``first_error`` as (kind, value).
"""

from __future__ import annotations

import contextlib
import errno
import select
import socket
import time

__all__ = [
    "CLOSED", "CONNECT_ERROR", "MALFORMED", "REFUSED", "TIMED_OUT", "Storm", "connack_status",
]  # fmt: skip

CONNECT_ERROR = 1
CLOSED = 2
TIMED_OUT = 3
REFUSED = 4
MALFORMED = 5

PINGREQ = b"\xc0\x00"
DISCONNECT = b"\xe0\x00"
_CONNACK = 0x20
_BATCH = 256  # events taken per epoll_wait
_CONNECTING, _WAITING, _HELD = 0, 1, 2


def connack_status(data: bytes) -> tuple[int, int] | None:
    """What the first bytes a connection received say: None while they could still be the
    start of a CONNACK, else (0, 0) for one with reason code 0, (REFUSED, code) or
    (MALFORMED, first byte). Only the fixed header, the flags and the reason code are read
    (MQTT 3.1.1 §3.2, 5.0 §3.2): the rest of a 5.0 CONNACK is the broker's properties."""
    n = len(data)
    if n == 0:
        return None
    if data[0] != _CONNACK:
        return MALFORMED, data[0]
    length = shift = 0
    pos = 1
    while True:
        if pos >= n:
            return None
        if pos > 4:
            return MALFORMED, _CONNACK  # a Remaining Length of more than four bytes
        b = data[pos]
        length |= (b & 0x7F) << shift
        shift += 7
        pos += 1
        if b < 0x80:
            break
    if length < 2:
        return MALFORMED, _CONNACK
    if n < pos + 2:
        return None
    code = data[pos + 1]
    return (REFUSED, code) if code else (0, 0)


class _Conn:
    __slots__ = ("sock", "state", "began", "packet", "got")

    def __init__(self, sock: socket.socket, began: int, packet: bytes) -> None:
        self.sock = sock
        self.state = _CONNECTING
        self.began = began
        self.packet = packet
        self.got = b""


class Storm:
    def __init__(
        self, host: str, port: int, packets: list[bytes], max_pending: int, timeout_ns: int
    ) -> None:
        self.family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.address = (host, port)
        socket.inet_pton(self.family, host)  # OSError: not an address
        self.packets = packets
        self.max_pending = max(1, max_pending)
        self.timeout_ns = timeout_ns
        self.allowed = 0
        self.opened = 0
        self.pending = 0
        self.connected = 0
        self.failed = 0
        self.dropped = 0
        self.last_connack_ns = 0
        self.latencies: list[int] = []  # ns from the TCP connect to the CONNACK, per held
        self.failures = {CONNECT_ERROR: 0, CLOSED: 0, TIMED_OUT: 0, REFUSED: 0, MALFORMED: 0}
        self.first_error: tuple[int, int] | None = None
        self._epoll = select.epoll()
        self._conns: dict[int, _Conn] = {}  # every open connection, by descriptor
        self._waiting: dict[int, _Conn] = {}  # the handshakes in flight, oldest first

    def fileno(self) -> int:
        return self._epoll.fileno()

    @property
    def finished(self) -> bool:
        """Every connection opened and its handshake over."""
        return self.connected + self.failed == len(self.packets)

    def allow(self, n: int) -> None:
        """Lets the first ``n`` connections be opened (a paced storm raises it over time)."""
        self.allowed = min(max(n, self.allowed), len(self.packets))
        self._fill()

    def step(self) -> None:
        """Handles every ready event, ends handshakes past the timeout, opens what it may."""
        while True:
            events = self._epoll.poll(0, _BATCH)
            for fd, mask in events:
                conn = self._conns.get(fd)
                if conn is not None:
                    self._ready(fd, conn, mask)
            if len(events) < _BATCH:
                break
        self._expire(time.monotonic_ns())
        self._fill()

    def ping(self) -> None:
        self._send_held(PINGREQ)

    def close(self) -> None:
        self._send_held(DISCONNECT)
        for conn in self._conns.values():
            conn.sock.close()
        self._conns.clear()
        self._waiting.clear()
        self.pending = 0
        self._epoll.close()

    # -- internals

    def _send_held(self, packet: bytes) -> None:
        for conn in self._conns.values():
            if conn.state == _HELD:
                with contextlib.suppress(OSError):  # the broker closed it: step() counts that
                    conn.sock.send(packet)

    def _fill(self) -> None:
        while self.opened < self.allowed and self.pending < self.max_pending:
            self._open(self.packets[self.opened])
            self.opened += 1

    def _open(self, packet: bytes) -> None:
        try:
            sock = socket.socket(self.family, socket.SOCK_STREAM)
        except OSError as exc:  # out of descriptors, say
            self._fail(CONNECT_ERROR, exc.errno or 0)
            return
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        began = time.monotonic_ns()
        err = sock.connect_ex(self.address)
        if err not in (0, errno.EINPROGRESS):
            sock.close()
            self._fail(CONNECT_ERROR, err)
            return
        conn = _Conn(sock, began, packet)
        fd = sock.fileno()
        self._conns[fd] = conn
        self._waiting[fd] = conn
        self.pending += 1
        self._epoll.register(fd, select.EPOLLOUT)

    def _ready(self, fd: int, conn: _Conn, mask: int) -> None:
        sock = conn.sock
        if conn.state == _CONNECTING:
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self._end(fd, CONNECT_ERROR, err)
                return
            try:
                sent = sock.send(conn.packet)
            except OSError as exc:
                self._end(fd, CLOSED, exc.errno or 0)
                return
            if sent != len(conn.packet):  # a fresh socket takes a CONNECT whole
                self._end(fd, CLOSED, errno.EAGAIN)
                return
            conn.state = _WAITING
            self._epoll.modify(fd, select.EPOLLIN)
            return
        try:
            data = sock.recv(4096)
        except BlockingIOError:
            return
        except OSError as exc:
            data, err = b"", exc.errno or 0
        else:
            err = 0
        if conn.state == _HELD:
            if not data:
                self.dropped += 1
                self._forget(fd)
            return
        if not data:
            self._end(fd, CLOSED, err)
            return
        conn.got += data
        status = connack_status(conn.got)
        if status is None:
            return
        if status[0]:
            self._end(fd, *status)
            return
        now = time.monotonic_ns()
        conn.state = _HELD
        conn.got = b""
        del self._waiting[fd]
        self.pending -= 1
        self.connected += 1
        self.latencies.append(now - conn.began)
        self.last_connack_ns = now

    def _expire(self, now: int) -> None:
        for fd, conn in list(self._waiting.items()):
            if now - conn.began < self.timeout_ns:
                break  # the rest are younger
            self._end(fd, TIMED_OUT, 0)

    def _end(self, fd: int, kind: int, value: int) -> None:
        """A handshake failed: counted, closed."""
        del self._waiting[fd]
        self.pending -= 1
        self._forget(fd)
        self._fail(kind, value)

    def _forget(self, fd: int) -> None:
        conn = self._conns.pop(fd)
        self._epoll.unregister(fd)
        conn.sock.close()

    def _fail(self, kind: int, value: int) -> None:
        self.failed += 1
        self.failures[kind] += 1
        if self.first_error is None:
            self.first_error = (kind, value)
