"""robustmq-bench as users run it: the real command against a real broker.

Each test starts ``python -m robustmq.cli.bench mqtt ...`` as a subprocess against our
broker (the ``broker`` fixtures, in-process, on a free port) or a Mosquitto started here,
with short runs (``--count`` or 1-2 s), and checks what a user sees: the exit code, the
JSON report's fields and their consistency, and the error messages. The accounting that a
healthy broker never exercises (gaps, duplicates, reordering) and the histogram's precision
are checked directly against synthetic data and numpy.
"""

from __future__ import annotations

import json
import os
import pickle
import pty
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from robustmq.bench.config import MqttBenchConfig, publishers_heard
from robustmq.bench.histogram import Histogram
from robustmq.bench.payload import HEADER_SIZE, DeliveryTracker
from tests.conftest import free_port
from tests.integration.clients import Paho, wait_until
from tests.integration.test_mqtt_listeners import certs  # noqa: F401  (a fixture)

BENCH = [sys.executable, "-m", "robustmq.cli.bench", "mqtt"]
MOSQUITTO = "/usr/sbin/mosquitto"
LATENCY_KEYS = {"p50", "p90", "p99", "p999", "max", "mean"}


def bench(
    *args: str, timeout: float = 60, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BENCH, *args], capture_output=True, text=True, timeout=timeout, env=env)


