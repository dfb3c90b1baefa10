"""Proposals per second and commit latency through the Multi-Raft host, fsync on.

One process, real ``LogStore``s in a temporary directory, hosts wired by
``InMemoryNetwork`` (messages still go through the byte codec). ``concurrency`` client
coroutines each propose one ``user.set`` to the ``mqtt`` group's leader and wait for it to
apply before the next: the host batches whatever is queued into one Ready (group commit),
so concurrency is the batching knob. Latency is from ``propose`` to its result. Runs on
uvloop when installed and freezes the objects built at start out of the cyclic collector,
as ``robustmq-server`` does. Prints a table; nothing here asserts on time.

    python benchmarks/bench_meta.py [--seconds 3] [--concurrency 1,64,512] [--nodes 1,3]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import shutil
import tempfile
import time
from typing import Any

from robustmq.meta.groups import encode_command
from robustmq.meta.host import HostConfig, InMemoryNetwork, MultiRaftHost
from robustmq.meta.raft import StateType


async def run(nodes: int, concurrency: int, seconds: float, root: str) -> dict[str, float]:
    peers = tuple((i, f"127.0.0.1:{i}") for i in range(1, nodes + 1))
    network = InMemoryNetwork()
    hosts = []
    for i, _ in peers:
        config = HostConfig(
            node_id=i,
            peers=peers,
            data_dir=f"{root}/n{i}",
            groups=("mqtt",),
            tick_interval=0.05,
        )
        host = MultiRaftHost(config, network.transport(i))
        network.connect(host)
        hosts.append(host)
    for host in hosts:
        await host.start()
    gc.freeze()  # what robustmq-server does once its roles have started (robustmq/node.py)
    while not any(h.groups["mqtt"].node.state == StateType.LEADER for h in hosts):
        await asyncio.sleep(0.01)
    leader = next(h for h in hosts if h.groups["mqtt"].node.state == StateType.LEADER)
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def client(c: int) -> None:
        k = 0
        while time.perf_counter() < deadline:
            cmd = encode_command(
                "user.set", username=f"u{c}-{k}", password_hash="h", superuser=False
            )
            t0 = time.perf_counter()
            await leader.propose("mqtt", cmd)
            latencies.append(time.perf_counter() - t0)
            k += 1

    start = time.perf_counter()
    await asyncio.gather(*(client(c) for c in range(concurrency)))
    elapsed = time.perf_counter() - start
    for host in hosts:
        await host.stop()
    latencies.sort()
    return {
        "rate": len(latencies) / elapsed,
        "p50": latencies[len(latencies) // 2] * 1000,
        "p99": latencies[int(len(latencies) * 0.99)] * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", default="1,64,512")
    parser.add_argument("--nodes", default="1,3")
    args = parser.parse_args()
    try:
        import uvloop

        runner: Any = uvloop.run
        print("event loop: uvloop")
    except ImportError:
        runner = asyncio.run
        print("event loop: asyncio")
    print(f"{'nodes':>5} {'concurrency':>11} {'proposals/s':>12} {'p50 ms':>8} {'p99 ms':>8}")
    for nodes in (int(n) for n in args.nodes.split(",")):
        for concurrency in (int(c) for c in args.concurrency.split(",")):
            root = tempfile.mkdtemp(prefix="bench_meta_")
            try:
                r = runner(run(nodes, concurrency, args.seconds, root))
            finally:
                shutil.rmtree(root, ignore_errors=True)
            print(
                f"{nodes:>5} {concurrency:>11} {r['rate']:>12,.0f} {r['p50']:>8.2f} {r['p99']:>8.2f}"
            )


if __name__ == "__main__":
    main()
