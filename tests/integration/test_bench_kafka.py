"""robustmq-bench kafka as users run it: the real command against a real broker; and
benchmarks/bench_kafka.py's segment engine vs raw disk comparison, briefly.

One ``robustmq-server start --kafka-port P`` process (memory storage, free ports) serves the
module; each test runs ``python -m robustmq.cli.bench kafka ...`` as a subprocess with
short runs and checks what a user sees: exit codes, the JSON report's fields and their
consistency (every record produced received once), error messages naming the broker or
the Kafka error, usage errors. confluent-kafka reads back what the tool produced, so the
record batches are Kafka's format and not only ours. The batch builder and the record
walker are also checked directly against the codec. The last tests run
``benchmarks/bench_kafka.py --ratio-only`` with 8 MiB per side (it starts its own two
segment brokers): the three comparisons and the broker capacity lines are printed and
agree with themselves, and bad options are usage errors.
"""

from __future__ import annotations

import json
import os
import re
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from robustmq._core import kafka
from robustmq._core import segments as segment_io
from robustmq.bench.kafka_client import BatchBuilder, new_errors, value_heads
from robustmq.bench.kafka_config import KafkaBenchConfig
from robustmq.bench.payload import MAGIC, parse_headers
from tests.conftest import free_port

ck = pytest.importorskip("confluent_kafka")

BENCH = [sys.executable, "-m", "robustmq.cli.bench", "kafka"]
BENCHMARKS = os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks")
SERVER = [sys.executable, "-m", "robustmq.cli.server"]
LATENCY_KEYS = {"p50", "p90", "p99", "p999", "max", "mean"}


@pytest.fixture(scope="module")
def kafka_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    port = free_port()
    env = dict(os.environ)
    env.update(
        ROBUSTMQ_KAFKA_BIND="127.0.0.1", ROBUSTMQ_HTTP_PORT="0", ROBUSTMQ_CLUSTER_GRPC_PORT="0"
    )
    data = tmp_path_factory.mktemp("bench-kafka")
    proc = subprocess.Popen(
        [*SERVER, "start", "--mqtt-port", "0", "--ws-port", "0", "--kafka-port", str(port)]
        + ["--data-dir", str(data), "--storage", "memory"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    lines = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line or "data directory" in line:
            break
        lines.append(line)
    assert f"robustmq: kafka listening on 127.0.0.1:{port}\n" in lines, lines
    try:
        yield port
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0


def bench(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BENCH, *args], capture_output=True, text=True, timeout=timeout)


def bench_json(*args: str) -> dict[str, Any]:
    done = bench(*args, "--output", "json")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # not a terminal: no progress line
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def assert_every_record_once(report: dict[str, Any], sent: int) -> None:
    assert report["sent"] == sent
    assert report["acked"] == sent
    assert report["expected"] == sent
    assert report["received"] == sent
    assert (report["losses"], report["duplicates"]) == (0, 0)
    assert not any(report["errors"].values()), report["errors"]


# ---------------------------------------------------------------------------- runs


def test_produce_count_with_consume_gets_every_record_once(kafka_port):
    report = bench_json(
        "produce", "--port", str(kafka_port), "--topic", "once", "--partitions", "3",
        "--clients", "2", "--count", "3000", "--batch-bytes", "20000",
        "--consume", "--consumers", "2",
    )  # fmt: skip
    assert_every_record_once(report, 6000)
    assert report["partitions"] == 3
    assert (report["producers"], report["consumers"], report["workers"]) == (2, 2, 1)
    assert (report["mode"], report["protocol"], report["topic"]) == ("produce", "kafka", "once")
    assert report["received_window"] == 6000
    assert report["send_rate"] > 0 and report["recv_MBps"] > 0
    for key in ("latency_us", "produce_latency_us"):
        assert set(report[key]) == LATENCY_KEYS
        assert 0 < report[key]["p50"] <= report[key]["p99"] <= report[key]["max"]
    assert report["interrupted"] is False


def test_two_workers_merge_their_producers_and_consumers(kafka_port):
    report = bench_json(
        "produce", "--bootstrap", f"127.0.0.1:{kafka_port}", "--topic", "merged",
        "--partitions", "4", "--workers", "2", "--clients", "3", "--count", "1500",
        "--consume", "--consumers", "2", "--acks", "all", "--compression", "gzip",
    )  # fmt: skip
    assert report["workers"] == 2
    assert report["acks"] == -1 and report["compression"] == "gzip"
    assert_every_record_once(report, 4500)


def test_paced_producers_never_run_ahead_of_the_rate(kafka_port):
    report = bench_json(
        "produce", "--port", str(kafka_port), "--topic", "paced", "--rate", "400",
        "--duration", "1", "--linger-ms", "20", "--consume",
    )  # fmt: skip
    assert 0 < report["sent"] <= 400 * 1 + 1
    assert_every_record_once(report, report["sent"])


def test_acks_0_produces_without_answers(kafka_port):
    report = bench_json(
        "produce", "--port", str(kafka_port), "--topic", "fire", "--acks", "0",
        "--count", "2000", "--batch-bytes", "10000", "--consume",
    )  # fmt: skip
    assert (report["sent"], report["acked"], report["received"]) == (2000, 0, 2000)
    assert (report["losses"], report["duplicates"]) == (0, 0)


def test_text_report(kafka_port):
    done = bench("produce", "--port", str(kafka_port), "--topic", "text", "--count", "100",
                 "--consume")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"robustmq-bench kafka produce  127.0.0.1:{kafka_port}")
    assert "losses 0  duplicates 0" in done.stdout
    assert "errors          none" in done.stdout


