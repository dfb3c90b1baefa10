"""robustmq-server as users run it: a real process, real flags, real signals."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.conftest import free_port
from tests.integration.clients import Paho

SERVER = [sys.executable, "-m", "robustmq.cli.server"]


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        ROBUSTMQ_MQTT_WS_PORT="0",
        ROBUSTMQ_MQTT_BIND="127.0.0.1",
        ROBUSTMQ_MQTT_SYS_INTERVAL="0",
        ROBUSTMQ_HTTP_PORT="0",
        ROBUSTMQ_HTTP_BIND="127.0.0.1",
        ROBUSTMQ_KAFKA_PORT="0",
        ROBUSTMQ_CLUSTER_GRPC_PORT="0",
    )
    env.update(extra)
    return env


def _start(
    tmp_path, *args: str, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen, int, list[str]]:
    port = free_port()
    proc = subprocess.Popen(
        [*SERVER, "start", "--mqtt-port", str(port), "--data-dir", str(tmp_path / "data"), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env or _env(),
    )
    lines = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line.strip())
        if "data directory" in line:
            return proc, port, lines
    proc.kill()
    raise AssertionError(f"server did not start: {lines} {proc.stderr.read()}")


def _stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=15)


def test_help_lists_the_commands():
    out = subprocess.run([*SERVER, "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("start", "stop", "config-check"):
        assert command in out


def test_start_prints_listeners_serves_mqtt_and_stops_on_sigterm(tmp_path):
    proc, port, lines = _start(tmp_path)
    assert f"robustmq: mqtt listening on 127.0.0.1:{port}" in lines
    assert f"robustmq: data directory {tmp_path / 'data'}" in lines
    sub = Paho(port, "s", 4)
    sub.subscribe("a")
    Paho(port, "p", 4).publish("a", b"x")
    assert sub.get().payload == b"x"
    assert _stop(proc) == 0


def test_pure_python_backend_serves_mqtt(tmp_path):
    proc, port, _ = _start(tmp_path, env=_env(ROBUSTMQ_NO_EXTENSIONS="1"))
    try:
        sub = Paho(port, "s", 5)
        sub.subscribe("a/+", 1)
        Paho(port, "p", 5).publish("a/b", b"py", 1)
        assert sub.get().payload == b"py"
    finally:
        assert _stop(proc) == 0


def test_port_in_use_is_a_clear_error(tmp_path):
    proc, port, _ = _start(tmp_path)
    try:
        second = subprocess.run(
            [*SERVER, "start", "--mqtt-port", str(port), "--data-dir", str(tmp_path / "d2")],
            capture_output=True,
            text=True,
            env=_env(),
            timeout=20,
        )
        assert second.returncode != 0
        assert "address already in use" in second.stderr.lower()
        assert "--mqtt-port" in second.stderr
    finally:
        _stop(proc)


def test_daemon_start_and_stop(tmp_path):
    port = free_port()
    pid_file = tmp_path / "rmq.pid"
    started = subprocess.run(
        [
            *SERVER,
            "start",
            "--daemon",
            "--pid-file",
            str(pid_file),
            "--mqtt-port",
            str(port),
            "--data-dir",
            str(tmp_path / "data"),
        ],  # fmt: skip
        capture_output=True,
        text=True,
        env=_env(),
        timeout=20,
    )
    assert started.returncode == 0, started.stderr
    pid = int(pid_file.read_text())
    try:
        Paho(port, "d", 4).disconnect()
    finally:
        stopped = subprocess.run(
            [*SERVER, "stop", "--pid-file", str(pid_file)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert stopped.returncode == 0, stopped.stderr
    assert not pid_file.exists()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


@pytest.mark.parametrize(
    ("toml", "env", "expect"),
    [
        ("[mqtt]\nport = 70000\n", {}, "'mqtt.port': bad value 70000; allowed: int in [0, 65535]"),
        ("[mqtt]\nprot = 1\n", {}, "'mqtt.prot'"),
        ("[nope]\na = 1\n", {}, "'nope'"),
        ("[storage]\nengine = 'disk'\n", {}, "one of memory, leveldb, segment"),
        ("[mqtt\n", {}, "valid TOML"),
        ("", {"ROBUSTMQ_MQTT_RETAIN_AVAILABLE": "maybe"}, "'mqtt.retain_available'"),
    ],
)
def test_config_check_names_the_bad_key(tmp_path, toml, env, expect):
    path = tmp_path / "robustmq.toml"
    path.write_text(toml)
    result = subprocess.run(
        [*SERVER, "config-check", "--config", str(path)],
        capture_output=True,
        text=True,
        env=_env(**env),
    )
    assert result.returncode != 0
    assert expect in result.stderr


def test_config_check_accepts_a_good_file_and_flags_override_env(tmp_path):
    path = tmp_path / "robustmq.toml"
    path.write_text(
        '[node]\nid = 3\n[mqtt]\nmax_packet_size = 4096\nrewrite = [{action = "all", source_topic = "a/#", re = "^a/(.*)$", dest_topic = "b/$1"}]\n'
    )
    result = subprocess.run(
        [*SERVER, "config-check", "--config", str(path)], capture_output=True, text=True, env=_env()
    )
    assert result.returncode == 0, result.stderr
    listing = subprocess.run(
        [*SERVER, "config-check", "--list"], capture_output=True, text=True, env=_env()
    ).stdout
    assert "mqtt.max_packet_size = 1048576" in listing


@pytest.mark.parametrize("engine", ["leveldb", "segment"])
def test_engine_role_opens_the_storage_engine_in_the_data_dir(tmp_path, engine):
    for _ in range(2):  # the second start reopens (and recovers) what the first left
        proc, _, lines = _start(tmp_path, "--storage", engine)
        assert f"robustmq: storage engine {engine}" in lines
        assert _stop(proc) == 0
    assert (tmp_path / "data" / engine).is_dir()


def _soft_nofile(pid: int) -> int:
    with open(f"/proc/{pid}/limits") as limits:
        for line in limits:
            if line.startswith("Max open files"):
                return int(line.split()[3])
    raise AssertionError("no open-files line in /proc/PID/limits")


def test_start_lifts_the_open_files_limit_for_max_connections(tmp_path):
    import resource

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard < 6024:
        pytest.skip(f"hard open-files limit {hard} is too low to show the change")

    def low_soft_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))

    port = free_port()
    proc = subprocess.Popen(
        [*SERVER, "start", "--mqtt-port", str(port), "--data-dir", str(tmp_path / "d")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(ROBUSTMQ_MQTT_MAX_CONNECTIONS="5000"),
        preexec_fn=low_soft_limit,
    )
    try:
        while "data directory" not in (line := proc.stdout.readline()):
            assert line, proc.stderr.read()
        assert _soft_nofile(proc.pid) >= 5000 + 1024
    finally:
        assert _stop(proc) == 0


def test_daemon_start_reports_a_server_that_cannot_start(tmp_path):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    pid_file = tmp_path / "rmq.pid"
    try:
        started = subprocess.run(
            [
                *SERVER,
                "start",
                "--daemon",
                "--pid-file",
                str(pid_file),
                "--mqtt-port",
                str(port),
                "--data-dir",
                str(tmp_path / "data"),
            ],  # fmt: skip
            capture_output=True,
            text=True,
            env=_env(),
            timeout=60,
        )
    finally:
        busy.close()
    assert started.returncode != 0
    assert "exited at start" in started.stderr and "robustmq.log" in started.stderr
    assert not pid_file.exists()
