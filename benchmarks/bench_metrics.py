"""What metrics cost the broker: the per-request counter the Kafka dispatch keeps, the
sampled handler timing of the MQTT packet loop and what counting packets by type there
would add, the counts kept per QoS 1 run, the storage engine's metering wrapper, a
``/metrics`` scrape (run on the event loop, so it holds up everything else while it runs)
as sessions, connections and subscriptions grow, and end to end, the MQTT message rate of
a real robustmq-server with and without a scraper reading /metrics ten times a second.

    python benchmarks/bench_metrics.py [--e2e]

prints nanoseconds per Kafka request for the by-API counter, nanoseconds per packet the
handler sampling adds to the packet loop; the medians (of runs alternating, as the machine
may be busy) of nanoseconds per packet of that loop without and with one list add per
packet, which is why the loop's packets are counted by its sampling countdown instead
(``LatencyHistogram.calls``: nothing added), and of nanoseconds per QoS 1 message without
and with the counts connection.py keeps per run; microseconds per append with and without
the storage metering, milliseconds per scrape with the share of one core it takes at a
15 s scrape interval and, with ``--e2e``, the robustmq-bench QoS 1 rates in alternating
rounds. Figures only; no threshold.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import timeit
import urllib.request
from collections import Counter
from types import SimpleNamespace
from typing import Any

from robustmq.broker.mqtt.server import MqttBroker
from robustmq.broker.mqtt.session import Session, SubscriptionOptions
from robustmq.config import MqttConfig
from robustmq.observability.latency import LatencyHistogram
from robustmq.observability.metrics import exposition, registry_for
from robustmq.storage.engine import MemoryConfig, Record
from robustmq.storage.memory import MemoryEngine
from robustmq.storage.metered import MeteredEngine

SCRAPE_INTERVAL = 15.0  # Prometheus' default


class _Transport:
    """A plain TCP transport, as far as a scrape can tell."""

    def get_extra_info(self, name: str, default: object = None) -> object:
        return default


class _Connection:
    """What a scrape reads of a connection."""

    __slots__ = ("connected", "version", "transport")

    def __init__(self, version: int) -> None:
        self.connected = True
        self.version = version
        self.transport = _Transport()


def kafka_counter_ns() -> float:
    """The line KafkaBroker.dispatch runs per answered request."""
    stats: Counter[str] = Counter()
    response = {"error_code": 0, "topics": []}
    n = 1_000_000
    with_counter = timeit.timeit(
        "stats[f\"api {api_key} {response.get('error_code', 0)}\"] += 1",
        globals={"stats": stats, "response": response, "api_key": 0},
        number=n,
    )
    return with_counter / n * 1e9


# The packet loop of MqttConnection._handle_packets around one handler call, without and
# with the sampling it does (a countdown per packet type; one call in 64 timed).
_PLAIN_LOOP = """
for packet in packets:
    handler = handlers.get(packet.packet_type)
    handler(None, packet)
"""
_SAMPLED_LOOP = """
for packet in packets:
    kind = packet.packet_type
    handler = handlers.get(kind)
    left = countdown[kind] - 1
    countdown[kind] = left
    if left:
        handler(None, packet)
    else:
        countdown[kind] = latency.every
        start = time.perf_counter_ns()
        handler(None, packet)
        latency.record(kind, time.perf_counter_ns() - start)