def bench_json(*args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    done = bench(*args, "--output", "json", env=env)
    assert done.returncode == 0, done.stderr
    # Not a terminal: no progress line may pollute stderr.
    assert done.stderr == ""
    report: dict[str, Any] = json.loads(done.stdout)
    return report


# ---------------------------------------------------------------------------- histogram


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_histogram_percentiles_match_numpy_within_bucket_precision(seed):
    rng = np.random.default_rng(seed)
    values = np.concatenate(
        [
            rng.lognormal(11, 1.5, 50_000),
            rng.uniform(0, 300, 5_000),  # the exact small-value buckets
            rng.exponential(2e6, 20_000),
        ]
    ).astype(np.int64)
    histogram = Histogram()
    for part in np.array_split(values, 7):
        histogram.record(part)
    assert histogram.count == len(values)
    for q in (50, 90, 99, 99.9):
        exact = float(np.percentile(values, q, method="inverted_cdf"))
        # A bucket is at most 1/128 of its values wide; its midpoint is within 1/256.
        assert histogram.percentile(q) == pytest.approx(exact, rel=1 / 200, abs=1)
    summary = histogram.summary()
    assert summary["max"] == values.max()
    assert summary["mean"] == pytest.approx(values.mean(), rel=1e-6)


def test_histograms_merge_like_one_and_survive_pickling():
    rng = np.random.default_rng(7)
    a, b = rng.integers(0, 10**7, 1000), rng.integers(10**5, 10**9, 3000)
    left, right, whole = Histogram(), Histogram(), Histogram()
    left.record(a)
    right.record(b)
    whole.record(np.concatenate([a, b]))
    left.merge(pickle.loads(pickle.dumps(right)))
    assert (left.counts == whole.counts).all()
    assert (left.count, left.min, left.max, left.total) == (
        whole.count,
        whole.min,
        whole.max,
        whole.total,
    )
    assert left.summary() == whole.summary()
    assert Histogram().summary()["p99"] == 0.0


# ---------------------------------------------------------------------------- accounting


def test_tracker_counts_a_gap_a_duplicate_and_a_reordering():
    tracker = DeliveryTracker()
    key = (5 << 32) | 1
    keys = np.full(7, key, dtype=np.uint64)
    # 3 is lost, 2 comes twice, 4 arrives after 5.
    tracker.add(keys, np.array([0, 1, 2, 2, 5, 4, 6]))
    assert (tracker.received, tracker.duplicates, tracker.reordered) == (7, 1, 1)
    assert tracker.gaps() == 1
    state = tracker.publishers[key]
    assert state.distinct(7) == 6
    # Across batches: 6 again is a duplicate, 3 late is a reordering and fills the gap.
    tracker.add(keys[:2], np.array([6, 3]))
    assert (tracker.duplicates, tracker.reordered, tracker.gaps()) == (2, 2, 0)


def test_tracker_keeps_publishers_apart_and_merges_shares():
    one, two = DeliveryTracker(), DeliveryTracker()
    k1, k2 = 1, 2
    one.add(np.array([k1, k2, k1, k2], dtype=np.uint64), np.array([0, 0, 1, 2]))
    assert (one.duplicates, one.reordered, one.gaps()) == (0, 0, 1)  # k2 misses 1
    two.add(np.array([k2, k2], dtype=np.uint64), np.array([1, 2]))
    one.merge(two)  # another worker's member of the same shared group also got k2:2
    assert one.received == 6
    assert one.duplicates == 1
    assert one.gaps() == 0


def test_a_late_subscriber_does_not_count_what_came_before_it_as_lost():
    tracker = DeliveryTracker()
    tracker.add(np.array([9, 9, 9], dtype=np.uint64), np.array([1000, 1001, 1003]))
    assert tracker.gaps() == 1


def test_each_subscriber_expects_the_publishers_its_filter_matches():
    def heard(topic: str, sub_topic: str, subs: int = 1) -> dict[Any, list[int]]:
        cfg = MqttBenchConfig(mode="pub", topic=topic, clients=12, subs=subs, sub_topic=sub_topic)
        return publishers_heard(cfg)

    twelve = list(range(12))
    assert heard("a/%i", "a/1") == {("a/1", "0"): [1]}
    assert heard("a/%i", "a/+") == {("a/+", "0"): twelve}
    assert heard("a/%i", "+/1") == {("+/1", "0"): [1]}
    assert heard("a/%i", "a/1/+") == {("a/1/+", "0"): []}
    assert heard("a/%i", "a/%i", subs=2) == {("a/0", "0"): [0], ("a/1", "1"): [1]}
    # A shared group is one receiving unit, whatever its number of members.
    assert heard("a/%i", "$share/g/a/#", subs=3) == {("$share/g/a/#", ""): twelve}
    # MQTT 5.0 §4.7.2: a leading wildcard does not match a '$' topic.
    assert heard("$SYS/%i", "#") == {("#", "0"): []}
    assert heard("$SYS/%i", "$SYS/+") == {("$SYS/+", "0"): twelve}


# ---------------------------------------------------------------------------- pub / sub


def test_qos1_fan_out_delivers_every_message_to_every_matching_subscriber(broker):
    report = bench_json(
        "pub", "--port", str(broker.port), "--clients", "2", "--subs", "3",
        "--topic", "bench/%i", "--sub-topic", "bench/+", "--qos", "1", "--count", "300",
    )  # fmt: skip
    assert report["mode"] == "pub"
    assert report["sent"] == 600
    assert report["acked"] == 600
    assert report["expected"] == 600 * 3
    assert report["received"] == report["sent"] * 3
    assert (report["losses"], report["duplicates"], report["reordered"]) == (0, 0, 0)
    assert set(report["latency_us"]) == LATENCY_KEYS
    assert 0 < report["latency_us"]["p50"] <= report["latency_us"]["p99"]
    assert report["latency_us"]["p99"] <= report["latency_us"]["max"]
    assert report["send_rate"] > 0 and report["recv_rate"] > 0
    assert report["send_MBps"] == pytest.approx(
        report["send_rate"] * report["size"] / 1e6, rel=0.01
    )
    assert not any(report["errors"].values())


@pytest.mark.parametrize("qos", [0, 2])
def test_mqtt5_point_to_point_with_a_large_payload(broker, qos):
    report = bench_json(
        "pub", "--port", str(broker.port), "--version", "5", "--clients", "2", "--subs", "2",
        "--topic", "p2p/%i", "--qos", str(qos), "--size", "5000", "--count", "200",
    )  # fmt: skip
    assert report["mqtt"] == "5.0"
    assert (report["sent"], report["received"], report["losses"]) == (400, 400, 0)
    assert report["acked"] == (400 if qos else 0)
    assert report["latency_us"]["max"] > 0


def test_duration_run_reports_rates_over_the_window(broker):
    report = bench_json(
        "pub", "--port", str(broker.port), "--clients", "2", "--subs", "1",
        "--sub-topic", "bench/#", "--rate", "200", "--duration", "1.5",
    )  # fmt: skip
    assert report["duration_s"] == pytest.approx(1.5, abs=0.05)
    # Paced at 200 msg/s per publisher: about 2 x 200 x 1.5 messages.
    assert 450 <= report["sent"] <= 610
    assert report["send_rate"] == pytest.approx(report["sent"] / report["duration_s"], rel=0.01)
    assert report["received"] == report["sent"]
    assert report["received_window"] <= report["received"]


def test_workers_2_merges_counts_latency_and_losses(broker):
    report = bench_json(
        "pub", "--port", str(broker.port), "--workers", "2", "--clients", "3", "--subs", "2",
        "--sub-topic", "bench/+", "--qos", "1", "--count", "250",
    )  # fmt: skip
    assert report["workers"] == 2
    assert report["sent"] == 750
    assert report["expected"] == 1500
    assert report["received"] == 1500
    assert report["losses"] == 0
    assert report["duplicates"] == 0


def test_a_worker_without_publishers_still_ends_a_count_run(broker):
    # Worker 1 holds only subscriber 1; subscriber 1 hears nobody (bench/1 has no publisher).
    report = bench_json(
        "pub", "--port", str(broker.port), "--workers", "2", "--clients", "1", "--subs", "2",
        "--sub-topic", "bench/%i", "--qos", "1", "--count", "100",
    )  # fmt: skip
    assert (report["sent"], report["received"], report["expected"]) == (100, 100, 100)
    assert report["losses"] == 0


@pytest.mark.parametrize("workers", ["1", "2"])
def test_shared_subscription_group_counts_each_message_once(broker, workers):
    report = bench_json(
        "pub", "--port", str(broker.port), "--version", "5", "--workers", workers,
        "--clients", "2", "--subs", "4", "--sub-topic", "$share/g/bench/#", "--qos", "1",
        "--count", "150",
    )  # fmt: skip
    assert report["sent"] == 300
    assert report["expected"] == 300  # one delivery per message for the whole group
    assert report["received"] == 300
    assert (report["losses"], report["duplicates"]) == (0, 0)


def test_mqtt_3_1(broker):
    report = bench_json(
        "pub", "--port", str(broker.port), "--version", "3.1", "--subs", "1", "--qos", "2",
        "--count", "50",
    )  # fmt: skip
    assert report["mqtt"] == "3.1"
    assert (report["sent"], report["acked"], report["received"]) == (50, 50, 50)


def test_idle_subscribers_stay_connected_past_the_keepalive(broker):
    # Nothing is published: only PINGREQs keep the subscribers alive past 1.5 x keepalive.
    report = bench_json(
        "sub", "--port", str(broker.port), "--clients", "3", "--keepalive", "1",
        "--duration", "2.5",
    )  # fmt: skip
    assert report["received"] == 0
    assert report["errors"]["disconnect"] == 0


def test_sub_alone_accounts_for_a_publisher_in_another_process(broker):
    sub = subprocess.Popen(
        [*BENCH, "sub", "--port", str(broker.port), "--clients", "2", "--topic", "solo/#",
         "--qos", "1", "--count", "400", "--output", "json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert wait_until(lambda: broker.run(lambda: len(broker.broker.router.subscriptions)) == 2)
        Paho(broker.port, "stranger", 4).publish("solo/x", b"not a bench payload", 1)
        published = bench_json(
            "pub", "--port", str(broker.port), "--clients", "2", "--topic", "solo/%i",
            "--qos", "1", "--count", "200",
        )  # fmt: skip
        out, err = sub.communicate(timeout=30)
    finally:
        sub.kill()
    assert sub.returncode == 0, err
    report = json.loads(out)
    assert (report["publishers"], report["subscribers"]) == (0, 2)
    assert report["received"] == 2 * published["sent"] + 2
    assert report["losses"] == 0
    assert report["errors"]["foreign"] == 2  # the stranger's message, at each subscriber


def test_pure_python_codec_backend(broker):
    env = dict(os.environ, ROBUSTMQ_NO_EXTENSIONS="1")
    report = bench_json(
        "pub", "--port", str(broker.port), "--version", "5", "--subs", "2", "--sub-topic",
        "bench/#", "--qos", "2", "--count", "100", env=env,
    )  # fmt: skip
    assert (report["sent"], report["received"], report["losses"]) == (100, 200, 0)


def test_text_report_on_stdout(broker):
    done = bench("pub", "--port", str(broker.port), "--subs", "1", "--count", "50")
    assert done.returncode == 0, done.stderr
    assert f"127.0.0.1:{broker.port}" in done.stdout
    for word in ("sent", "received", "latency", "p99.9", "losses 0", "errors          none"):
        assert word in done.stdout


@pytest.mark.parametrize("workers, duration", [("1", "0"), ("2", "60")])
def test_ctrl_c_stops_and_prints_the_report_so_far(broker, workers, duration):
    # --duration 0 runs until Ctrl-C.
    proc = subprocess.Popen(
        [*BENCH, "pub", "--port", str(broker.port), "--subs", "1", "--rate", "500",
         "--duration", duration, "--workers", workers, "--output", "json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert wait_until(lambda: broker.run(lambda: len(broker.broker.connections)) == 2, 20)
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    report = json.loads(out)
    assert report["interrupted"] is True
    assert report["sent"] > 0
    assert 0 < report["duration_s"] < 30


def test_progress_line_on_a_terminal_only(broker):
    primary, replica = pty.openpty()
    proc = subprocess.Popen(
        [*BENCH, "pub", "--port", str(broker.port), "--subs", "1", "--rate", "100",
         "--duration", "2.5", "--output", "json"],
        stdout=subprocess.PIPE, stderr=replica, text=True,
    )  # fmt: skip
    os.close(replica)
    seen = b""
    while True:
        ready, _, _ = select.select([primary], [], [], 20)
        if not ready:
            break
        try:
            chunk = os.read(primary, 4096)
        except OSError:  # EIO: the process closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    os.close(primary)
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0
    lines = [line for line in seen.decode().split("\r") if "/s" in line]
    assert len(lines) >= 2, seen
    assert "sent" in lines[-1] and "recv" in lines[-1] and "errors 0" in lines[-1]
    assert json.loads(out)["sent"] > 0  # stdout stays the report alone


# ---------------------------------------------------------------------------- tls


def _tls_broker(broker_factory: Any, cert_dir: Path, verify_client: str) -> Any:
    return broker_factory(
        tls_port=free_port(),
        certfile=str(cert_dir / "server.pem"),
        keyfile=str(cert_dir / "server.key"),
        cafile=str(cert_dir / "ca.pem"),
        verify_client=verify_client,
    )


def test_tls_with_a_client_certificate(broker_factory, certs):  # noqa: F811
    tls = _tls_broker(broker_factory, certs, "required")
    report = bench_json(
        "pub", "--port", str(tls.config.tls_port), "--tls", "--cafile", str(certs / "ca.pem"),
        "--certfile", str(certs / "client.pem"), "--keyfile", str(certs / "client.key"),
        "--subs", "1", "--qos", "1", "--count", "100",
    )  # fmt: skip
    assert (report["sent"], report["received"], report["losses"]) == (100, 100, 0)


def test_tls_verification_failure_is_clear_and_insecure_skips_it(broker_factory, certs):  # noqa: F811
    port = str(_tls_broker(broker_factory, certs, "none").config.tls_port)
    done = bench("pub", "--port", port, "--tls", "--count", "1")
    assert done.returncode == 1
    assert f"cannot connect to 127.0.0.1:{port}" in done.stderr
    assert "certificate verify failed" in done.stderr
    report = bench_json(
        "pub", "--port", port, "--tls", "--insecure", "--subs", "1", "--count", "20"
    )
    assert report["received"] == 20
    done = bench("pub", "--port", port, "--tls", "--cafile", "/nonexistent.pem", "--count", "1")
    assert done.returncode == 1
    assert "TLS setup failed" in done.stderr


# ---------------------------------------------------------------------------- conn


def test_conn_opens_holds_and_reports_every_connection(broker):
    report = bench_json(
        "conn", "--port", str(broker.port), "--clients", "300", "--max-pending", "32",
        "--hold", "0.5",
    )  # fmt: skip
    assert (report["connections"], report["connected"], report["failed"]) == (300, 300, 0)
    assert report["connect_rate"] > 0
    assert report["connect_time_s"] > 0
    assert set(report["connack_latency_us"]) == LATENCY_KEYS
    assert report["connack_latency_us"]["p50"] > 0
    assert report["dropped_during_hold"] == 0
    assert wait_until(lambda: broker.run(lambda: len(broker.broker.connections)) == 0)


def test_conn_hold_pings_so_the_broker_keeps_the_connections(broker):
    report = bench_json(
        "conn", "--port", str(broker.port), "--clients", "20", "--keepalive", "1",
        "--hold", "2.5",
    )  # fmt: skip
    assert report["connected"] == 20
    assert report["dropped_during_hold"] == 0
    assert report["errors"]["disconnect"] == 0


def test_conn_pings_while_a_slow_storm_is_still_opening_connections(broker):
    # 4 connections at 1/s with keep alive 1: the first waits 3 s for the last, twice
    # the 1.5 s after which the broker drops a silent client (§3.1.2.10).
    report = bench_json(
        "conn", "--port", str(broker.port), "--clients", "4", "--rate", "1",
        "--keepalive", "1", "--hold", "0.5",
    )  # fmt: skip
    assert report["connected"] == 4
    assert report["dropped_during_hold"] == 0


def test_conn_rate_paces_the_storm(broker):
    report = bench_json("conn", "--port", str(broker.port), "--clients", "40", "--rate", "40")
    assert report["connected"] == 40
    # 40 connections at 40/s: the last starts about 1 s after the first.
    assert report["connect_time_s"] >= 0.9


# ---------------------------------------------------------------------------- errors


def test_unreachable_broker_is_a_clear_error():
    port = free_port()
    done = bench("pub", "--port", str(port), "--count", "1")
    assert done.returncode == 1
    assert f"cannot connect to 127.0.0.1:{port}" in done.stderr
    assert "refused" in done.stderr.lower()
    done = bench("conn", "--port", str(port), "--clients", "5")
    assert done.returncode == 1
    assert f"127.0.0.1:{port}" in done.stderr


def test_a_broker_that_never_answers_connect_times_out_clearly():
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(100)  # the kernel completes the TCP handshakes; nobody reads
        port = silent.getsockname()[1]
        for args in (["pub", "--count", "1"], ["conn", "--clients", "3"]):
            began = time.monotonic()
            done = bench(*args, "--port", str(port), "--connect-timeout", "1")
            assert done.returncode == 1
            assert f"no CONNACK from 127.0.0.1:{port} within 1 s" in done.stderr
            assert time.monotonic() - began < 20


@pytest.mark.parametrize(
    "version, expected",
    [("5", "reason code 0x9c USE_ANOTHER_SERVER"), ("4", "return code 3 SERVER_UNAVAILABLE")],
)
def test_refused_connack_names_the_reason(broker_factory, version, expected):
    redirecting = broker_factory(server_reference="elsewhere:1883")
    for args in (["pub", "--count", "1"], ["conn", "--clients", "3"]):
        done = bench(*args, "--port", str(redirecting.port), "--version", version)
        assert done.returncode == 1
        assert "refused the connection" in done.stderr
        assert expected in done.stderr


@pytest.fixture
def mosquitto_with_password(tmp_path: Path) -> Any:
    if not (os.path.exists(MOSQUITTO) and shutil.which("mosquitto_passwd")):
        pytest.skip("mosquitto is not installed")
    port = free_port()
    passwords = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwords), "bob", "secret"], check=True)
    conf = tmp_path / "mosquitto.conf"
    # Run as root, mosquitto drops to user "mosquitto" before reading the password file,
    # which pytest's 0700 tmp_path hides from it; "user root" keeps the privileges (and is
    # ignored when not root).
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {passwords}\n"
        "log_dest none\nuser root\n"
    )
    proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stderr=subprocess.DEVNULL)
    try:
        assert wait_until(lambda: _listening(port), timeout=10)
        yield port
    finally:
        proc.terminate()
        proc.wait(5)


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), 0.2).close()
        return True
    except OSError:
        return False


