"""robustmq-bench against the independent C load generator (mqttload), same scenarios, same
Mosquitto: is our load tool fast enough not to be the bottleneck?

    python benchmarks/bench_mqtt_tool.py                     # 3 scenarios, 3 runs each, 5 s
    python benchmarks/bench_mqtt_tool.py --duration 10 --repeat 5 --conns 10000
    python benchmarks/bench_mqtt_tool.py --conn-workers 2    # conn storm with --workers 2
    python benchmarks/bench_mqtt_tool.py --scenarios conn    # only some of fanin,p2p,conn
    python benchmarks/bench_mqtt_tool.py --json out.json

Scenarios (as in mqttload's README): fan-in QoS 0 (8 publishers -> 1 subscriber on '#',
64 B, as fast as possible), point-to-point QoS 1 (4 publishers -> 4 subscribers on
bench/%i, window 64) and a connection storm (``--conns`` connections, at most 64
handshakes in flight, held 1 s). For every run a fresh Mosquitto (``/usr/sbin/mosquitto``,
anonymous, loopback, TCP_NODELAY, no persistence, no logging) starts on a free port and is
stopped by PID afterwards; the two tools alternate, and the table shows the median of
``--repeat`` runs per tool and the ratio robustmq-bench / mqttload. mqttload is built from
``../shared/tools/loadgen/mqttload.c`` into ``$TMPDIR/mqttload-build`` unless ``--mqttload``
names a binary. The machine is shared: read the ratios, not the absolute rates.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LOADGEN_SOURCE = ROOT.parent / "shared" / "tools" / "loadgen" / "mqttload.c"
MOSQUITTO = "/usr/sbin/mosquitto"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def build_mqttload() -> str:
    out = Path(tempfile.gettempdir()) / "mqttload-build"
    out.mkdir(parents=True, exist_ok=True)
    binary = out / "mqttload"
    if not binary.exists():
        subprocess.run(
            ["gcc", "-O2", "-pthread", "-o", str(binary), str(LOADGEN_SOURCE)], check=True
        )
    return str(binary)


class Mosquitto:
    """A fresh Mosquitto on a free loopback port, stopped by its PID."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        conf = workdir / f"mosquitto-{self.port}.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence false\n"
            "log_dest none\n"
            "max_keepalive 65535\n"
            "set_tcp_nodelay true\n"
        )
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("mosquitto did not start")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def scenarios(args: argparse.Namespace) -> list[dict[str, Any]]:
    d = str(args.duration)
    return [
        {
            "key": "fanin",
            "name": "fan-in QoS 0, 8 -> 1, 64 B",
            "metrics": ["send_rate", "recv_rate"],
            "mqttload": ["--pubs", "8", "--subs", "1", "--sub-topic", "#", "--qos", "0"]
            + ["--size", "64", "--duration", d],
            "bench": ["pub", "--clients", "8", "--subs", "1", "--sub-topic", "#", "--qos", "0"]
            + ["--size", "64", "--duration", d, "--workers", str(args.pubsub_workers)],
        },
        {
            "key": "p2p",
            "name": "point-to-point QoS 1, 4 -> 4, 64 B",
            "metrics": ["send_rate", "recv_rate"],
            "mqttload": ["--pubs", "4", "--subs", "4", "--topic", "bench/%i"]
            + ["--sub-topic", "bench/%i", "--qos", "1", "--inflight", "64", "--size", "64"]
            + ["--duration", d],
            "bench": ["pub", "--clients", "4", "--subs", "4", "--topic", "bench/%i"]
            + ["--qos", "1", "--inflight", "64", "--size", "64", "--duration", d]
            + ["--workers", str(args.pubsub_workers)],
        },
        {
            "key": "conn",
            "name": f"connection storm, {args.conns} conns, 64 pending",
            "metrics": ["connect_rate"],
            "mqttload": ["conn", "--conns", str(args.conns), "--conn-rate", "0"]
            + ["--max-pending", "64", "--hold", "1"],
            "bench": ["conn", "--clients", str(args.conns), "--max-pending", "64", "--hold", "1"]
            + ["--workers", str(args.conn_workers)],
        },
    ]


def run_mqttload(binary: str, port: int, argv: list[str]) -> dict[str, Any]:
    out = subprocess.run(
        [binary, *argv[:1], "--port", str(port), *argv[1:]] if argv[0] == "conn" else
        [binary, "--port", str(port), *argv],
        capture_output=True, text=True, timeout=300, check=True,
    ).stdout  # fmt: skip
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def run_bench(port: int, argv: list[str]) -> dict[str, Any]:
    command = [sys.executable, "-m", "robustmq.cli.bench", "mqtt", argv[0], "--port", str(port)]
    out = subprocess.run(
        [*command, *argv[1:], "--output", "json"],
        capture_output=True, text=True, timeout=300, check=True,
    ).stdout  # fmt: skip
    result: dict[str, Any] = json.loads(out)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--conns", type=int, default=5000)
    parser.add_argument("--scenarios", default="fanin,p2p,conn", help="a subset, comma-separated")
    parser.add_argument("--pubsub-workers", type=int, default=1)
    parser.add_argument("--conn-workers", type=int, default=1)
    parser.add_argument("--mqttload", help="a built mqttload binary")
    parser.add_argument("--json", help="also write the raw results here")
    args = parser.parse_args()
    binary = args.mqttload or build_mqttload()
    rows = []
    raw: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-mqtt-tool-") as tmp:
        for scenario in scenarios(args):
            if scenario["key"] not in args.scenarios.split(","):
                continue
            runs: dict[str, list[dict[str, Any]]] = {"mqttload": [], "bench": []}
            for i in range(args.repeat):
                order = ("mqttload", "bench") if i % 2 == 0 else ("bench", "mqttload")
                for tool in order:
                    broker = Mosquitto(Path(tmp))
                    try:
                        if tool == "mqttload":
                            result = run_mqttload(binary, broker.port, scenario["mqttload"])
                        else:
                            result = run_bench(broker.port, scenario["bench"])
                    finally:
                        broker.stop()
                    runs[tool].append(result)
                    raw.append({"scenario": scenario["name"], "tool": tool, "result": result})
                    print(f"  {scenario['name']}: {tool} run {i + 1} done", file=sys.stderr)
            for metric in scenario["metrics"]:
                c = statistics.median(r[metric] for r in runs["mqttload"])
                ours = statistics.median(r[metric] for r in runs["bench"])
                rows.append((scenario["name"], metric, c, ours, ours / c if c else 0.0))
    name_width = max(len(r[0]) for r in rows)
    print(
        f"{'scenario':{name_width}}  {'metric':12} {'mqttload':>12} {'robustmq-bench':>15}"
        f" {'ratio':>7}"
    )
    for name, metric, c, ours, ratio in rows:
        print(f"{name:{name_width}}  {metric:12} {c:>12,.0f} {ours:>15,.0f} {ratio:>7.2f}")
    print(
        f"(median of {args.repeat} runs each, {args.duration:g} s; robustmq-bench workers: "
        f"pub/sub {args.pubsub_workers}, conn {args.conn_workers}; "
        f"machine: {os.cpu_count()} cpus, load {os.getloadavg()[0]:.2f})"
    )
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "runs": raw}, indent=1))


if __name__ == "__main__":
    main()
