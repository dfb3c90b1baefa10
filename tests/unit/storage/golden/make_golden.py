"""Writes the golden segment files next to this script (run it only to add a format version).

The files are committed; test_golden.py checks that today's code reads them and writes the
same bytes. Changing an existing file here means the on-disk format changed: that needs a
new format version and a reader for it, not an edited golden file.
"""

from __future__ import annotations

import os
import struct

from robustmq._core import segments as segment_io
from robustmq.storage.engine import Record
from robustmq.storage.segment.format import (
    LOG_MAGIC,
    encode_index,
    encode_timeindex,
    pack_header,
)

HERE = os.path.dirname(os.path.abspath(__file__))
CREATED = 1_700_000_000_000
RECORDS = [
    Record(
        b"hello", key=b"k1", headers=(("content-type", b"text/plain"),), timestamp_ms=CREATED + 1
    ),
    Record(b"", timestamp_ms=CREATED + 2),
    Record(b"\x00\xff" * 10, key=b"", timestamp_ms=CREATED + 3),
]


def records_log() -> bytes:
    frames = segment_io.encode_records(RECORDS, 0, 0)[0]
    return pack_header(LOG_MAGIC, 0, CREATED) + frames


def batches_log() -> bytes:
    body = segment_io.encode_batch(0, 3, CREATED + 10, b"kafka-v2-batch-bytes")
    body += segment_io.encode_batch(3, 2, CREATED + 20, b"second")
    return pack_header(LOG_MAGIC, 0, CREATED) + body


def main() -> None:
    good = records_log()
    files = {
        "records.log": good,
        "batches.log": batches_log(),
        "torn-tail.log": good[:-5],
        "bad-crc.log": good[:-3] + bytes([good[-3] ^ 0x01]) + good[-2:],
        "bad-magic.log": b"XXXX" + good[4:],
        "future-version.log": (lambda h: h + struct.pack("<I", segment_io.crc32c(h)) + good[32:])(
            struct.pack("<4sHHqqI", LOG_MAGIC, 2, 32, 0, CREATED, 0)
        ),
        "records.index": encode_index(0, CREATED, [(0, 32), (2, 137)]),
        "records.timeindex": encode_timeindex(
            0, CREATED, [(-1, 0), (CREATED + 2, 2), (CREATED + 3, 3)]
        ),
    }
    for name, data in files.items():
        with open(os.path.join(HERE, name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()
