# Type stub of the compiled twin _segment_io.pyx; the same API as segment_io.py.
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

_T = TypeVar("_T")
Buffer = bytes | bytearray | memoryview

FRAME_HEADER: int
BODY_HEADER: int
KIND_RECORD: int
KIND_BATCH: int
MAX_BODY: int
OK: int
INCOMPLETE: int
CORRUPT: int
WRONG_KIND: int

def crc32c(data: Buffer, crc: int = 0) -> int: ...
def crc32c_sw(data: Buffer, crc: int = 0) -> int: ...
def crc32c_hw() -> bool: ...
def encode_records(
    records: Sequence[Any],
    base_offset: int,
    now_ms: int,
    position: int = 0,
    next_index_position: int = 0,
    index_interval: int = 4096,
    max_ts: int = -1,
) -> tuple[bytes, list[tuple[int, int, int]], int, int]: ...
def encode_batch(base_offset: int, count: int, max_timestamp_ms: int, data: Buffer) -> bytes: ...
def encode_batch_head(
    base_offset: int,
    count: int,
    max_timestamp_ms: int,
    data: Buffer,
    base_offset_at: int = -1,
) -> tuple[bytes, int]: ...
def scan(
    buf: Buffer,
    position: int,
    expected_offset: int,
    next_index_position: int = 0,
    index_interval: int = 4096,
    max_ts: int = -1,
) -> tuple[int, int, int, list[tuple[int, int, int]], int, int]: ...
def decode(
    buf: Buffer, offset: int, max_records: int, max_bytes: int, make_record: Callable[..., _T]
) -> tuple[list[_T], int, int]: ...
def decode_batches(
    buf: Buffer, offset: int, max_bytes: int, make_batch: Callable[..., _T]
) -> tuple[list[_T], int, int]: ...
def frames(buf: Buffer, position: int) -> tuple[list[tuple[int, int, int, int]], int, int]: ...