def test_consume_with_a_group_resumes_where_it_committed(kafka_port):
    port = str(kafka_port)
    bench_json("produce", "--port", port, "--topic", "resume", "--partitions", "2",
               "--count", "800")  # fmt: skip
    args = ("consume", "--port", port, "--topic", "resume", "--offset-reset", "earliest")
    first = bench_json(*args, "--group", "g", "--clients", "2", "--duration", "1.5")
    assert (first["received"], first["expected"], first["losses"]) == (800, 800, 0)
    assert first["duplicates"] == 0
    assert first["latency_us"]["p50"] > 0
    again = bench_json(*args, "--group", "g", "--duration", "0.5")
    assert again["received"] == 0
    other = bench_json(*args, "--group", "h", "--duration", "1.5")
    assert other["received"] == 800


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_what_the_tool_produces_is_readable_by_confluent_kafka(kafka_port, compression):
    topic = f"readable-{compression}"
    report = bench_json(
        "produce", "--port", str(kafka_port), "--topic", topic, "--partitions", "1",
        "--count", "500", "--size", "64", "--batch-bytes", "8000",
        "--compression", compression,
    )  # fmt: skip
    assert report["acked"] == 500
    consumer = ck.Consumer(
        {
            "bootstrap.servers": f"127.0.0.1:{kafka_port}",
            "group.id": "reader",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    got = []
    deadline = time.monotonic() + 30
    while len(got) < 500 and time.monotonic() < deadline:
        m = consumer.poll(0.2)
        if m is not None:
            assert m.error() is None, m.error()
            got.append(m)
    consumer.close()
    assert [m.offset() for m in got] == list(range(500))
    assert all(m.key() is None and len(m.value()) == 64 for m in got)
    headers = parse_headers(b"".join(m.value()[:24] for m in got))
    assert (headers["magic"] == MAGIC).all()
    assert len(set(headers["run"].tolist())) == 1
    assert headers["seq"].tolist() == list(range(500))
    now_ms = time.time() * 1000
    assert all(now_ms - 60_000 < m.timestamp()[1] <= now_ms for m in got)


# ---------------------------------------------------------------------------- errors


def test_an_unreachable_broker_is_named_and_fails():
    port = free_port()
    done = bench("produce", "--port", str(port), "--count", "10")
    assert done.returncode == 1
    assert f"cannot connect to 127.0.0.1:{port}" in done.stderr


def test_a_kafka_error_is_reported_by_name(kafka_port):
    done = bench("consume", "--port", str(kafka_port), "--topic", "missing", "--duration", "1")
    assert done.returncode == 1
    assert "UNKNOWN_TOPIC_OR_PARTITION (Kafka error 3)" in done.stderr
    assert f"127.0.0.1:{kafka_port}" in done.stderr


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["produce", "--acks", "2"], "--acks"),
        (["produce", "--size", "10"], "--size"),
        (["produce", "--count", "5", "--duration", "1"], "--count"),
        (["produce", "--topic", "no spaces"], "--topic"),
        (["produce", "--compression", "snappy"], "--compression"),
        (["produce", "--rate", "-1"], "--rate"),
        (["produce", "--partitions", "-2"], "--partitions"),
        (["produce", "--bootstrap", "nohost"], "--bootstrap"),
        (["produce", "--bootstrap", "h:1", "--port", "2"], "--bootstrap"),
        (["consume", "--offset-reset", "middle"], "--offset-reset"),
        (["consume", "--workers", "0"], "--workers"),
    ],
)
def test_bad_options_are_usage_errors(args, option):
    done = bench(*args)
    assert done.returncode == 2, done.stderr
    assert option in done.stderr
    assert "Traceback" not in done.stderr


