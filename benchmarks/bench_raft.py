"""Raft throughput and commit latency of a 1-node group on the durable log, fsync on.

Drives ``RawNode`` + ``LogStore`` the way the meta service will: propose, take the Ready,
persist it (one fsync per Ready: group commit), apply, advance. "one per Ready" pays an
fsync per proposal; "batched" proposes ``--batch`` commands before each Ready. Latency is
from a proposal's ``propose`` call to the end of the Ready that applied it. Prints a table;
nothing here asserts on time (tests do not measure speed).

    python benchmarks/bench_raft.py [--seconds 3] [--batch 256] [--size 64] [--dir DIR]
"""

from __future__ import annotations

import argparse
import random
import shutil
import tempfile
import time

from robustmq._core import compiled, segments
from robustmq.meta.raft import Config, RawNode, StateType
from robustmq.meta.raft.log_store import LogStore


def run(directory: str, batch: int, seconds: float, size: int, many: bool) -> dict[str, float]:
    st = LogStore(directory)
    node = RawNode(Config(id=1, peers=(1,)), st, random.Random(1))
    fsyncs = 0

    def drive() -> int:
        nonlocal fsyncs
        applied = 0
        while node.has_ready():
            rd = node.ready()
            st.save(rd.hard_state, rd.entries, rd.snapshot, rd.must_sync)
            fsyncs += rd.must_sync
            applied += len(rd.committed_entries)
            node.advance(rd)
        return applied

    drive()
    node.campaign()
    drive()
    assert node.state == StateType.LEADER
    payload = b"x" * size
    latencies: list[float] = []
    done = 0
    fsyncs = 0
    clock = time.perf_counter
    t0 = clock()
    end = t0 + seconds
    while clock() < end:
        started = clock()
        if many:
            node.propose_many([payload] * batch)
            times = [started] * batch
        else:
            times = []
            for _ in range(batch):
                times.append(clock())
                node.propose(payload)
        applied = drive()
        finished = clock()
        done += applied
        latencies.extend(finished - t for t in times)
    elapsed = clock() - t0
    st.close()
    latencies.sort()
    return {
        "proposals": done,
        "per_s": done / elapsed,
        "p50_ms": latencies[len(latencies) // 2] * 1e3,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1e3,
        "fsyncs": fsyncs,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--size", type=int, default=64, help="bytes per proposal")
    p.add_argument("--dir", default=None, help="where the log goes (default: a temp dir)")
    args = p.parse_args()
    base = tempfile.mkdtemp(prefix="bench-raft-", dir=args.dir)
    backend = "compiled" if compiled(segments) else "pure Python"
    print(f"1-node Raft group, LogStore with fsync in {base}; framing: {backend}")
    print(f"{'mode':<28}{'proposals':>10}{'prop/s':>12}{'p50 ms':>9}{'p99 ms':>9}{'fsyncs':>8}")
    cases = [
        ("one per Ready", 1, False),
        (f"batched {args.batch}/Ready", args.batch, False),
        (f"batched {args.batch}, propose_many", args.batch, True),
    ]
    try:
        for k, (name, batch, many) in enumerate(cases):
            r = run(f"{base}/{k}", batch, args.seconds, args.size, many)
            print(
                f"{name:<28}{r['proposals']:>10.0f}{r['per_s']:>12,.0f}"
                f"{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}{r['fsyncs']:>8.0f}"
            )
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