"""


def _sampled_loop(packets: list[Any], handlers: Any, latency: LatencyHistogram) -> None:
    """_SAMPLED_LOOP with its names local, as they are in _handle_packets."""
    countdown = latency.countdown
    for packet in packets:
        kind = packet.packet_type
        handler = handlers.get(kind)
        left = countdown[kind] - 1
        countdown[kind] = left
        if left:
            handler(None, packet)
        else:
            countdown[kind] = latency.every
            start = time.perf_counter_ns()
            handler(None, packet)
            latency.record(kind, time.perf_counter_ns() - start)


def _counted_loop(
    packets: list[Any], handlers: Any, latency: LatencyHistogram, received: list[int]
) -> None:
    """_sampled_loop with a packets-by-type count of one list add per packet."""
    countdown = latency.countdown
    for packet in packets:
        kind = packet.packet_type
        handler = handlers.get(kind)
        received[kind] += 1
        left = countdown[kind] - 1
        countdown[kind] = left
        if left:
            handler(None, packet)
        else:
            countdown[kind] = latency.every
            start = time.perf_counter_ns()
            handler(None, packet)
            latency.record(kind, time.perf_counter_ns() - start)


def handler_sampling_ns() -> tuple[float, float]:
    """(ns per packet of the plain loop, ns per packet of the sampled one)."""
    latency = LatencyHistogram(18, 64)
    packets = [SimpleNamespace(packet_type=3)] * 1000
    names = {
        "packets": packets,
        "handlers": {3: lambda conn, packet: None},
        "countdown": latency.countdown,
        "latency": latency,
        "time": time,
    }
    runs = 2000
    best = []
    for loop in (_PLAIN_LOOP, _SAMPLED_LOOP):
        times = timeit.repeat(loop, globals=names, number=runs // 10, repeat=10)
        best.append(min(times) / (runs // 10) / len(packets) * 1e9)
    return best[0], best[1]


def packet_count_ns(rounds: int = 21) -> tuple[float, float]:
    """Medians of (ns per packet of the sampled loop, the same with the packet count),
    the two measured in alternation so that load from elsewhere hits both alike."""
    latency = LatencyHistogram(18, 64)
    packets = [SimpleNamespace(packet_type=3)] * 1000
    handlers = {3: lambda conn, packet: None}
    received = [0] * 18
    number = 100
    runs: tuple[list[float], list[float]] = ([], [])
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(number):
            _sampled_loop(packets, handlers, latency)
        runs[0].append((time.perf_counter() - start) / number / len(packets) * 1e9)
        start = time.perf_counter()
        for _ in range(number):
            _counted_loop(packets, handlers, latency, received)
        runs[1].append((time.perf_counter() - start) / number / len(packets) * 1e9)
    return statistics.median(runs[0]), statistics.median(runs[1])


class _Conn:
    __slots__ = ("broker",)

    def __init__(self, broker: MqttBroker) -> None:
        self.broker = broker


def _qos1_run_uncounted(self: _Conn, run: Any, acks: Any) -> None:
    broker = self.broker
    if broker is None or run.qos != 1:
        raise AssertionError


def _qos1_run_counted(self: _Conn, run: Any, acks: Any) -> None:
    """What connection.py adds per QoS 1 run: the run's PUBLISHes on the publisher's side
    (also its messages and PUBACKs, see counters.py), the PUBACKs on the subscriber's."""
    broker = self.broker
    broker.counters.run_publishes[run.qos] += run.count
    self.broker.counters.packets_received[acks.ack_type] += len(acks.packet_ids)
    if broker is None or run.qos != 1:
        raise AssertionError


def qos1_run_counts_ns(run_size: int = 10, rounds: int = 21) -> tuple[float, float]:
    """Medians of ns per QoS 1 message (in runs of ``run_size``, one subscriber) without
    and with the counting connection.py does per run, measured in alternation."""
    conn = _Conn(MqttBroker(MqttConfig()))
    run = SimpleNamespace(qos=1, count=run_size)
    acks = SimpleNamespace(ack_type=4, packet_ids=list(range(run_size)))
    number = 20_000
    runs: tuple[list[float], list[float]] = ([], [])
    for _ in range(rounds):
        for function, out in zip((_qos1_run_uncounted, _qos1_run_counted), runs, strict=True):
            start = time.perf_counter()
            for _ in range(number):
                function(conn, run, acks)
            out.append((time.perf_counter() - start) / number / run_size * 1e9)
    return statistics.median(runs[0]), statistics.median(runs[1])


def storage_append_us() -> tuple[float, float]:
    """(µs per one-record append to the memory engine, the same through MeteredEngine)."""

    async def run() -> tuple[float, float]:
        engine = await MemoryEngine.open(MemoryConfig())
        metered = MeteredEngine(engine, "memory")
        records = [Record(b"x" * 100)]
        n = 50_000
        out = []
        for target, shard in ((engine, "plain"), (metered, "metered")):
            await engine.create_shard(shard)
            start = time.perf_counter()
            for _ in range(n):
                await target.append(shard, records)
            out.append((time.perf_counter() - start) / n * 1e6)
        await engine.close()
        return out[0], out[1]

    return asyncio.run(run())


