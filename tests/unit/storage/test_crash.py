"""Crash tests: a child appends with fsync=always and is SIGKILLed at a random moment.

After each kill the parent reopens the data directory and checks that every append the
child saw return is there with its bytes, in order, and that the log reads cleanly to its
end; then the next child continues on the same directory. Bounded: 5 kills per engine.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import robustmq
from robustmq.storage import open_engine
from robustmq.storage.engine import LevelDBConfig, SegmentConfig

CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from robustmq.storage import open_engine
    from robustmq.storage.engine import LevelDBConfig, SegmentConfig, ShardConfig, Record
    from robustmq.errors import ShardExists

    kind, path, round_no = sys.argv[1], sys.argv[2], int(sys.argv[3])

    async def main():
        if kind == "segment":
            cfg = SegmentConfig(path=path, fsync="always", index_interval_bytes=512)
        else:
            cfg = LevelDBConfig(path=path, fsync="always")
        engine = await open_engine(cfg)
        try:
            await engine.create_shard("c", ShardConfig(segment_bytes=64 * 1024))
        except ShardExists:
            pass
        print("ready", flush=True)

        async def writer(task):
            seq = 0
            while True:
                n = 1 + (seq % 7)
                values = [b"%d:%d:%d:%d|" % (round_no, task, seq, i) * 8 for i in range(n)]
                got = await engine.append("c", [Record(v) for v in values])
                sys.stdout.write("ack %d %d %d %d %d\\n" % (got.start, got.stop, round_no, task, seq))
                sys.stdout.flush()
                seq += 1

        await asyncio.gather(*(writer(t) for t in range(4)))

    asyncio.run(main())
    """
)


def expected_values(round_no: int, task: int, seq: int) -> list[bytes]:
    n = 1 + (seq % 7)
    return [b"%d:%d:%d:%d|" % (round_no, task, seq, i) * 8 for i in range(n)]


async def verify(kind: str, path: str, acked: list[tuple[int, int, int, int, int]]) -> int:
    cfg = (
        SegmentConfig(path=path, fsync="always")
        if kind == "segment"
        else LevelDBConfig(path=path, fsync="always")
    )
    engine = await open_engine(cfg)
    try:
        latest = await engine.latest_offset("c")
        assert latest >= max((a[1] for a in acked), default=0)
        everything = []
        offset = 0
        while offset < latest:
            chunk = await engine.read("c", offset, max_records=5000, max_bytes=1 << 24)
            assert chunk, f"no records at {offset} < latest {latest}"
            everything += chunk
            offset = chunk[-1].offset + 1
        assert [r.offset for r in everything] == list(range(latest))
        for start, stop, round_no, task, seq in acked:
            got = [r.value for r in everything[start:stop]]
            assert got == expected_values(round_no, task, seq), (start, stop)
        return latest
    finally:
        await engine.close()


@pytest.mark.parametrize("kind", ["segment", "leveldb"])
def test_sigkill_loses_no_acknowledged_append(tmp_path, kind: str) -> None:
    path = str(tmp_path / kind)
    rng = random.Random(1234)
    acked: list[tuple[int, int, int, int, int]] = []
    root = os.path.dirname(os.path.dirname(os.path.abspath(robustmq.__file__)))
    env = dict(os.environ, PYTHONPATH=root)
    for round_no in range(5):
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, kind, path, str(round_no)],
            stdout=subprocess.PIPE,
            env=env,
        )
        assert child.stdout is not None
        assert child.stdout.readline().strip() == b"ready"
        deadline = time.monotonic() + rng.uniform(0.05, 0.4)
        lines = []
        while time.monotonic() < deadline:
            line = child.stdout.readline()
            if not line:
                break
            lines.append(line)
        child.send_signal(signal.SIGKILL)
        rest = child.stdout.read()  # acks written before the kill still count
        child.wait()
        for line in lines + rest.splitlines():
            parts = line.split()
            if len(parts) == 6 and parts[0] == b"ack":
                acked.append(tuple(int(p) for p in parts[1:]))  # type: ignore[arg-type]
        latest = asyncio.run(verify(kind, path, acked))
        assert latest > 0
    assert len(acked) > 20
