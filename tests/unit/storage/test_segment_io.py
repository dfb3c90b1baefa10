"""segment_io and its compiled twin: reference behaviour, twin equality, malformed input.

Every reference test runs on both twins (``segment_io`` fixture, ids py/c). The fuzz
tests feed random, truncated and bit-flipped frame bytes to both and require the same
clean status from each: never an exception, never a crash.
"""

from __future__ import annotations

import importlib
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from robustmq.storage.engine import Record, StoredBatch, StoredRecord

PY = importlib.import_module("robustmq._core.segment_io")
try:
    C = importlib.import_module("robustmq._core._segment_io")
except ImportError:  # pragma: no cover - the pure package
    C = None

needs_c = pytest.mark.skipif(C is None, reason="compiled _segment_io is not built")

# RFC 3720 (iSCSI) appendix B.4 CRC32C examples, and the standard check value.
RFC3720 = [
    (b"\x00" * 32, 0x8A9136AA),
    (b"\xff" * 32, 0x62A8AB43),
    (bytes(range(32)), 0x46DD794E),
    (bytes(range(31, -1, -1)), 0x113FDB5C),
    (
        bytes.fromhex(
            "01c00000000000000000000000000000"
            "14000000000004000000001400000018"
            "28000000000000000200000000000000"
        ),
        0xD9963A56,
    ),
    (b"123456789", 0xE3069283),
    (b"", 0),
]


@pytest.mark.parametrize(("data", "crc"), RFC3720)
def test_crc32c_vectors(segment_io, data: bytes, crc: int) -> None:
    assert segment_io.crc32c(data) == crc
    assert segment_io.crc32c(bytearray(data)) == crc
    assert segment_io.crc32c(memoryview(data)) == crc


def test_crc32c_continues(segment_io) -> None:
    data = bytes(range(256)) * 3
    for cut in (0, 1, 7, 8, 9, 100, len(data)):
        assert segment_io.crc32c(data[cut:], segment_io.crc32c(data[:cut])) == segment_io.crc32c(
            data
        )


@needs_c
@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=3000), st.integers(0, 0xFFFFFFFF))
def test_crc32c_hardware_table_and_python_agree(data: bytes, seed: int) -> None:
    expect = PY.crc32c(data, seed)
    assert C.crc32c(data, seed) == expect
    assert C.crc32c_sw(data, seed) == expect


@needs_c
def test_crc32c_large_buffer_releases_gil_path() -> None:
    data = bytes(range(256)) * 2048  # 512 KiB: above the no-GIL threshold
    assert C.crc32c(data) == C.crc32c_sw(data)


def _records() -> list[Record]:
    return [
        Record(b"v0"),
        Record(b"", key=b"", timestamp_ms=-5),
        Record(b"x" * 300, key=b"k", headers=(("a", b"1"), ("é", b"")), timestamp_ms=7),
        Record(bytearray(b"ba"), key=memoryview(b"mk"), timestamp_ms=2**62),  # type: ignore[arg-type]
    ]


def test_encode_scan_decode_round_trip(segment_io) -> None:
    data, entries, next_index, max_ts = segment_io.encode_records(_records(), 10, 1000, 32, 32, 64)
    assert max_ts == 2**62
    # Index points at frames starting at/after 32, 32+64, ...: the first and big ones.
    assert [e[0] for e in entries] == [10, 12, 13]
    assert entries[0] == (10, 32, -1)
    assert entries[2][2] == 1000  # largest timestamp before offset 13
    valid, next_offset, smax, sentries, status, nframes = segment_io.scan(data, 32, 10, 32, 64)
    assert (valid, next_offset, smax, status, nframes) == (len(data), 14, 2**62, 0, 4)
    assert sentries == entries and next_index > entries[-1][1]
    got, pos, status = segment_io.decode(data, 0, 100, 1 << 20, StoredRecord)
    assert (pos, status) == (len(data), segment_io.OK)
    assert got == [
        StoredRecord(10, 1000, None, b"v0", ()),
        StoredRecord(11, -5, b"", b"", ()),
        StoredRecord(12, 7, b"k", b"x" * 300, (("a", b"1"), ("é", b""))),
        StoredRecord(13, 2**62, b"mk", b"ba", ()),
    ]
    # From an offset, with limits: skipped frames count, the stop position is a frame start.
    got, pos, status = segment_io.decode(data, 12, 1, 1 << 20, StoredRecord)
    assert [r.offset for r in got] == [12] and status == segment_io.OK
    rest, _, _ = segment_io.decode(data[pos:], 0, 100, 1 << 20, StoredRecord)
    assert [r.offset for r in rest] == [13]
    one, _, _ = segment_io.decode(data, 0, 100, 1, StoredRecord)
    assert len(one) == 1  # max_bytes never returns nothing
    rows, valid, status = segment_io.frames(data, 32)
    assert [(o, c, t) for o, c, t, _ in rows] == [
        (10, 1, 1000),
        (11, 1, -5),
        (12, 1, 7),
        (13, 1, 2**62),
    ]
    assert rows[0][3] == 32 and valid == len(data)