def scrape_ms(sessions: int) -> float:
    broker = MqttBroker(MqttConfig())
    for i in range(sessions):
        session = Session(f"client-{i}", 1000, True)
        broker.sessions[session.client_id] = session
        if i % 2 == 0:  # half online
            conn = _Connection((3, 4, 5)[i % 3])
            session.connection = conn  # type: ignore[assignment]
            broker.connections.add(conn)  # type: ignore[arg-type]
        # one subscription each, one in ten shared: the scrape walks them all
        topic_filter = f"$share/g{i % 100}/t/{i}" if i % 10 == 0 else f"t/{i}/#"
        broker.router.subscribe(session, topic_filter, SubscriptionOptions(0, False, False, 0))
        session.persisted = i % 4 == 0
    kafka = SimpleNamespace(
        stats=Counter({f"api {k} 0": 10 for k in range(23)}),
        request_latency=LatencyHistogram(100, 1),
        connections=set(),
        topics=SimpleNamespace(topics={}),
        groups=SimpleNamespace(groups={}),
    )
    for api_key in range(23):
        kafka.request_latency.record(api_key, 250_000)
    for kind in range(1, 16):
        broker.handler_latency.record(kind, 20_000)
    node = SimpleNamespace(mqtt=broker, kafka=kafka, bridges=None, storage=None, meta=None)
    registry = registry_for(node)  # type: ignore[arg-type]
    exposition(registry)
    runs = 5
    start = time.perf_counter()
    for _ in range(runs):
        exposition(registry)
    return (time.perf_counter() - start) / runs * 1e3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bench_rate(mqtt_port: int, seconds: float) -> tuple[float, float]:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "robustmq.cli.bench",
            "mqtt",
            "pub",
            "--port",
            str(mqtt_port),
            "--qos",
            "1",
            "--clients",
            "2",
            "--subs",
            "1",
            "--duration",
            str(seconds),
            "--output",
            "json",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    report = json.loads(out)
    return report["send_rate"], report["recv_rate"]


def _scrape(http_port: int, stop: threading.Event, done: list[int]) -> None:
    """Reads /metrics ten times a second until ``stop``; appends one item per scrape."""
    while not stop.wait(0.1):
        urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=5).read()
        done.append(1)


def end_to_end(rounds: int = 3, seconds: float = 4.0) -> None:
    mqtt_port, http_port = _free_port(), _free_port()
    env = dict(
        os.environ,
        ROBUSTMQ_MQTT_WS_PORT="0",
        ROBUSTMQ_KAFKA_PORT="0",
        ROBUSTMQ_MQTT_SYS_INTERVAL="0",
        ROBUSTMQ_MQTT_BIND="127.0.0.1",
        ROBUSTMQ_HTTP_BIND="127.0.0.1",
    )
    with tempfile.TemporaryDirectory() as data:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "robustmq.cli.server",
                "start",
                "--mqtt-port",
                str(mqtt_port),
                "--http-port",
                str(http_port),
                "--data-dir",
                data,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        try:
            assert server.stdout is not None
            line = "-"
            while line and "data directory" not in line:
                line = server.stdout.readline()
            if not line:
                raise SystemExit("robustmq-server did not start")
            for _ in range(rounds):
                for scraping in (False, True):
                    stop = threading.Event()
                    scrapes: list[int] = []
                    scraper = threading.Thread(target=_scrape, args=(http_port, stop, scrapes))
                    if scraping:
                        scraper.start()
                    sent, received = _bench_rate(mqtt_port, seconds)
                    stop.set()
                    if scraping:
                        scraper.join()
                    what = (
                        f"scraping at 10/s ({len(scrapes)} scrapes)" if scraping else "no scraping"
                    )
                    print(
                        f"e2e QoS 1, 2 publishers, 1 subscriber, {what:>30}: "
                        f"sent {sent:9.0f} msg/s, received {received:9.0f} msg/s"
                    )
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=15)


def main() -> None:
    print(f"kafka by-API counter: {kafka_counter_ns():.0f} ns per request")
    plain, sampled = handler_sampling_ns()
    print(
        f"mqtt packet loop: {plain:.1f} ns per packet plain, {sampled:.1f} ns sampled "
        f"(+{sampled - plain:.1f} ns per packet for the handler-time histogram)"
    )
    uncounted, counted = packet_count_ns()
    print(
        f"mqtt packet loop, medians of alternating runs: {uncounted:.1f} ns per packet, "
        f"{counted:.1f} ns with a list add per packet ({counted - uncounted:+.1f} ns per "
        f"packet; not done: the sampling countdown counts them)"
    )
    uncounted, counted = qos1_run_counts_ns()
    print(
        f"mqtt QoS 1 runs of 10, medians of alternating runs: {uncounted:.1f} ns per message, "
        f"{counted:.1f} ns with the per-run counts ({counted - uncounted:+.1f} ns per message)"
    )
    bare, metered = storage_append_us()
    print(
        f"memory engine append: {bare:.2f} us bare, {metered:.2f} us metered "
        f"(+{metered - bare:.2f} us per append for the storage metrics)"
    )
    for sessions in (1_000, 10_000, 100_000):
        ms = scrape_ms(sessions)
        share = ms / 1e3 / SCRAPE_INTERVAL * 100
        print(
            f"scrape with {sessions:>7} sessions ({sessions // 2} connected, one subscription "
            f"each): "
            f"{ms:7.2f} ms, {share:.3f}% of the loop at one scrape per {SCRAPE_INTERVAL:.0f} s"
        )


if __name__ == "__main__":
    main()
    if "--e2e" in sys.argv:
        end_to_end()