# ---------------------------------------------------------------------------- batches


@pytest.mark.parametrize("shaped", [True, False], ids=["numpy", "walked"])
def test_batches_are_valid_v2_and_read_back_to_their_headers(shaped):
    cfg = KafkaBenchConfig(mode="produce", size=40, batch_bytes=4000, run_id=7)
    builder = BatchBuilder(cfg, 3)
    n = builder.max_records
    sent = np.arange(n, dtype=np.int64) + 1_700_000_000_000_000_000
    batch = builder.build(100, sent)
    (h,) = kafka.parse_batches(batch)  # CRC32C, lengths and counts checked
    assert (h.record_count, h.last_offset_delta, h.magic, h.compression) == (n, n - 1, 2, 0)
    stored = bytearray(batch)
    struct.pack_into(">q", stored, 0, 50)  # the broker's base offset
    if not shaped:
        # The last record's timestampDelta becomes 1 (zigzag 2): not the bench's shape, so
        # the records are walked one by one.
        last = 61 + int(builder.ends[n - 2])
        assert stored[last + 2] == 0
        stored[last + 2] = 2
        struct.pack_into(">I", stored, 17, segment_io.crc32c(bytes(stored[21:])))
    layouts: dict[int, Any] = {}
    heads, next_offset = value_heads(bytes(stored), 50 + n // 2, new_errors(), layouts)
    records = np.frombuffer(bytes(stored[61:]), dtype=np.uint8)
    assert (layouts[40].heads(records, n, 0) is not None) == shaped
    assert next_offset == 50 + n
    headers = parse_headers(heads)
    # Records before the fetch offset are skipped, as Kafka consumers do.
    assert headers["seq"].tolist() == list(range(100 + n // 2, 100 + n))
    assert headers["sent_ns"].tolist() == sent[n // 2 :].tolist()
    assert set(headers["publisher"].tolist()) == {3} and set(headers["run"].tolist()) == {7}


# ---------------------------------------------------------------- bench_kafka.py


RATIO_ROW = re.compile(
    r"^(page cache|durable|per request) +\S.*?  +([\d,]+)"  # raw disk, its MB/s
    r"  +\S.*?  +([\d,]+)"  # segment engine, its MB/s
    r"  +(\d+)% \(runs (\d+)%\)$",  # median ratio, the one run's ratio
    re.M,
)


@pytest.mark.parametrize("client", ["bench", "confluent"])
def test_segment_vs_raw_disk_prints_three_like_for_like_comparisons(client):
    done = subprocess.run(
        [sys.executable, os.path.join(BENCHMARKS, "bench_kafka.py"), "--ratio-only",
         "--disk-runs", "1", "--disk-mib", "8", "--settle", "0", "--ratio-producers", "1",
         "--ratio-client", client],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    rows = {m[0]: m[1:] for m in RATIO_ROW.findall(done.stdout)}
    assert list(rows) == ["page cache", "durable", "per request"], done.stdout
    for raw, seg, ratio, run_ratio in rows.values():
        raw_mbs, seg_mbs = int(raw.replace(",", "")), int(seg.replace(",", ""))
        assert raw_mbs > 0 and seg_mbs > 0
        assert ratio == run_ratio  # one run: its ratio is the median
        assert abs(int(ratio) - 100 * seg_mbs / raw_mbs) <= 1 + 100 / raw_mbs
    capacity = re.findall(r"^broker capacity, fsync=\"(\w+)\": ([\d,]+) MB per", done.stdout, re.M)
    assert [name for name, _ in capacity] == ["interval", "always"]
    assert all(int(mbs.replace(",", "")) > 0 for _, mbs in capacity)
    assert f"producers: {'robustmq-bench' if client == 'bench' else '1 confluent-kafka'}" in (
        done.stdout
    )


@pytest.mark.parametrize(
    "args",
    [
        ["--disk-mib", "0"],
        ["--ratio-producers", "0"],
        ["--disk-runs", "0"],
        ["--settle", "-1"],
        ["--ratio-client", "kafka-python"],
    ],
)
def test_segment_vs_raw_disk_bad_options_are_usage_errors(args):
    done = subprocess.run(
        [sys.executable, os.path.join(BENCHMARKS, "bench_kafka.py"), "--ratio-only", *args],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert args[0] in done.stderr
    assert "Traceback" not in done.stderr
