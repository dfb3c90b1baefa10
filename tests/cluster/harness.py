"""Real ``robustmq-server`` processes for the cluster tests: one process (``Node``), the
members of one ``[cluster] peers`` config on free ports of 127.0.0.1 (``Cluster``), and a
poll-until-true wait with a generous deadline (the machine is shared). Each node writes its
output to a file in the test's directory; nodes are stopped by their PID."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.conftest import free_port
from tests.integration.clients import Paho

SERVER = [sys.executable, "-m", "robustmq.cli.server"]
WAIT = 60.0  # seconds any condition of a cluster test may take on a loaded machine


def server_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(ROBUSTMQ_MQTT_WS_PORT="0", ROBUSTMQ_MQTT_SYS_INTERVAL="0", **extra)
    return env


class Node:
    """One ``robustmq-server start`` process, its output in a file."""

    def __init__(self, root: Path, name: str, args: list[str], env: dict[str, str]) -> None:
        self.output = root / f"{name}.log"
        with self.output.open("w") as out:
            self.proc = subprocess.Popen(
                [*SERVER, "start", *args], stdout=out, stderr=subprocess.STDOUT, env=env
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and self.proc.poll() is None:
            if "robustmq: data directory" in self.output.read_text():
                return
            time.sleep(0.05)
        self.kill()
        raise AssertionError(f"{name} did not start: {self.output.read_text()}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()


def wait_for(what: str, check: Callable[[], Any], interval: float = 0.2) -> Any:
    """``check()``'s first truthy answer; an OSError (a node starting, or just killed)
    counts as not yet."""
    deadline = time.monotonic() + WAIT
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except OSError as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"{what} within {WAIT} s; last: {last!r}")


class Cluster:
    """The members ``peers`` of one config, each with its own gRPC, HTTP and (with
    ``mqtt``) MQTT port; a node id outside ``peers`` gets ports when it starts and joins
    through the others. ``env`` applies to every start."""

    def __init__(
        self, root: Path, peers: tuple[int, ...] = (1, 2, 3), mqtt: bool = True, **env: str
    ) -> None:
        self.root = root
        self.grpc = {i: free_port() for i in peers}
        self.mqtt = {i: free_port() if mqtt else 0 for i in peers}
        self.http = {i: free_port() for i in peers}
        self.with_mqtt = mqtt
        self.env = env
        self.config = root / "cluster.toml"
        listed = ", ".join(f'"{i}@127.0.0.1:{p}"' for i, p in self.grpc.items())
        self.config.write_text(f'[cluster]\npeers = [{listed}]\nbind = "127.0.0.1"\n')
        self.nodes: dict[int, Node] = {}
        self.starts: dict[int, int] = {}

    def start(self, node_id: int, **env: str) -> None:
        """Starts a node; returns once its listeners are open."""
        self.starts[node_id] = self.starts.get(node_id, 0) + 1
        self.mqtt.setdefault(node_id, free_port() if self.with_mqtt else 0)
        self.http.setdefault(node_id, free_port())
        args = ["--config", str(self.config), "--node-id", str(node_id)]
        args += ["--data-dir", str(self.root / f"n{node_id}")]
        full = server_env(
            ROBUSTMQ_MQTT_PORT=str(self.mqtt[node_id]),
            ROBUSTMQ_MQTT_BIND="127.0.0.1",
            ROBUSTMQ_KAFKA_PORT="0",
            ROBUSTMQ_HTTP_PORT=str(self.http[node_id]),
            **{**self.env, **env},
        )
        name = f"n{node_id}.{self.starts[node_id]}"
        self.nodes[node_id] = Node(self.root, name, args, full)

    def kill(self, node_id: int) -> None:
        self.nodes.pop(node_id).kill()

    def stop_all(self) -> None:
        for node in self.nodes.values():
            node.stop()
        self.nodes.clear()

    def logs(self) -> str:
        return "".join(p.read_text() for p in sorted(self.root.glob("n*.log")))

    def client(self, node_id: int, client_id: str = "", version: int = 5) -> Paho:
        return Paho(self.mqtt[node_id], client_id, version=version)

    def counter(self, node_id: int, name: str) -> float:
        """A value of ``name`` on the node's ``/metrics`` (0 when it is not there)."""
        url = f"http://127.0.0.1:{self.http[node_id]}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            for line in response.read().decode().splitlines():
                if line.startswith(name + " "):
                    return float(line.split()[1])
        return 0.0


def routed(publisher: Paho, topic: str, *subscribers: Paho) -> None:
    """Probes on ``topic`` until every subscriber got one: the publisher's node knows
    their routes (they travel through the Meta Service). The probes that arrive late
    are drained."""
    deadline = time.monotonic() + WAIT
    waiting = list(subscribers)
    while waiting:
        assert time.monotonic() < deadline, f"no route to {topic!r} within {WAIT} s"
        publisher.publish(topic, b"probe")
        time.sleep(0.2)
        waiting = [s for s in waiting if s.messages.empty()]
    time.sleep(0.5)
    for s in subscribers:
        while not s.messages.empty():
            assert s.get().payload == b"probe"
