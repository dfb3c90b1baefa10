"""Idle MQTT connections held by one cluster on this machine: ``--connections`` clients
(default 100,000, the target of issue #4) spread over the nodes of a cluster of
``--nodes`` ``robustmq-server`` processes, each serving its own MQTT port.

One process cannot hold 100,000 sockets where the open-files limit is lower (here the
hard limit is 20,000 and cannot be raised without CAP_SYS_RESOURCE), and one source
address cannot open more connections to one port than the ephemeral port range holds
(about 28,000). So each node gets ``connections / nodes`` clients from its own
``robustmq-bench mqtt conn --hold`` process, and the report says per node and in total
how many connected, how many were dropped while held, what each node's ``/metrics``
counted and its resident memory per connection.

    python benchmarks/bench_idle_connections.py                       # 6 nodes, 100,000
    python benchmarks/bench_idle_connections.py --nodes 2 --connections 20000 --hold 10
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

from broker_process import Broker, free_port

SERVER = [sys.executable, "-m", "robustmq.cli.server", "start"]
BENCH = [sys.executable, "-m", "robustmq.cli.bench", "mqtt", "conn"]


def _cluster_config(path: str, grpc_ports: list[int]) -> None:
    peers = ", ".join(f'"{i}@127.0.0.1:{port}"' for i, port in enumerate(grpc_ports, 1))
    with open(path, "w") as f:
        f.write(f'[cluster]\npeers = [{peers}]\nbind = "127.0.0.1"\n')


def _connections_metric(http_port: int) -> int:
    url = f"http://127.0.0.1:{http_port}/metrics"
    with urllib.request.urlopen(url, timeout=30) as response:
        for line in response.read().decode().splitlines():
            if line.startswith("robustmq_mqtt_connections "):
                return int(float(line.split()[1]))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=6)
    parser.add_argument("--connections", type=int, default=100_000)
    parser.add_argument("--hold", type=float, default=30.0, help="seconds to hold them")
    parser.add_argument(
        "--rate", type=float, default=1500.0, help="connections/s per node's client process"
    )
    args = parser.parse_args()
    if args.nodes < 1 or args.connections < args.nodes or args.hold <= 0 or args.rate <= 0:
        parser.error("need --nodes >= 1, --connections >= --nodes, --hold > 0, --rate > 0")
    per_node = -(-args.connections // args.nodes)
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if per_node + 1000 > soft:
        parser.error(
            f"{per_node} connections per node need more than the open-files limit {soft}: "
            "use more --nodes or raise `ulimit -n`"
        )
    work = tempfile.mkdtemp(prefix="bench-idle-")
    grpc_ports = [free_port() for _ in range(args.nodes)]
    mqtt_ports = [free_port() for _ in range(args.nodes)]
    http_ports = [free_port() for _ in range(args.nodes)]
    config = os.path.join(work, "cluster.toml")
    _cluster_config(config, grpc_ports)
    brokers: list[Broker] = []
    clients: list[subprocess.Popen[str]] = []
    try:
        print(f"starting {args.nodes} nodes in {work} ...", file=sys.stderr, flush=True)
        os.environ.update(ROBUSTMQ_MQTT_WS_PORT="0", ROBUSTMQ_KAFKA_PORT="0")
        for i in range(args.nodes):
            brokers.append(
                Broker(
                    [
                        *SERVER,
                        "--config",
                        config,
                        "--node-id",
                        str(i + 1),
                        "--data-dir",
                        os.path.join(work, f"n{i + 1}"),
                        "--mqtt-port",
                        str(mqtt_ports[i]),
                        "--http-port",
                        str(http_ports[i]),
                        "--storage",
                        "memory",
                        "--log-level",
                        "warning",
                    ],
                    mqtt_ports[i],
                    os.path.join(work, f"n{i + 1}.log"),
                )
            )
        base_rss = [b.rss_kb() for b in brokers]
        counts = [min(per_node, args.connections - per_node * i) for i in range(args.nodes)]
        ramp = max(counts) / args.rate
        print(
            f"opening {args.connections:,} connections ({per_node:,} per node, "
            f"about {ramp:.0f} s), holding them {args.hold:.0f} s ...",
            file=sys.stderr,
            flush=True,
        )
        for port, count in zip(mqtt_ports, counts, strict=True):
            clients.append(
                subprocess.Popen(
                    [
                        *BENCH,
                        "--port",
                        str(port),
                        "--clients",
                        str(count),
                        "--rate",
                        str(args.rate),
                        "--hold",
                        str(args.hold),
                        "--connect-timeout",
                        "30",
                        "--output",
                        "json",
                    ],
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )
        # The most held at once, sampled until every client process is done.
        held, rss = [0] * args.nodes, [0] * args.nodes
        deadline = time.monotonic() + ramp * 10 + args.hold + 300
        while any(c.poll() is None for c in clients) and time.monotonic() < deadline:
            now = [_connections_metric(port) for port in http_ports]
            if sum(now) > sum(held):
                held, rss = now, [b.rss_kb() for b in brokers]
                print(f"held: {sum(held):,} {held}", file=sys.stderr, flush=True)
            time.sleep(2.0)
        reports = [json.loads(client.communicate(timeout=60)[0]) for client in clients]
    finally:
        for client in clients:
            if client.poll() is None:
                client.kill()
        for broker in brokers:
            broker.stop()
    print(
        "| node | clients | connected | failed | dropped while held | held (/metrics) "
        "| KB per connection |"
    )
    print("|---|---|---|---|---|---|---|")
    for i, report in enumerate(reports):
        per_conn = (rss[i] - base_rss[i]) / max(held[i], 1)
        print(
            f"| {i + 1} | {counts[i]:,} | {report['connected']:,} | {report['failed']:,} "
            f"| {report['dropped_during_hold']:,} | {held[i]:,} | {per_conn:.2f} |"
        )
    connected = sum(r["connected"] for r in reports)
    failed = sum(r["failed"] for r in reports)
    dropped = sum(r["dropped_during_hold"] for r in reports)
    errors = sum(sum(r["errors"].values()) for r in reports)
    print(
        f"\n{sum(held):,} of {args.connections:,} connections held at once on {args.nodes} "
        f"nodes; {failed:,} failed, {dropped:,} dropped while held, {errors:,} client "
        f"errors; {connected:,} connected in all."
    )
    ok = sum(held) == args.connections and failed == 0 and dropped == 0 and errors == 0
    if ok:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"the nodes' logs are in {work}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
