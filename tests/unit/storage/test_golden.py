"""Golden segment files (golden/, made once by golden/make_golden.py): today's code must
read them and reproduce them byte for byte, and must cut or refuse the damaged ones."""

from __future__ import annotations

import json
import logging
import os
import shutil

import pytest

from robustmq.errors import Corrupted
from robustmq.storage.engine import SegmentConfig, StoredBatch, StoredRecord
from robustmq.storage.segment import SegmentEngine
from robustmq.storage.segment.format import read_index, read_timeindex

from .golden import make_golden

GOLDEN = os.path.join(os.path.dirname(__file__), "golden")
CREATED = make_golden.CREATED
EXPECTED = [
    StoredRecord(0, CREATED + 1, b"k1", b"hello", (("content-type", b"text/plain"),)),
    StoredRecord(1, CREATED + 2, None, b"", ()),
    StoredRecord(2, CREATED + 3, b"", b"\x00\xff" * 10, ()),
]


def golden(name: str) -> bytes:
    with open(os.path.join(GOLDEN, name), "rb") as f:
        return f.read()


def test_writer_reproduces_golden_bytes() -> None:
    assert make_golden.records_log() == golden("records.log")
    assert make_golden.batches_log() == golden("batches.log")


def test_golden_index_files() -> None:
    assert read_index(os.path.join(GOLDEN, "records.index"), 0) == [(0, 32), (2, 137)]
    assert read_timeindex(os.path.join(GOLDEN, "records.timeindex"), 0) == [
        (-1, 0),
        (CREATED + 2, 2),
        (CREATED + 3, 3),
    ]


async def open_with(tmp_path, log_name: str) -> SegmentEngine:
    """An engine whose only shard 'g' has the golden file as its one segment."""
    shard = tmp_path / "data" / "shards" / "s-g"
    shard.mkdir(parents=True)
    (shard / "shard.json").write_text(
        json.dumps(
            {
                "name": "g",
                "config": {
                    "retention_ms": None,
                    "retention_bytes": None,
                    "segment_bytes": 4096,
                    "segment_ms": None,
                },
            }
        )
    )
    shutil.copy(os.path.join(GOLDEN, log_name), shard / "00000000000000000000.log")
    return await SegmentEngine.open(SegmentConfig(path=str(tmp_path / "data")))


async def test_read_golden_records(tmp_path) -> None:
    engine = await open_with(tmp_path, "records.log")
    assert await engine.read("g", 0) == EXPECTED
    assert await engine.latest_offset("g") == 3
    assert await engine.offset_for_timestamp("g", CREATED + 2) == 1
    await engine.close()


async def test_read_golden_batches(tmp_path) -> None:
    engine = await open_with(tmp_path, "batches.log")
    assert await engine.read_batches("g", 0) == [
        StoredBatch(0, 3, CREATED + 10, b"kafka-v2-batch-bytes"),
        StoredBatch(3, 2, CREATED + 20, b"second"),
    ]
    await engine.close()


@pytest.mark.parametrize("name", ["torn-tail.log", "bad-crc.log"])
async def test_damaged_tail_is_cut_and_logged(tmp_path, caplog, name: str) -> None:
    caplog.set_level(logging.WARNING)
    engine = await open_with(tmp_path, name)
    assert await engine.read("g", 0) == EXPECTED[:2]
    assert await engine.latest_offset("g") == 2
    size = len(golden(name))
    assert f"cut {size - 137} bytes" in caplog.text and "at byte 137" in caplog.text
    path = tmp_path / "data" / "shards" / "s-g" / "00000000000000000000.log"
    assert path.stat().st_size == 137
    # The cut log takes new appends where the good part ended.
    from robustmq.storage.engine import Record

    assert await engine.append("g", [Record(b"new")]) == range(2, 3)
    await engine.close()


@pytest.mark.parametrize(
    ("name", "why"), [("bad-magic.log", "magic"), ("future-version.log", "version 2")]
)
async def test_foreign_or_future_file_is_refused(tmp_path, name: str, why: str) -> None:
    with pytest.raises(Corrupted, match=why):
        await open_with(tmp_path, name)