def test_batches(segment_io) -> None:
    frame = segment_io.encode_batch(5, 3, 99, b"opaque")
    assert len(frame) == segment_io.FRAME_HEADER + segment_io.BODY_HEADER + 6
    got, pos, status = segment_io.decode_batches(frame, 6, 1 << 20, StoredBatch)
    assert got == [StoredBatch(5, 3, 99, b"opaque")] and status == segment_io.OK
    assert segment_io.decode_batches(frame, 8, 1 << 20, StoredBatch)[0] == []
    assert segment_io.decode(frame, 0, 10, 100, StoredRecord)[2] == segment_io.WRONG_KIND
    records = segment_io.encode_records([Record(b"r")], 8, 0)[0]
    assert segment_io.decode_batches(records, 0, 100, StoredBatch)[2] == segment_io.WRONG_KIND
    assert segment_io.scan(frame + records, 0, 5)[1:3] == (9, 99)
    assert segment_io.scan(frame + records, 0, 6)[4] == segment_io.CORRUPT  # offset gap


def test_batch_head_is_the_frame_of_the_patched_batch(segment_io) -> None:
    batch = bytes(range(40))
    base = 0x0102030405060708
    for at in (0, 5, 32):
        head, rest = segment_io.encode_batch_head(base, 3, 77, batch, at)
        patched = batch[:at] + base.to_bytes(8, "big") + batch[at + 8 :]
        assert rest == at + 8
        assert head + batch[rest:] == segment_io.encode_batch(base, 3, 77, patched)
    head, rest = segment_io.encode_batch_head(9, 1, -1, memoryview(batch))
    assert rest == 0 and head + batch == segment_io.encode_batch(9, 1, -1, batch)
    # A negative base offset is stored as Kafka's two's complement, as patch_base_offset does.
    head, _ = segment_io.encode_batch_head(-2, 1, 0, batch, 0)
    assert head.endswith((-2).to_bytes(8, "big", signed=True))
    assert segment_io.scan(head + batch[8:], 0, -1)[4] == segment_io.CORRUPT  # offset < 0


def test_batch_head_leaves_the_batch_alone(segment_io) -> None:
    batch = bytearray(b"\xaa" * 16)
    head, rest = segment_io.encode_batch_head(1, 1, 0, batch, 0)
    assert batch == bytearray(b"\xaa" * 16) and rest == 8
    got = segment_io.decode_batches(head + batch[rest:], 0, 1 << 20, StoredBatch)[0]
    assert got[0].data == (1).to_bytes(8, "big") + b"\xaa" * 8


@pytest.mark.parametrize("at", [9, 100, 2**40])
def test_batch_head_refuses_a_base_offset_outside_the_batch(segment_io, at: int) -> None:
    with pytest.raises(ValueError, match="outside the 16-byte batch"):
        segment_io.encode_batch_head(0, 1, 0, b"x" * 16, at)


def test_statuses(segment_io) -> None:
    data = segment_io.encode_records([Record(b"a" * 40), Record(b"b")], 0, 0)[0]
    first = len(data) - (len(data) - 8 - 21 - 6 - 40)
    assert segment_io.scan(data[:-1], 0, 0)[::4] == (first, segment_io.INCOMPLETE)
    assert segment_io.scan(data[:3], 0, 0)[4] == segment_io.INCOMPLETE
    flipped = bytearray(data)
    flipped[20] ^= 0x10
    assert segment_io.scan(bytes(flipped), 0, 0)[::4] == (0, segment_io.CORRUPT)
    bad_len = struct.pack("<I", 3) + data[4:]
    assert segment_io.scan(bad_len, 0, 0)[4] == segment_io.CORRUPT
    assert segment_io.decode(bytes(flipped), 0, 10, 100, StoredRecord)[1:] == (
        0,
        segment_io.CORRUPT,
    )
    assert segment_io.frames(data[:-1], 0)[1:] == (first, segment_io.INCOMPLETE)


def test_encode_rejects_what_does_not_fit(segment_io) -> None:
    with pytest.raises(ValueError):
        segment_io.encode_records([Record(b"", headers=(("n" * 70000, b""),))], 0, 0)
    with pytest.raises(ValueError):
        segment_io.encode_records([Record(b"", headers=(("n", b""),) * 70000)], 0, 0)


