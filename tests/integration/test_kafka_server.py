"""The Kafka listener as users run it: ``robustmq-server start --kafka-port P`` as a real
process, with the ``segment`` engine surviving a restart and ``memory`` as the default.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import free_port

ck = pytest.importorskip("confluent_kafka")

SERVER = [sys.executable, "-m", "robustmq.cli.server"]
TIMEOUT = 30.0


def _start(data_dir: str, kafka_port: int, *args: str) -> tuple[subprocess.Popen, list[str]]:
    env = dict(os.environ)
    env.update(
        ROBUSTMQ_KAFKA_BIND="127.0.0.1", ROBUSTMQ_HTTP_PORT="0", ROBUSTMQ_CLUSTER_GRPC_PORT="0"
    )
    proc = subprocess.Popen(
        [
            *SERVER,
            "start",
            "--mqtt-port",
            "0",
            "--ws-port",
            "0",
            "--kafka-port",
            str(kafka_port),
            "--data-dir",
            data_dir,
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    lines = []
    deadline = time.monotonic() + 20
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line.strip())
        if "data directory" in line:
            return proc, lines
    proc.kill()
    raise AssertionError(f"server did not start: {lines} {proc.communicate()[1]}")


def _stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=15)


def _produce(port: int, topic: str, n: int) -> None:
    p = ck.Producer({"bootstrap.servers": f"127.0.0.1:{port}"})
    for i in range(n):
        p.produce(topic, key=b"k%d" % i, value=b"v%d" % i, headers=[("i", b"%d" % i)])
    assert p.flush(TIMEOUT) == 0


def _consume(port: int, topic: str, n: int, group: str) -> list[tuple[bytes, bytes, int]]:
    c = ck.Consumer(
        {
            "bootstrap.servers": f"127.0.0.1:{port}",
            "group.id": group,
            "auto.offset.reset": "earliest",
        }
    )
    c.subscribe([topic])
    got = []
    deadline = time.monotonic() + TIMEOUT
    while len(got) < n and time.monotonic() < deadline:
        m = c.poll(0.2)
        if m is not None and m.error() is None:
            got.append((m.key(), m.value(), m.offset()))
    c.close()
    return got


def test_kafka_port_flag_starts_the_listener_with_memory_storage(tmp_path):
    port = free_port()
    proc, lines = _start(str(tmp_path / "data"), port, "--storage", "memory")
    try:
        assert f"robustmq: kafka listening on 127.0.0.1:{port}" in lines
        _produce(port, "cli", 3)
        assert [v for _, v, _ in _consume(port, "cli", 3, "g")] == [b"v0", b"v1", b"v2"]
    finally:
        assert _stop(proc) == 0


def test_segment_storage_keeps_topics_records_and_commits_across_a_restart(tmp_path):
    port = free_port()
    data = str(tmp_path / "data")
    proc, _ = _start(data, port, "--storage", "segment")
    try:
        _produce(port, "durable", 5)
        first = _consume(port, "durable", 5, "readers")  # commits on close
        assert [k for k, _, _ in first] == [b"k%d" % i for i in range(5)]
    finally:
        assert _stop(proc) == 0
    proc, _ = _start(data, port, "--storage", "segment")
    try:
        _produce(port, "durable", 2)  # offsets 5 and 6, after the recovered log
        again = _consume(port, "durable", 7, "fresh")
        assert [(k, v, o) for k, v, o in again] == [
            (b"k%d" % i, b"v%d" % i, i) for i in range(5)
        ] + [(b"k0", b"v0", 5), (b"k1", b"v1", 6)]
        resumed = _consume(port, "durable", 2, "readers")
        assert [o for _, _, o in resumed] == [5, 6]
    finally:
        assert _stop(proc) == 0


def test_kafka_port_in_use_is_a_clear_error(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = dict(os.environ, ROBUSTMQ_KAFKA_BIND="127.0.0.1", ROBUSTMQ_HTTP_PORT="0")
        result = subprocess.run(
            [*SERVER, "start", "--mqtt-port", "0", "--ws-port", "0", "--kafka-port", str(port)]
            + ["--data-dir", str(tmp_path / "data")],
            capture_output=True,
            text=True,
            env=env,
            timeout=30,
        )
    assert result.returncode != 0
    assert "address already in use" in result.stderr.lower()
    assert "--kafka-port" in result.stderr
