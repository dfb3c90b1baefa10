"""End-to-end storage benchmark: append/read throughput per engine and fsync policy, a
raw-disk reference measured in the same run, and LevelDB with very many small shards.

    python benchmarks/bench_storage.py                      # the full table
    python benchmarks/bench_storage.py --quick              # smaller volumes
    python benchmarks/bench_storage.py --shards 1000000     # + the 1M-shard LevelDB test
    python benchmarks/bench_storage.py --json out.json

Each cell runs ``--repeat`` times (default 3) and the best run counts, for the raw
reference and the engines alike (the machine is shared and noisy). The raw reference writes the same number of bytes (record bytes plus the segment
framing, ~35 B/record) with a plain ``os.write`` loop in chunks of one append's size:
once with one fsync at the end ("raw write"), once with an fsync after every chunk
("raw write+fsync"). Data goes to a temporary directory (``--dir`` to choose the disk).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from robustmq._core import compiled, load  # noqa: E402
from robustmq.storage import open_engine  # noqa: E402
from robustmq.storage.engine import (  # noqa: E402
    LevelDBConfig,
    MemoryConfig,
    Record,
    SegmentConfig,
    ShardConfig,
)

FRAMING = 35  # bytes the segment format adds per record (see docs/storage.md)
SHARD = ShardConfig(segment_bytes=256 * 1024 * 1024, segment_ms=None)


def config(engine: str, fsync: str, path: str) -> object:
    if engine == "memory":
        return MemoryConfig(max_bytes=4 << 30, default_shard=SHARD)
    if engine == "leveldb":
        return LevelDBConfig(path=path, fsync=fsync, default_shard=SHARD)
    return SegmentConfig(path=path, fsync=fsync, default_shard=SHARD)


def volume(size: int, batch: int, fsync: str, quick: bool) -> int:
    """How many records one run appends: about 0.5-2 s of work per cell."""
    total_bytes = (64 if quick else 256) << 20
    n = total_bytes // size
    if batch == 1:
        n = min(n, 50_000 if quick else 200_000)
    if fsync == "always":
        n = min(n, batch * (200 if quick else 1000))
    return max(batch, n // batch * batch)


async def bench_append(engine_kind: str, fsync: str, size: int, batch: int, n: int, root: str):
    path = tempfile.mkdtemp(dir=root)
    eng = await open_engine(config(engine_kind, fsync, path))  # type: ignore[arg-type]
    await eng.create_shard("bench")
    payload = os.urandom(size)
    chunk = [Record(payload, timestamp_ms=1) for _ in range(batch)]
    concurrency = 16 if fsync == "always" else 1  # group commit needs concurrent appends
    per_task = n // batch // concurrency

    async def producer() -> None:
        for _ in range(per_task):
            await eng.append("bench", chunk)

    t0 = time.perf_counter()
    await asyncio.gather(*(producer() for _ in range(concurrency)))
    await eng.flush()
    append_s = time.perf_counter() - t0
    written = per_task * concurrency * batch
    t0 = time.perf_counter()
    offset = 0
    while offset < written:
        got = await eng.read("bench", offset, max_records=1000, max_bytes=4 << 20)
        offset = got[-1].offset + 1
    read_s = time.perf_counter() - t0
    await eng.close()
    shutil.rmtree(path, ignore_errors=True)
    return written, append_s, read_s


def raw_write(size: int, batch: int, n: int, sync_each: bool, root: str) -> float:
    """Seconds to write n*(size+FRAMING) bytes in append-sized chunks, then fsync."""
    chunk = os.urandom((size + FRAMING) * batch)
    path = os.path.join(root, "raw.bin")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    t0 = time.perf_counter()
    for _ in range(n // batch):
        os.write(fd, chunk)
        if sync_each:
            os.fsync(fd)
    os.fsync(fd)
    elapsed = time.perf_counter() - t0
    os.close(fd)
    os.unlink(path)
    return elapsed


async def executor_hop(root: str) -> dict[str, float]:
    """Cost of a 100 KB pwrite inline vs. through the default executor (µs per write)."""
    loop = asyncio.get_running_loop()
    data = os.urandom(100 * 1024)
    fd = os.open(os.path.join(root, "hop.bin"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    n = 2000
    t0 = time.perf_counter()
    for i in range(n):
        os.pwrite(fd, data, i * len(data))
    inline = (time.perf_counter() - t0) / n * 1e6
    t0 = time.perf_counter()
    for i in range(n):
        await loop.run_in_executor(None, os.pwrite, fd, data, i * len(data))
    hop = (time.perf_counter() - t0) / n * 1e6
    t0 = time.perf_counter()
    for _ in range(200):
        os.fsync(fd)
        os.pwrite(fd, b"x", 0)
    fsync_us = (time.perf_counter() - t0) / 200 * 1e6
    os.close(fd)
    return {"pwrite_inline_us": inline, "pwrite_executor_us": hop, "fsync_us": fsync_us}


async def many_shards(n_shards: int, root: str) -> dict[str, float]:
    """LevelDB with n_shards shards of 10 records: load, reopen time, read latency."""
    path = os.path.join(root, "many")
    eng = await open_engine(LevelDBConfig(path=path, fsync="never", default_shard=SHARD))
    recs = [Record(b"m" * 100, key=b"k%d" % i, timestamp_ms=1) for i in range(10)]
    t0 = time.perf_counter()
    for i in range(n_shards):
        name = f"topic-{i:08d}"
        await eng.create_shard(name)
        await eng.append(name, recs)
    load_s = time.perf_counter() - t0
    await eng.close()
    t0 = time.perf_counter()
    eng = await open_engine(LevelDBConfig(path=path, fsync="never", default_shard=SHARD))
    open_s = time.perf_counter() - t0
    rng = random.Random(7)
    lat = []
    for _ in range(20_000):
        name = f"topic-{rng.randrange(n_shards):08d}"
        off = rng.randrange(10)
        t = time.perf_counter()
        got = await eng.read(name, off, max_records=1)
        lat.append(time.perf_counter() - t)
        assert got[0].offset == off
    lat_warm = []
    for _ in range(20_000):
        name = f"topic-{rng.randrange(min(n_shards, 1000)):08d}"
        t = time.perf_counter()
        await eng.read(name, rng.randrange(10), max_records=1)
        lat_warm.append(time.perf_counter() - t)
    await eng.close()
    du = sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path))
    shutil.rmtree(path, ignore_errors=True)
    lat.sort()
    lat_warm.sort()
    return {
        "shards": n_shards,
        "load_s": load_s,
        "open_s": open_s,
        "db_mb": du / 1e6,
        "read_cold_p50_us": lat[len(lat) // 2] * 1e6,
        "read_cold_p99_us": lat[int(len(lat) * 0.99)] * 1e6,
        "read_warm_p50_us": lat_warm[len(lat_warm) // 2] * 1e6,
        "read_mean_us": statistics.fmean(lat) * 1e6,
    }


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--dir", default=None, help="where to write (default: a temp dir)")
    ap.add_argument("--engines", default="memory,leveldb,segment")
    ap.add_argument("--fsync", default="never,interval,always")
    ap.add_argument("--sizes", default="100,1024")
    ap.add_argument("--batches", default="1,100,1000")
    ap.add_argument("--shards", type=int, default=0, help="LevelDB many-shards test size")
    ap.add_argument("--json", default=None)
    ap.add_argument("--no-table", action="store_true", help="only the --shards test")
    ap.add_argument("--repeat", type=int, default=3, help="runs per cell; the best counts")
    args = ap.parse_args()
    root = tempfile.mkdtemp(prefix="robustmq-bench-", dir=args.dir)
    seg_io = load("segment_io")
    print(
        f"segment_io: {'compiled' if compiled(seg_io) else 'pure Python'}; "
        f"crc32c hw: {seg_io.crc32c_hw()}; dir: {root}"
    )
    results = []
    try:
        hop = await executor_hop(root)
        print(
            f"100 KB pwrite inline {hop['pwrite_inline_us']:.1f} µs, via executor "
            f"{hop['pwrite_executor_us']:.1f} µs; fsync of a small file {hop['fsync_us']:.0f} µs"
        )
        header = (
            f"{'engine':8} {'fsync':8} {'size':>5} {'batch':>5} {'records':>8} "
            f"{'append rec/s':>12} {'MB/s':>7} {'read rec/s':>11} {'read MB/s':>9} {'% raw':>6}"
        )
        print(header)
        for size in [] if args.no_table else map(int, args.sizes.split(",")):
            for batch in map(int, args.batches.split(",")):
                n_raw = volume(size, batch, "never", args.quick)
                raw_s = min(raw_write(size, batch, n_raw, False, root) for _ in range(args.repeat))
                raw_mb = n_raw * size / raw_s / 1e6
                n_rawf = volume(size, batch, "always", args.quick)
                rawf_s = min(raw_write(size, batch, n_rawf, True, root) for _ in range(args.repeat))
                rawf_mb = n_rawf * size / rawf_s / 1e6
                print(
                    f"{'raw':8} {'end':8} {size:5} {batch:5} {n_raw:8} "
                    f"{n_raw / raw_s:12.0f} {raw_mb:7.1f}"
                )
                print(
                    f"{'raw':8} {'each':8} {size:5} {batch:5} {n_rawf:8} "
                    f"{n_rawf / rawf_s:12.0f} {rawf_mb:7.1f}"
                )
                results.append(
                    {
                        "engine": "raw",
                        "fsync": "end",
                        "size": size,
                        "batch": batch,
                        "records_s": n_raw / raw_s,
                        "mb_s": raw_mb,
                    }
                )
                results.append(
                    {
                        "engine": "raw",
                        "fsync": "each",
                        "size": size,
                        "batch": batch,
                        "records_s": n_rawf / rawf_s,
                        "mb_s": rawf_mb,
                    }
                )
                for engine_kind in args.engines.split(","):
                    policies = ["never"] if engine_kind == "memory" else args.fsync.split(",")
                    for fsync in policies:
                        n = volume(size, batch, fsync, args.quick)
                        runs = [
                            await bench_append(engine_kind, fsync, size, batch, n, root)
                            for _ in range(args.repeat)
                        ]
                        written = runs[0][0]
                        a_s = min(r[1] for r in runs)
                        r_s = min(r[2] for r in runs)
                        mb = written * size / a_s / 1e6
                        ref = rawf_mb if fsync == "always" else raw_mb
                        row = {
                            "engine": engine_kind,
                            "fsync": fsync if engine_kind != "memory" else "-",
                            "size": size,
                            "batch": batch,
                            "records": written,
                            "records_s": written / a_s,
                            "mb_s": mb,
                            "read_records_s": written / r_s,
                            "read_mb_s": written * size / r_s / 1e6,
                            "pct_raw": 100 * mb / ref,
                        }
                        results.append(row)
                        print(
                            f"{engine_kind:8} {row['fsync']:8} {size:5} {batch:5} {written:8} "
                            f"{row['records_s']:12.0f} {mb:7.1f} {row['read_records_s']:11.0f} "
                            f"{row['read_mb_s']:9.1f} {row['pct_raw']:5.0f}%",
                            flush=True,
                        )
        if args.shards:
            many = await many_shards(args.shards, root)
            print("leveldb many shards:", json.dumps({k: round(v, 2) for k, v in many.items()}))
            results.append({"engine": "leveldb-many-shards", **many})
        results.append({"engine": "executor-hop", **hop})
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    asyncio.run(main())
