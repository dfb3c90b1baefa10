"""One worker of an MQTT bench run: its share of the clients, in its own event loop.

A worker owns the publishers, subscribers or connections whose index ``i`` has
``i % workers == worker_index``. It walks the run's phases as the coordinator tells it
through its channel (see ``channel.py``): connect and subscribe, report ready; on ``go``
publish until the deadline or the count; report what it sent; on ``drain`` wait for the
outstanding deliveries and acknowledgements; disconnect and send its ``WorkerResult``. A
``conn`` worker instead opens its connections at its share of the rate, holds them with
PINGREQs, then DISCONNECTs. ``stop`` (Ctrl-C, or another worker failed) ends whatever phase
is running and still sends the result so far. Merging the results is ``report.py``'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import socket
import ssl
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from robustmq._core import storm as conn_storm
from robustmq._core.mqtt_spec import MQTT_5, ReasonCode
from robustmq.bench.channel import Channel, Message
from robustmq.bench.config import MqttBenchConfig, UnitId, publishers_heard, unit_id
from robustmq.bench.histogram import Histogram
from robustmq.bench.mqtt_client import (
    BenchClient,
    Counters,
    Publisher,
    Receiver,
    Subscriber,
    connect_packet,
    new_errors,
)
from robustmq.bench.payload import DeliveryTracker, publisher_key
from robustmq.errors import BenchConnackRefused, BenchError

PROGRESS_INTERVAL = 0.5
DRAIN_IDLE = 2.0  # a drain with no new delivery or ack for this long is over
STALL_TIMEOUT = 10.0  # --count: publishing that makes no progress this long ends
WATCHDOG_INTERVAL = 0.1  # how often handshakes are checked against --connect-timeout


@dataclass
class WorkerResult:
    """What one worker measured; ``report.merge`` adds these up."""

    sent: dict[int, int] = field(default_factory=dict)  # publisher key -> messages sent
    acked: int = 0
    received: int = 0
    received_window: int = 0
    errors: Counters = field(default_factory=new_errors)
    latency: Histogram = field(default_factory=Histogram)
    units: dict[UnitId, DeliveryTracker] = field(default_factory=dict)
    connected: int = 0
    connect_time_s: float = 0.0
    connack_latency: Histogram = field(default_factory=Histogram)
    dropped_during_hold: int = 0
    first_error: str = ""


def client_ssl(cfg: MqttBenchConfig) -> ssl.SSLContext | None:
    if cfg.tls is None:
        return None
    tls = cfg.tls
    try:
        context = ssl.create_default_context(cafile=tls.cafile or None)
        if tls.certfile:
            context.load_cert_chain(tls.certfile, tls.keyfile or None)
    except (OSError, ssl.SSLError) as exc:
        raise BenchError(f"TLS setup failed: {exc}") from None
    if tls.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class MqttWorker:
    def __init__(self, cfg: MqttBenchConfig, index: int, channel: Channel) -> None:
        self.cfg = cfg
        self.index = index
        self.channel = channel
        self.result = WorkerResult()
        self.errors = self.result.errors
        self.ssl: ssl.SSLContext | None = None
        self.publishers: list[Publisher] = []
        self.subscribers: list[Subscriber] = []
        self.receivers: dict[UnitId, Receiver] = {}
        self.connections: list[BenchClient] = []
        self.storm: Any = None  # a conn run's plain TCP connections (conn_storm.Storm)
        self.handshakes: dict[BenchClient, tuple[float, asyncio.Task[Any]]] = {}
        self.stopped = asyncio.Event()
        loop = asyncio.get_running_loop()
        self.go: asyncio.Future[float] = loop.create_future()
        self.drain: asyncio.Future[dict[int, int]] = loop.create_future()
        self._waker: asyncio.Future[None] | None = None

    def _mine(self, total: int) -> range:
        return range(self.index, total, self.cfg.workers)

    def _client_id(self, role: str, index: int) -> str:
        return f"rmqb-{self.cfg.run_id:08x}-{role}{index}"

    # ------------------------------------------------------------------ run

    async def run(self) -> None:
        listener = asyncio.create_task(self._listen())
        watchdog = asyncio.create_task(self._watchdog())
        try:
            self.ssl = client_ssl(self.cfg)
            if self.cfg.mode == "conn":
                await self._run_conn()
            else:
                await self._run_pubsub()
            self._close_all()
            self.channel.send(("result", self.result))
        except BenchError as exc:
            self._close_all()
            self.channel.send(("error", str(exc)))
        except Exception as exc:
            # A bug: say so, with the traceback, rather than leave the coordinator waiting.
            self._close_all()
            traceback.print_exc()
            self.channel.send(("error", f"internal error in worker {self.index}: {exc!r}"))
        finally:
            listener.cancel()
            watchdog.cancel()

    async def _listen(self) -> None:
        while True:
            message: Message = await self.channel.recv()
            kind = message[0]
            if kind == "go" and not self.go.done():
                self.go.set_result(message[1])
            elif kind == "drain" and not self.drain.done():
                self.drain.set_result(message[1])
            elif kind == "stop":
                self.stopped.set()
                self._wake_up()

    async def _until(self, future: asyncio.Future[Any] | None, timeout: float | None) -> None:
        """Waits for ``future`` (None: only the timeout) unless stopped first."""
        stop = asyncio.ensure_future(self.stopped.wait())
        waits: set[asyncio.Future[Any]] = {stop}
        if future is not None:
            waits.add(future)
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()

    def _wake_up(self) -> None:
        if self._waker is not None and not self._waker.done():
            self._waker.set_result(None)

    async def _sleep(self, timeout: float | None) -> None:
        """Sleeps until ``timeout``, an ack, a resume_writing or stop, whichever is first."""
        loop = asyncio.get_running_loop()
        self._waker = waker = loop.create_future()
        timer = None
        if timeout is not None:
            timer = loop.call_later(max(timeout, 0.0), self._wake_up)
        await waker
        if timer is not None:
            timer.cancel()

    # ------------------------------------------------------------------ connections

    async def _open(self, client: BenchClient) -> None:
        """TCP (or TLS) connect, CONNECT, CONNACK; BenchError with the reason otherwise.

        ``_watchdog`` enforces --connect-timeout: cheaper than a timer per handshake, which
        matters in a connection storm."""
        cfg = self.cfg
        where = f"{cfg.host}:{cfg.port}"
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        self.handshakes[client] = (time.monotonic() + cfg.connect_timeout, task)
        try:
            await loop.create_connection(lambda: client, cfg.host, cfg.port, ssl=self.ssl)
            connack = await client.connack  # connection_made sent CONNECT
        except asyncio.CancelledError:
            if not client.timed_out:
                raise
            task.uncancel()
            raise BenchError(
                f"cannot connect to {where}: timed out after {cfg.connect_timeout:g} s"
            ) from None
        except OSError as exc:
            if client.timed_out:
                raise BenchError(
                    f"no CONNACK from {where} within {cfg.connect_timeout:g} s"
                ) from None
            if client.transport is None:
                raise BenchError(f"cannot connect to {where}: {exc.strerror or exc}") from None
            raise BenchError(f"{where}: {exc}") from None
        finally:
            del self.handshakes[client]
        if connack.reason_code:
            client.closing = True
            raise BenchConnackRefused(where, cfg.version, connack.reason_code)

    async def _watchdog(self) -> None:
        """Ends the handshakes that passed --connect-timeout."""
        while True:
            await asyncio.sleep(WATCHDOG_INTERVAL)
            now = time.monotonic()
            for client, (deadline, task) in list(self.handshakes.items()):
                if now >= deadline and not client.timed_out:
                    client.timed_out = True
                    if client.transport is None:
                        task.cancel()  # still in the TCP/TLS connect
                    else:
                        client.transport.abort()  # connection_lost fails the CONNACK wait

    async def _open_all(self, clients: list[BenchClient]) -> None:
        pending = asyncio.Semaphore(max(1, self.cfg.max_pending // self.cfg.workers))

        async def one(client: BenchClient) -> None:
            async with pending:
                if not self.stopped.is_set():
                    await self._open(client)

        tasks = [asyncio.create_task(one(c)) for c in clients]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()

    async def _subscribe_all(self) -> None:
        for s in self.subscribers:
            s.write(s.subscribe_packet())
        for s in self.subscribers:
            await self._until(s.suback, self.cfg.connect_timeout)
            if self.stopped.is_set():
                return
            if not s.suback.done():
                raise BenchError(f"no SUBACK for {s.topic_filter!r} within the connect timeout")
            code = s.suback.result().reason_codes[0]
            if code >= 0x80:
                self.errors["sub_rejected"] += 1
                raise BenchError(
                    f"SUBSCRIBE to {s.topic_filter!r} refused: {_code_name(code, self.cfg.version)}"
                )

    def _close_all(self) -> None:
        for client in (*self.publishers, *self.subscribers, *self.connections):
            client.disconnect()
        if self.storm is not None:
            with contextlib.suppress(ValueError, OSError):
                asyncio.get_running_loop().remove_reader(self.storm.fileno())
            self.storm.close()
            self.storm = None

    async def _keepalive(self) -> None:
        """PINGREQ every keepalive/2 on every connection (§3.1.2.10: a subscriber that only
        receives would otherwise be disconnected after 1.5 x keepalive)."""
        if not self.cfg.keepalive:
            return
        while True:
            await asyncio.sleep(self.cfg.keepalive / 2)
            for client in (*self.publishers, *self.subscribers, *self.connections):
                client.ping()
            if self.storm is not None:
                self.storm.ping()

    async def _report_progress(self) -> None:
        while True:
            await asyncio.sleep(PROGRESS_INTERVAL)
            for receiver in self.receivers.values():
                receiver.flush()
            self.channel.send(
                ("progress", self._sent(), self._received(), sum(self.errors.values()))
            )

    def _sent(self) -> int:
        """Messages published; for conn, connections open (what the progress line shows)."""
        held = self.storm.connected if self.storm is not None else 0
        return sum(p.sent for p in self.publishers) + len(self.connections) + held

    def _received(self) -> int:
        return sum(r.received for r in self.receivers.values())

    # ------------------------------------------------------------------ pub / sub

    async def _run_pubsub(self) -> None:
        cfg = self.cfg
        run = cfg.run_id if cfg.publishers else None  # alone, a subscriber takes any run
        for i in self._mine(cfg.subscribers):
            topic_filter = cfg.subscribe_filter(i)
            unit = unit_id(topic_filter, i)
            if unit not in self.receivers:
                self.receivers[unit] = Receiver(self.result.latency, self.errors, run)
            receiver = self.receivers[unit]
            client_id = self._client_id("s", i)
            self.subscribers.append(Subscriber(cfg, client_id, self.errors, topic_filter, receiver))
        for i in self._mine(cfg.publishers):
            client_id = self._client_id("p", i)
            self.publishers.append(Publisher(cfg, client_id, self.errors, cfg.publish_topic(i), i))
        await self._open_all(list(self.subscribers))
        await self._subscribe_all()
        await self._open_all(list(self.publishers))
        self.channel.send(("ready",))
        await self._until(self.go, None)
        if self.stopped.is_set():
            self._finish_pubsub()
            return
        deadline = self.go.result()
        tasks = [
            asyncio.create_task(self._keepalive()),
            asyncio.create_task(self._report_progress()),
        ]
        try:
            await self._publish_phase(deadline)
            if deadline:
                self.result.received_window = self._received()
            sent = {publisher_key(cfg.run_id, p.index): p.sent for p in self.publishers}
            self.channel.send(("published", sent))
            await self._until(self.drain, None)
            if not deadline:
                self.result.received_window = self._received()
            if self.drain.done():
                await self._drain_phase(self.drain.result())
        finally:
            for task in tasks:
                task.cancel()
        self._finish_pubsub()

    async def _publish_phase(self, deadline: float) -> None:
        cfg = self.cfg
        if cfg.rate and self.publishers:
            await self._paced(deadline)
            return
        for p in self.publishers:
            p.start(cfg.count, paced=False)
        try:
            if cfg.count:
                progress, since = -1, time.monotonic()
                while not self.stopped.is_set() and not self._counted():
                    await self._until(None, 0.01)
                    now, sent = time.monotonic(), self._sent()
                    if sent != progress:
                        progress, since = sent, now
                    elif self.publishers and now - since >= STALL_TIMEOUT:
                        break  # the broker stopped taking messages; report what was sent
            else:
                await self._until(None, deadline - time.monotonic() if deadline else None)
        finally:
            for p in self.publishers:
                p.stop()

    def _counted(self) -> bool:
        """Whether every publisher sent (pub), or every subscriber received (sub), --count
        messages. A pub worker with no publisher of its own is done at once."""
        count = self.cfg.count
        if self.cfg.mode == "sub":
            return all(s.received >= count for s in self.subscribers)
        return all(p.sent >= count or p.lost.done() for p in self.publishers)

    async def _paced(self, deadline: float) -> None:
        """--rate: one loop sends each publisher what is due, so rates hold for any count
        of clients."""
        cfg = self.cfg
        rate = cfg.rate
        start = time.monotonic()
        active = list(self.publishers)
        for p in active:
            p.start(cfg.count, paced=True)
            p.on_writable = self._wake_up
        while active and not self.stopped.is_set():
            now = time.monotonic()
            if deadline and now >= deadline:
                break
            wrote = False
            next_due = math.inf
            for p in active:
                room = p.room()
                if cfg.count:
                    room = min(room, cfg.count - p.sent)
                due = int(rate * (now - start)) + 1 - p.sent
                if due <= 0:
                    next_due = min(next_due, start + p.sent / rate)
                    continue
                room = min(room, due)
                if room > 0:
                    p.send(room)
                    wrote = True
            if cfg.count:
                active = [p for p in active if p.sent < cfg.count]
            if wrote:
                await asyncio.sleep(0)
                continue
            wake_at = min(next_due, deadline or math.inf)
            await self._sleep(None if wake_at == math.inf else wake_at - now)
        for p in self.publishers:
            p.stop()

    async def _drain_phase(self, sent: dict[int, int]) -> None:
        """Waits until every expected delivery and ack is in, DRAIN_IDLE passes without
        progress, or --drain seconds are over."""
        cfg = self.cfg
        heard = publishers_heard(cfg)
        expected = {
            unit: sum(sent.get(publisher_key(cfg.run_id, p), 0) for p in heard[unit])
            for unit in self.receivers
        }
        start = last_change = time.monotonic()
        last = (-1, -1)
        while not self.stopped.is_set():
            done = all(r.received >= expected[u] for u, r in self.receivers.items()) and all(
                p.outstanding == 0 or p.lost.done() for p in self.publishers
            )
            now = time.monotonic()
            state = (self._received(), sum(p.acked for p in self.publishers))
            if state != last:
                last, last_change = state, now
            if done or now - last_change >= DRAIN_IDLE or now - start >= cfg.drain:
                return
            await self._until(None, 0.02)

    def _finish_pubsub(self) -> None:
        result = self.result
        for unit, receiver in self.receivers.items():
            receiver.flush()
            result.units[unit] = receiver.tracker
        result.sent = {publisher_key(self.cfg.run_id, p.index): p.sent for p in self.publishers}
        result.acked = sum(p.acked for p in self.publishers)
        result.received = self._received()

    # ------------------------------------------------------------------ conn

    async def _run_conn(self) -> None:
        cfg = self.cfg
        address = await self._storm_address()
        self.channel.send(("ready",))
        await self._until(self.go, None)
        if self.stopped.is_set():
            return
        if address is not None:
            await self._run_storm(address)
            return
        latencies: list[int] = []
        rate = cfg.rate / cfg.workers
        start = time.monotonic()
        last_connack = start
        # --max-pending lanes, each opening the next connection as soon as its previous
        # handshake is over: no task or semaphore per connection.
        todo = enumerate(self._mine(cfg.clients))

        async def lane() -> None:
            nonlocal last_connack
            for n, index in todo:
                if rate:
                    await self._until(None, start + n / rate - time.monotonic())
                if self.stopped.is_set():
                    return
                client = BenchClient(cfg, self._client_id("c", index), self.errors)
                began = time.perf_counter_ns()
                try:
                    await self._open(client)
                except BenchError as exc:
                    self.errors["connect"] += 1
                    self.result.first_error = self.result.first_error or str(exc)
                    client.disconnect()
                    continue
                latencies.append(time.perf_counter_ns() - began)
                last_connack = time.monotonic()
                self.connections.append(client)

        lanes = max(1, cfg.max_pending // cfg.workers)
        tasks = [asyncio.create_task(lane()) for _ in range(min(lanes, cfg.clients))]
        progress = asyncio.create_task(self._report_progress())
        # Keep alive runs from each CONNECT: a slow storm must not lose its first ones.
        pinger = asyncio.create_task(self._keepalive())
        try:
            await asyncio.gather(*tasks)
            self.result.connected = len(self.connections)
            self.result.connect_time_s = last_connack - start
            self.result.connack_latency.record(np.array(latencies, dtype=np.int64))
            self.channel.send(("published", {}))
            if not self.connections and self.result.first_error:
                raise BenchError(self.result.first_error)
            if cfg.hold:
                await self._until(None, cfg.hold)
        finally:
            pinger.cancel()
            progress.cancel()
        self.result.dropped_during_hold = sum(
            1 for c in self.connections if c.lost.done() and not c.closing
        )
        for client in self.connections:
            client.disconnect()
        await asyncio.wait([c.lost for c in self.connections] or [_done()], timeout=2.0)
        self.connections = []

    async def _storm_address(self) -> str | None:
        """The broker's IP address when this conn run can go through ``conn_storm`` (plain
        TCP), else None: TLS handshakes take the event loop's transports."""
        if self.ssl is not None:
            return None
        loop = asyncio.get_running_loop()
        try:
            found = await loop.getaddrinfo(self.cfg.host, self.cfg.port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise BenchError(f"cannot resolve {self.cfg.host!r}: {exc}") from None
        for family, *_, sockaddr in found:
            host = str(sockaddr[0])
            with contextlib.suppress(OSError):  # a scoped IPv6 address ("fe80::1%eth0")
                socket.inet_pton(family, host)
                return host
        return None

    async def _run_storm(self, host: str) -> None:
        """The conn run over plain TCP: every handshake in ``conn_storm``, none in Python."""
        cfg = self.cfg
        loop = asyncio.get_running_loop()
        mine = self._mine(cfg.clients)
        packets = [connect_packet(cfg, self._client_id("c", i)) for i in mine]
        lanes = max(1, cfg.max_pending // cfg.workers)
        storm = conn_storm.Storm(host, cfg.port, packets, lanes, int(cfg.connect_timeout * 1e9))
        self.storm = storm
        over = loop.create_future()

        def step() -> None:
            try:
                storm.step()
            except OSError as exc:  # its epoll instance failed: no handshake can go on
                if not over.done():
                    over.set_exception(BenchError(f"connection storm failed: {exc}"))
                return
            self.errors["connect"] = storm.failed
            if storm.finished and not over.done():
                over.set_result(None)

        async def pace() -> None:
            """Lets the connections open at their share of --rate (0: all at once)."""
            rate = cfg.rate / cfg.workers
            while storm.allowed < len(packets):
                storm.allow(
                    len(packets) if not rate else int((time.monotonic() - start) * rate) + 1
                )
                step()
                await asyncio.sleep(max(1 / rate, 0.001) if rate else WATCHDOG_INTERVAL)
            while True:  # the timeouts of the handshakes in flight
                await asyncio.sleep(WATCHDOG_INTERVAL)
                step()

        start = time.monotonic()
        start_ns = time.monotonic_ns()
        loop.add_reader(storm.fileno(), step)
        pacer = asyncio.create_task(pace())
        progress = asyncio.create_task(self._report_progress())
        pinger = asyncio.create_task(self._keepalive())  # keep alive runs from each CONNECT
        try:
            step()
            await self._until(over, None)
            if over.done():
                over.result()  # raises what ended the storm, if anything did
            self.result.connected = storm.connected
            if storm.last_connack_ns:
                self.result.connect_time_s = (storm.last_connack_ns - start_ns) / 1e9
            self.result.connack_latency.record(np.array(storm.latencies, dtype=np.int64))
            if storm.first_error is not None:
                self.result.first_error = self._storm_error(*storm.first_error)
            self.channel.send(("published", {}))
            if not storm.connected and self.result.first_error:
                raise BenchError(self.result.first_error)
            if cfg.hold:
                await self._until(None, cfg.hold)
            storm.step()
            self.result.dropped_during_hold = storm.dropped
            self.errors["disconnect"] += storm.dropped
        finally:
            pacer.cancel()
            pinger.cancel()
            progress.cancel()
            loop.remove_reader(storm.fileno())
            storm.close()
            self.storm = None

    def _storm_error(self, kind: int, value: int) -> str:
        """The message of a failed handshake, as the event loop's path words it."""
        cfg = self.cfg
        where = f"{cfg.host}:{cfg.port}"
        if kind == conn_storm.CONNECT_ERROR:
            return f"cannot connect to {where}: {os.strerror(value)}"
        if kind == conn_storm.CLOSED:
            reason = f": {os.strerror(value)}" if value else ""
            return f"{where}: connection closed before CONNACK{reason}"
        if kind == conn_storm.TIMED_OUT:
            return f"no CONNACK from {where} within {cfg.connect_timeout:g} s"
        if kind == conn_storm.REFUSED:
            return str(BenchConnackRefused(where, cfg.version, value))
        return f"{where}: malformed packet from the broker: no CONNACK (first byte {value:#04x})"


def _done() -> asyncio.Future[None]:
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    future.set_result(None)
    return future


def _code_name(code: int, version: int) -> str:
    if version == MQTT_5:
        with contextlib.suppress(ValueError):
            return f"reason code {code:#04x} {ReasonCode(code).name}"
        return f"reason code {code:#04x}"
    return f"return code {code:#04x}"


async def run_worker(cfg: MqttBenchConfig, index: int, channel: Channel) -> None:
    await MqttWorker(cfg, index, channel).run()
