"""The durable Raft log on real files: reopen, torn tails, corruption, compaction, SIGKILL.

Each test works in its own temporary directory and runs on both framing twins (ids py/c:
the pure-Python ``segment_io`` and its compiled twin). The SIGKILL test runs a child
process that appends with fsync and reports every batch it saw synced; after the kill,
everything it reported must come back.
"""

from __future__ import annotations

import importlib
import os
import random
import signal
import subprocess
import sys

import pytest

from robustmq.errors import RaftCompacted, RaftLogCorrupted, RaftUnavailable
from robustmq.meta.raft import (
    Config,
    ConfState,
    Entry,
    EntryType,
    HardState,
    RawNode,
    Snapshot,
    SnapshotMeta,
    StateType,
    log_store,
)
from robustmq.meta.raft.log_store import LogStore

TWINS = {"py": importlib.import_module("robustmq._core.segment_io")}
try:
    TWINS["c"] = importlib.import_module("robustmq._core._segment_io")
except ImportError:
    pass


@pytest.fixture(autouse=True, params=sorted(TWINS))
def framing(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(log_store, "segment_io", TWINS[request.param])


def ents(first: int, last: int, term: int = 1, tag: str = "") -> list[Entry]:
    return [Entry(term, i, data=f"{tag}{i}".encode() * 3) for i in range(first, last + 1)]


def segment_paths(d: str) -> list[str]:
    return sorted(os.path.join(d, n) for n in os.listdir(d) if n.endswith(".raftlog"))


def test_reopen_round_trip(tmp_path: pytest.TempPathFactory) -> None:
    d = str(tmp_path)
    st = LogStore(d)
    written = [*ents(1, 50), Entry(2, 51, EntryType.CONF_CHANGE, b"\x00" * 9)]
    st.save(HardState(2, 3, 40), written)
    st.close()
    st = LogStore(d)
    assert st.recovery.entries == 51 and st.recovery.truncated_bytes == 0
    assert st.initial_state()[0] == HardState(2, 3, 40)
    assert st.entries(1, 52, 1 << 30) == written
    assert (st.first_index(), st.last_index(), st.term(51)) == (1, 51, 2)
    with pytest.raises(RaftUnavailable):
        st.term(52)
    st.close()


def test_hard_state_only_rewritten_when_term_or_vote_change(tmp_path) -> None:
    d = str(tmp_path)
    st = LogStore(d)
    st.save(HardState(1, 1, 0), ents(1, 3))
    before = os.stat(os.path.join(d, "hardstate")).st_mtime_ns
    st.save(HardState(1, 1, 3), ents(4, 4))  # commit only: no rewrite, no extra fsync
    assert os.stat(os.path.join(d, "hardstate")).st_mtime_ns == before
    assert LogStore(d).initial_state()[0] == HardState(1, 1, 0)  # a stale commit is fine
    st.close()
    assert LogStore(d).initial_state()[0] == HardState(1, 1, 3)  # close writes the latest


def test_segments_roll_and_conflicting_suffix_is_cut(tmp_path) -> None:
    d = str(tmp_path)
    st = LogStore(d, segment_bytes=4096)
    st.save(HardState(1, 1, 10), ents(1, 300))
    assert len(segment_paths(d)) == 3
    # A new leader's entries from 100 on replace ours (follower log repair), which cuts
    # the first segment and deletes the two after it.
    st.save(HardState(2, 2, 10), ents(100, 130, term=2, tag="new"))
    assert st.last_index() == 130 and st.term(99) == 1 and st.term(100) == 2
    firsts = [int(os.path.basename(p).split(".")[0]) for p in segment_paths(d)]
    assert firsts[0] == 1 and all(100 < f <= 130 for f in firsts[1:])
    st.close()
    st = LogStore(d, segment_bytes=4096)
    assert st.last_index() == 130
    assert st.entries(98, 131, 1 << 30) == [*ents(98, 99), *ents(100, 130, 2, "new")]
    st.save(None, ents(131, 140, term=2, tag="new"))
    st.close()
    assert LogStore(d).last_index() == 140


def test_compaction_deletes_whole_old_segments(tmp_path) -> None:
    d = str(tmp_path)
    st = LogStore(d, segment_bytes=4096)
    st.save(HardState(1, 1, 300), ents(1, 300))
    n = len(segment_paths(d))
    st.create_snapshot(200, ConfState((1, 2, 3)), b"state@200")
    left = segment_paths(d)
    assert len(left) < n
    assert int(os.path.basename(left[0]).split(".")[0]) <= 201  # the straddling one stays
    assert st.first_index() == 201 and st.term(200) == 1
    with pytest.raises(RaftCompacted):
        st.entries(200, 202, 1 << 30)
    st.close()
    st = LogStore(d, segment_bytes=4096)
    assert (st.first_index(), st.last_index()) == (201, 300)
    assert st.snapshot().data == b"state@200"
    assert st.initial_state()[1] == ConfState((1, 2, 3))
    assert st.entries(201, 301, 1 << 30) == ents(201, 300)


def test_install_snapshot_replaces_the_log(tmp_path) -> None:
    d = str(tmp_path)
    st = LogStore(d)
    st.save(HardState(1, 1, 5), ents(1, 10))
    snap = Snapshot(SnapshotMeta(500, 7, ConfState((1, 2), (3,))), b"leader state")
    st.save(HardState(7, 0, 500), [], snap)
    assert segment_paths(d) == []
    st.save(None, ents(501, 505, term=7))
    st.close()
    st = LogStore(d)
    assert (st.first_index(), st.last_index(), st.term(500)) == (501, 505, 7)
    assert st.snapshot() == snap


def test_stale_log_under_an_installed_snapshot_is_dropped_on_recovery(tmp_path) -> None:
    """A crash after the snapshot file was replaced but before the old segments went."""
    d = str(tmp_path)
    st = LogStore(d)
    st.save(HardState(1, 1, 0), ents(1, 10))
    st.close()
    snap = Snapshot(SnapshotMeta(8, 5, ConfState((1,))), b"s")
    with open(os.path.join(d, "snapshot"), "wb") as f:
        f.write(LogStore._encode_snapshot(snap))
    st = LogStore(d)
    assert (st.first_index(), st.last_index()) == (9, 8)  # our entry 8 had term 1, not 5


def _last_frame_bounds(path: str) -> tuple[int, int]:
    from robustmq._core import segments as segment_io

    with open(path, "rb") as f:
        buf = f.read()
    rows, _, _ = segment_io.frames(memoryview(buf)[16:], 16)
    return rows[-1][3], len(buf)


def test_torn_tail_at_every_byte_of_the_last_frame(tmp_path) -> None:
    d = str(tmp_path / "src")
    st = LogStore(d)
    st.save(HardState(1, 1, 0), ents(1, 20))
    st.close()
    (path,) = segment_paths(d)
    start, end = _last_frame_bounds(path)
    with open(path, "rb") as f:
        whole = f.read()
    for cut in range(start, end):
        case = str(tmp_path / f"cut{cut}")
        os.makedirs(case)
        with open(os.path.join(case, os.path.basename(path)), "wb") as f:
            f.write(whole[:cut])
        st = LogStore(case)
        assert st.last_index() == 19, cut
        assert st.recovery.truncated_bytes == cut - start, cut
        assert os.path.getsize(os.path.join(case, os.path.basename(path))) == start
        st.save(None, ents(20, 21, tag="again"))  # the log goes on after the cut
        st.close()
        assert LogStore(case).entries(19, 22, 1 << 30)[1:] == ents(20, 21, tag="again")


def test_crc_mismatch_in_last_frame_is_a_torn_tail(tmp_path) -> None:
    d = str(tmp_path)
    st = LogStore(d)
    st.save(HardState(1, 1, 0), ents(1, 20))
    st.close()
    (path,) = segment_paths(d)
    start, end = _last_frame_bounds(path)
    with open(path, "r+b") as f:
        f.seek(end - 2)
        f.write(b"\xff\xfe")
    st = LogStore(d)
    assert st.last_index() == 19 and st.recovery.truncated_bytes == end - start
    assert st.recovery.truncated_path == path


def test_zeros_after_the_last_frame_are_a_torn_tail(tmp_path) -> None:
    d = str(tmp_path)
    st = LogStore(d)
    st.save(HardState(1, 1, 0), ents(1, 5))
    st.close()
    (path,) = segment_paths(d)
    with open(path, "ab") as f:
        f.write(b"\x00" * 300)
    assert LogStore(d).last_index() == 5


def test_corruption_in_the_middle_is_an_error(tmp_path) -> None:
    d = str(tmp_path)
    st = LogStore(d)
    st.save(HardState(1, 1, 0), ents(1, 20))
    st.close()
    (path,) = segment_paths(d)
    with open(path, "r+b") as f:
        f.seek(16 + 30)  # inside the first frame's body
        b = f.read(1)
        f.seek(16 + 30)
        f.write(bytes([b[0] ^ 0x55]))
    with pytest.raises(RaftLogCorrupted, match=r"CRC32C.* at byte 16"):
        LogStore(d)


def test_corruption_in_an_older_segment_is_an_error(tmp_path) -> None:
    d = str(tmp_path)
    st = LogStore(d, segment_bytes=4096)
    st.save(HardState(1, 1, 0), ents(1, 300))
    st.close()
    first = segment_paths(d)[0]
    size = os.path.getsize(first)
    with open(first, "r+b") as f:
        f.truncate(size - 3)  # a torn tail, but not in the last segment
    with pytest.raises(RaftLogCorrupted):
        LogStore(d)


@pytest.mark.parametrize(
    ("name", "damage"),
    [
        ("hardstate", lambda b: b[:-1] + bytes([b[-1] ^ 1])),
        ("hardstate", lambda b: b[:10]),
        ("snapshot", lambda b: b"XXXX" + b[4:]),
        ("snapshot", lambda b: b[:-1] + bytes([b[-1] ^ 1])),
    ],
)
def test_damaged_state_files_are_errors(tmp_path, name, damage) -> None:
    d = str(tmp_path)
    st = LogStore(d)
    st.save(HardState(1, 1, 0), ents(1, 3))
    st.create_snapshot(2, ConfState((1,)), b"snap")
    st.close()
    p = os.path.join(d, name)
    with open(p, "rb") as f:
        raw = f.read()
    with open(p, "wb") as f:
        f.write(damage(raw))
    with pytest.raises(RaftLogCorrupted, match=name):
        LogStore(d)


def test_bad_segment_header_is_an_error(tmp_path) -> None:
    d = str(tmp_path)
    st = LogStore(d)
    st.save(HardState(1, 1, 0), ents(1, 3))
    st.close()
    (path,) = segment_paths(d)
    with open(path, "r+b") as f:
        f.write(b"NOPE")
    with pytest.raises(RaftLogCorrupted, match="magic"):
        LogStore(d)


def test_bad_arguments_and_closed_store(tmp_path) -> None:
    with pytest.raises(ValueError, match="segment_bytes"):
        LogStore(str(tmp_path), segment_bytes=10)
    st = LogStore(str(tmp_path))
    with pytest.raises(RaftUnavailable):
        st.append(ents(5, 6))  # a gap after the last index
    st.close()
    with pytest.raises(RaftLogCorrupted, match="closed"):
        st.save(None, ents(1, 1))


def test_raw_node_restarts_from_the_log(tmp_path) -> None:
    d = str(tmp_path)

    def drive(node: RawNode, st: LogStore, applied: list[bytes]) -> None:
        while node.has_ready():
            rd = node.ready()
            st.save(rd.hard_state, rd.entries, rd.snapshot, rd.must_sync)
            applied += [e.data for e in rd.committed_entries if e.type == EntryType.NORMAL]
            node.advance(rd)

    st = LogStore(d)
    node = RawNode(Config(id=1, peers=(1,)), st, random.Random(1))
    applied: list[bytes] = []
    drive(node, st, applied)
    node.campaign()
    for i in range(10):
        node.propose(b"cmd%d" % i)
        drive(node, st, applied)
    st.create_snapshot(node.applied - 3, node.conf_state(), b"sm")
    st.close()
    st = LogStore(d)
    node = RawNode(Config(id=1, applied=st.first_index() - 1), st, random.Random(1))
    again: list[bytes] = []
    drive(node, st, again)
    assert again == [b"cmd7", b"cmd8", b"cmd9"]  # the entries after the snapshot
    node.campaign()
    drive(node, st, again)
    node.propose(b"more")
    drive(node, st, again)
    assert node.state == StateType.LEADER and node.term == 3 and again[-1] == b"more"


CHILD = r"""
import sys
from robustmq.meta.raft import Entry, HardState
from robustmq.meta.raft.log_store import LogStore
st = LogStore(sys.argv[1], segment_bytes=8192)
i = st.last_index()
while True:
    batch = [Entry(1, i + k, data=b"%d" % (i + k) * 20) for k in range(1, 8)]
    st.save(HardState(1, 1, 0), batch)
    i += 7
    print(i, flush=True)
"""


@pytest.mark.parametrize("seed", range(3))
def test_sigkill_loses_nothing_acknowledged(tmp_path, seed) -> None:
    d = str(tmp_path)
    rng = random.Random(seed)
    acked = 0
    for _ in range(2):  # kill, recover, append more, kill again
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, d], stdout=subprocess.PIPE, text=True
        )
        assert child.stdout is not None
        stop_after = rng.randint(3, 60)
        for _ in range(stop_after):
            line = child.stdout.readline()
            assert line, "child died before it was killed"
            acked = int(line)
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        child.stdout.close()
        st = LogStore(d, segment_bytes=8192)
        assert st.last_index() >= acked
        got = st.entries(1, st.last_index() + 1, 1 << 40)
        assert [e.index for e in got] == list(range(1, st.last_index() + 1))
        assert all(e.data == b"%d" % e.index * 20 for e in got)
        st.close()