# --- twins compared -----------------------------------------------------------------
headers_st = st.lists(st.tuples(st.text(max_size=8), st.binary(max_size=16)), max_size=3).map(tuple)
record_st = st.builds(
    Record,
    value=st.binary(max_size=200),
    key=st.none() | st.binary(max_size=16),
    headers=headers_st,
    timestamp_ms=st.none() | st.integers(-(2**63), 2**63 - 1),
)


@needs_c
@settings(max_examples=150, deadline=None)
@given(
    st.lists(record_st, max_size=12),
    st.integers(0, 2**40),
    st.integers(32, 5000),
    st.integers(1, 300),
    st.integers(-1, 2**40),
)
def test_twins_encode_identically(records, base, position, interval, max_ts) -> None:
    args = (records, base, 1234, position, position, interval, max_ts)
    assert C.encode_records(*args) == PY.encode_records(*args)
    data = PY.encode_records(*args)[0]
    assert C.scan(data, position, base, position, interval, max_ts) == PY.scan(
        data, position, base, position, interval, max_ts
    )
    got = C.decode(data, base, 1000, 1 << 30, StoredRecord)
    assert got == PY.decode(data, base, 1000, 1 << 30, StoredRecord)
    assert [(r.value, r.key, r.headers) for r in got[0]] == [
        (bytes(r.value), r.key, r.headers) for r in records
    ]


@needs_c
@settings(max_examples=150, deadline=None)
@given(
    st.binary(max_size=300),
    st.integers(-(2**63), 2**63 - 1),
    st.integers(1, 2**32 - 1),
    st.integers(-(2**63), 2**63 - 1),
    st.integers(-1, 310),
)
def test_twins_encode_batch_heads_identically(batch, base, count, max_ts, at) -> None:
    def outcome(twin):
        try:
            return twin.encode_batch_head(base, count, max_ts, batch, at)
        except ValueError as exc:
            return str(exc)

    assert outcome(C) == outcome(PY)


def _valid_log() -> bytes:
    recs = [
        Record(
            b"value-%d" % i * (i % 4),
            key=b"k%d" % i if i % 2 else None,
            headers=(("h", b"x"),) * (i % 3),
        )
        for i in range(8)
    ]
    data = PY.encode_records(recs, 100, 5)[0]
    return (
        data + PY.encode_batch(108, 4, 77, b"kafka-batch") + PY.encode_records(recs[:2], 112, 6)[0]
    )


VALID = _valid_log()


def _all_loops(mod, buf: bytes):
    return (
        mod.scan(buf, 0, 100, 0, 16, -1),
        mod.scan(buf, 0, -1, 0, 1, -1),
        mod.decode(buf, 0, 1000, 1 << 30, StoredRecord),
        mod.decode(buf, 105, 3, 200, StoredRecord),
        mod.decode_batches(buf, 0, 1 << 30, StoredBatch),
        mod.decode_batches(buf, 109, 10, StoredBatch),
        mod.frames(buf, 0),
    )


def _check_clean(buf: bytes) -> None:
    py = _all_loops(PY, buf)
    for result in py:
        status = result[-2] if len(result) == 6 else result[-1]
        assert status in (PY.OK, PY.INCOMPLETE, PY.CORRUPT, PY.WRONG_KIND)
    if C is not None:
        assert _all_loops(C, buf) == py


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
def test_fuzz_random_bytes(buf: bytes) -> None:
    _check_clean(buf)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(VALID)))
def test_fuzz_truncated(cut: int) -> None:
    _check_clean(VALID[:cut])
    valid, *_ = PY.scan(VALID[:cut], 0, 100)
    assert valid <= cut


@settings(max_examples=400, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 7)),
        min_size=1,
        max_size=4,
        unique_by=lambda t: t[0],
    )
)
def test_fuzz_bit_flips(flips) -> None:
    buf = bytearray(VALID)
    for pos, bit in flips:
        buf[pos] ^= 1 << bit
    _check_clean(bytes(buf))
    # The CRC (or a length/offset check) catches every flip: scan never accepts the
    # frame that holds the first flipped byte.
    valid, *_ = PY.scan(bytes(buf), 0, 100)
    assert valid <= min(p for p, _ in flips)


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=21, max_size=120), st.integers(0, 2**32 - 1))
def test_fuzz_valid_crc_garbage_payload(body: bytes, _seed: int) -> None:
    """A frame whose CRC matches but whose body is nonsense (a bug or an attack, not
    bit rot) must still give CORRUPT or a clean parse, never an exception."""
    frame = struct.pack("<II", len(body), PY.crc32c(body)) + body
    _check_clean(frame)
    _check_clean(frame + VALID)