def test_mosquitto_refuses_a_wrong_password_and_accepts_the_right_one(mosquitto_with_password):
    port = str(mosquitto_with_password)
    done = bench("pub", "--port", port, "--username", "bob", "--password", "nope", "--count", "1")
    assert done.returncode == 1
    assert "return code 5 NOT_AUTHORIZED" in done.stderr
    done = bench("pub", "--port", port, "--version", "5", "--count", "1")
    assert done.returncode == 1
    assert "reason code 0x87 NOT_AUTHORIZED" in done.stderr
    report = bench_json(
        "pub", "--port", port, "--username", "bob", "--password", "secret", "--subs", "2",
        "--sub-topic", "bench/#", "--qos", "1", "--count", "100",
    )  # fmt: skip
    assert (report["sent"], report["received"], report["expected"]) == (100, 200, 200)
    assert report["losses"] == 0


@pytest.mark.parametrize(
    "args, option",
    [
        (["pub", "--size", str(HEADER_SIZE - 1)], "--size"),
        (["pub", "--qos", "3"], "--qos"),
        (["pub", "--topic", "a/+"], "--topic"),
        (["sub", "--topic", "a/#/b"], "--topic"),
        (["pub", "--count", "5", "--duration", "1"], "--count"),
        (["pub", "--clients", "0"], "--clients"),
        (["conn", "--workers", "0"], "--workers"),
        (["pub", "--version", "6"], "--version"),
        (["pub", "--sub-topic", "bench/#"], "--sub-topic"),
        (["pub", "--subs", "1", "--sub-topic", "a/b#"], "--sub-topic"),
    ],
)
def test_bad_options_are_usage_errors(args, option):
    done = bench(*args, "--port", str(free_port()))
    assert done.returncode == 2
    assert "Usage:" in done.stderr
    assert option in done.stderr
    assert "Traceback" not in done.stderr
