"""End to end: the same MQTT scenarios against RobustMQ and Mosquitto in one run.

Each scenario starts each broker fresh on a free 127.0.0.1 port, drives it with
``robustmq-bench`` (JSON output), stops it by the process group it started, and prints one
table with the ratio RobustMQ / Mosquitto (higher is better in every row; for latency it
is Mosquitto's p99 over ours). A third broker can be added with ``--peer NAME=COMMAND``
(``{port}`` and ``{dir}`` are filled in), e.g. amqtt from its own virtualenv.

    python benchmarks/bench_mqtt_brokers.py                      # scenarios a-g, 10 s each
    python benchmarks/bench_mqtt_brokers.py -s a,c,f -d 5 --workers 2
    python benchmarks/bench_mqtt_brokers.py -s f,g --rounds 5    # medians of 5 rounds

With ``--rounds N`` every scenario runs N times, the brokers taking turns, and the table
shows each broker's median run and the ratio's median with its range over the rounds:
on a shared machine two runs of one broker can differ more than two brokers do.

Scenarios (64-byte payloads unless said): a fan-in QoS 0 8->1 on '#'; b fan-out QoS 0
1->16; c QoS 1 4->4 point to point; d QoS 2 1->1; e fan-in QoS 0 8->1 with 1 KB payloads
(MB/s); f latency at 5 x 1,000 msg/s QoS 0 point to point; g connection storm (connect
rate, resident memory per idle connection). The load tool runs on the same 2-core
machine: when a broker is faster than the tool, the figure is the tool's ceiling
(``robustmq-bench`` prints its own rates; compare them with ``--workers``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from broker_process import Broker, free_port

BENCH = [sys.executable, "-m", "robustmq.cli.bench", "mqtt"]

SCENARIOS: dict[str, tuple[str, list[str]]] = {
    "a": ("fan-in QoS 0 8->1 '#', 64 B", ["pub", "--clients", "8", "--subs", "1", "--sub-topic", "#"]),
    "b": ("fan-out QoS 0 1->16, 64 B", ["pub", "--clients", "1", "--topic", "bench/x", "--subs", "16", "--sub-topic", "bench/#"]),
    "c": ("QoS 1 4->4 point to point", ["pub", "--clients", "4", "--subs", "4", "--sub-topic", "bench/%i", "--qos", "1", "--inflight", "20"]),
    "d": ("QoS 2 1->1", ["pub", "--clients", "1", "--subs", "1", "--sub-topic", "bench/%i", "--qos", "2", "--inflight", "20"]),
    "e": ("fan-in QoS 0 8->1, 1 KB", ["pub", "--clients", "8", "--subs", "1", "--sub-topic", "#", "--size", "1024"]),
    "f": ("latency QoS 0 5 x 1,000 msg/s", ["pub", "--clients", "5", "--subs", "5", "--sub-topic", "bench/%i", "--rate", "1000"]),
    "g": ("connection storm", ["conn", "--max-pending", "64"]),
}  # fmt: skip


def robustmq_command(port: int, workdir: str) -> list[str]:
    return [
        sys.executable, "-m", "robustmq.cli.server", "start", "--mqtt-port", str(port),
        "--ws-port", "0", "--http-port", "0", "--kafka-port", "0", "--data-dir",
        os.path.join(workdir, "data"), "--storage", "memory", "--log-level", "warning",
    ]  # fmt: skip


def mosquitto_command(port: int, workdir: str) -> list[str]:
    # Plain, in memory, anonymous, loopback only, no logging (it would skew results),
    # TCP_NODELAY like us.
    conf = os.path.join(workdir, "mosquitto.conf")
    with open(conf, "w") as f:
        f.write(
            f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            "log_dest none\nmax_keepalive 65535\nset_tcp_nodelay true\n"
        )
    return [shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", conf]


def template_command(template: str) -> Callable[[int, str], list[str]]:
    def command(port: int, workdir: str) -> list[str]:
        return ["sh", "-c", "exec " + template.format(port=port, dir=workdir)]

    return command


def run_bench(args: list[str], timeout: float, broker: Broker | None = None) -> dict[str, Any]:
    """Runs robustmq-bench; samples the broker's peak RSS meanwhile (connection storm)."""
    proc = subprocess.Popen(
        [*BENCH, *args, "--output", "json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    peak = 0
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        if broker is not None:
            peak = max(peak, broker.rss_kb())
        time.sleep(0.2)
    if proc.poll() is None:
        proc.kill()
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"robustmq-bench failed ({proc.returncode}): {err.decode()[-500:]}")
    report: dict[str, Any] = json.loads(out)
    report["broker_peak_rss_kb"] = peak
    return report


def measure(
    scenario: str, command: Callable[[int, str], list[str]], opts: argparse.Namespace
) -> dict[str, Any]:
    workdir = tempfile.mkdtemp(prefix="bench-mqtt-")
    port = free_port()
    broker = Broker(command(port, workdir), port, os.path.join(workdir, "broker.log"))
    try:
        time.sleep(0.5)
        args = [*SCENARIOS[scenario][1], "--port", str(port), "--workers", str(opts.workers)]
        if scenario == "g":
            before = broker.rss_kb()
            args += ["--clients", str(opts.conns), "--hold", "3"]
            report = run_bench(args, opts.duration + 120, broker)
            report["rss_per_conn_kb"] = (report["broker_peak_rss_kb"] - before) / opts.conns
        else:
            args += ["--duration", str(opts.duration)]
            report = run_bench(args, opts.duration + 60)
        report["broker_alive"] = broker.proc.poll() is None
        return report
    finally:
        broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def cell(scenario: str, r: dict[str, Any] | None) -> tuple[str, float]:
    """The table text for one result and the number the ratio compares."""
    if r is None:
        return "failed", 0.0
    if scenario == "g":
        text = f"{r['connect_rate']:,.0f} conn/s, {r['rss_per_conn_kb']:.2f} KB/conn"
        return text, r["connect_rate"]
    lat = r["latency_us"]
    lost = f", lost {r['losses']:,}" if r["losses"] else ""
    if scenario == "e":
        return f"{r['recv_MBps']:,.1f} MB/s{lost}", r["recv_MBps"]
    if scenario == "f":
        text = f"p50 {lat['p50']:,.0f} / p99 {lat['p99']:,.0f} us{lost}"
        return text, 1.0 / max(lat["p99"], 1.0)
    return f"{r['recv_rate']:,.0f} msg/s, p50 {lat['p50'] / 1000:,.1f} ms{lost}", r["recv_rate"]


def table_row(
    scenario: str, by_broker: dict[str, list[dict[str, Any] | None]], names: list[str]
) -> str:
    """Each broker's median run and the ratio of the first two brokers (median, and its
    range over the rounds when there are several) for one scenario."""
    texts = []
    for name in names:
        runs = sorted((cell(scenario, r) for r in by_broker[name]), key=lambda c: c[1])
        texts.append(runs[(len(runs) - 1) // 2][0])  # the median run (the lower of two)
    ours, theirs = ([cell(scenario, r)[1] for r in by_broker[n]] for n in names[:2])
    ratios = [a / b for a, b in zip(ours, theirs, strict=True) if a and b]
    if not ratios:
        return f"{' | '.join(texts)} | n/a |"
    ratio = f"{statistics.median(ratios):.2f}x"
    if len(ratios) > 1:
        ratio += f" ({min(ratios):.2f}-{max(ratios):.2f}x over {len(ratios)} rounds)"
    return f"{' | '.join(texts)} | {ratio} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-s", "--scenarios", default="a,b,c,d,e,f,g")
    parser.add_argument("-d", "--duration", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=1, help="robustmq-bench worker processes")
    parser.add_argument("--conns", type=int, default=10000, help="connections in scenario g")
    parser.add_argument("--peer", action="append", default=[], help="NAME=COMMAND, another broker")
    parser.add_argument("--rounds", type=int, default=1, help="runs per scenario and broker")
    parser.add_argument("--json", help="also write every raw report to this file")
    opts = parser.parse_args()
    if not shutil.which("mosquitto") and not os.path.exists("/usr/sbin/mosquitto"):
        sys.exit("mosquitto is not installed: apt-get install -y mosquitto")
    brokers: dict[str, Callable[[int, str], list[str]]] = {
        "robustmq": robustmq_command,
        "mosquitto": mosquitto_command,
    }
    for spec in opts.peer:
        name, _, template = spec.partition("=")
        brokers[name] = template_command(template)
    if opts.rounds < 1:
        sys.exit(f"--rounds must be at least 1, not {opts.rounds}")
    # results[scenario][broker] is one report (or None: failed) per round
    results: dict[str, dict[str, list[dict[str, Any] | None]]] = {}
    for scenario in opts.scenarios.split(","):
        for round_no in range(1, opts.rounds + 1):
            for name, command in brokers.items():
                lap = f" (round {round_no}/{opts.rounds})" if opts.rounds > 1 else ""
                print(f"[{scenario}] {SCENARIOS[scenario][0]}: {name}{lap} ...", file=sys.stderr, flush=True)  # fmt: skip
                try:
                    report: dict[str, Any] | None = measure(scenario, command, opts)
                except RuntimeError as exc:
                    print(f"    {exc}", file=sys.stderr)
                    report = None
                results.setdefault(scenario, {}).setdefault(name, []).append(report)
    names = list(brokers)
    print(f"\n| scenario | {' | '.join(names)} | robustmq / mosquitto |")
    print(f"|---|{'---|' * len(names)}---|")
    for scenario, by_broker in results.items():
        print(f"| {scenario}) {SCENARIOS[scenario][0]} | {table_row(scenario, by_broker, names)}")
    if opts.json:
        with open(opts.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
