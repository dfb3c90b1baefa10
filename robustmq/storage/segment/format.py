"""On-disk formats of the segment engine: file headers, index files, names, atomic writes.

Every file starts with the same fixed-width 32-byte header (little-endian)::

    4s magic | u16 version | u16 header_len (32) | i64 base_offset | i64 created_ms
    | u32 extra | u32 crc32c(bytes 0..28)

Magics: ``RMQL`` segment log, ``RMQI`` offset index, ``RMQT`` time index, ``RMQK`` the
key-value log. ``extra`` is 0 in logs and holds crc32c(entries) in index files, which are
written whole (write, fsync, rename). Each format version has its own reader in
``_INDEX_READERS``; version 1 is the only one so far. Frame layout is in
``robustmq/_core/segment_io.py``. Record logic (append, read, recovery) is in log.py.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Callable
from typing import NamedTuple
from urllib.parse import quote

from robustmq._core import segments as segment_io
from robustmq.errors import Corrupted

LOG_MAGIC = b"RMQL"
INDEX_MAGIC = b"RMQI"
TIMEINDEX_MAGIC = b"RMQT"
KV_MAGIC = b"RMQK"
VERSION = 1
HEADER_SIZE = 32
_HEADER = struct.Struct("<4sHHqqI")  # + u32 crc = 32 bytes
_U32 = struct.Struct("<I")

# .index entry: u32 offset relative to the segment base | u32 log position
INDEX_ENTRY = struct.Struct("<II")
# .timeindex entry: i64 largest timestamp before this offset | u32 relative offset.
# The last entry of a sealed segment is (largest timestamp in the segment, end offset).
TIME_ENTRY = struct.Struct("<qI")

LOG_SUFFIX = ".log"
INDEX_SUFFIX = ".index"
TIMEINDEX_SUFFIX = ".timeindex"


class FileHeader(NamedTuple):
    magic: bytes
    version: int
    base_offset: int
    created_ms: int
    extra: int


def pack_header(magic: bytes, base_offset: int, created_ms: int, extra: int = 0) -> bytes:
    head = _HEADER.pack(magic, VERSION, HEADER_SIZE, base_offset, created_ms, extra)
    return head + _U32.pack(segment_io.crc32c(head))


def unpack_header(data: bytes, magic: bytes, path: str) -> FileHeader:
    """The header at the start of ``data``; ``Corrupted`` if it is short, foreign or bad."""
    if len(data) < HEADER_SIZE:
        raise Corrupted(f"header is {len(data)} bytes, expected {HEADER_SIZE}", path, 0)
    got_magic, version, header_len, base, created, extra = _HEADER.unpack_from(data)
    if got_magic != magic:
        raise Corrupted(f"magic {got_magic!r} is not {magic!r}", path, 0)
    (crc,) = _U32.unpack_from(data, 28)
    if segment_io.crc32c(data[:28]) != crc:
        raise Corrupted("header CRC32C mismatch", path, 28)
    if version not in _SUPPORTED_VERSIONS or header_len != HEADER_SIZE:
        raise Corrupted(f"unsupported format version {version}", path, 4)
    return FileHeader(got_magic, version, base, created, extra)


def segment_name(base_offset: int) -> str:
    """Kafka-style 20-digit zero-padded base offset."""
    return f"{base_offset:020d}"


def parse_segment_name(filename: str) -> int | None:
    stem, dot, suffix = filename.partition(".")
    if dot and "." + suffix == LOG_SUFFIX and len(stem) == 20 and stem.isdigit():
        return int(stem)
    return None


def shard_dirname(shard: str) -> str:
    """A directory name for a shard: percent-quoted, hashed if too long for a file name."""
    name = "s-" + quote(shard, safe="-_")
    if len(name) > 200:
        name = "h-" + hashlib.sha256(shard.encode()).hexdigest()
    return name


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file_atomic(path: str, data: bytes, sync: bool = True) -> None:
    """Replace ``path`` whole: write a temp file, fsync it, rename over, fsync the dir."""
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    if sync:
        fsync_dir(os.path.dirname(path) or ".")


def encode_index(base_offset: int, created_ms: int, entries: list[tuple[int, int]]) -> bytes:
    """An .index file: (absolute offset, position) pairs."""
    body = b"".join(INDEX_ENTRY.pack(off - base_offset, pos) for off, pos in entries)
    return pack_header(INDEX_MAGIC, base_offset, created_ms, segment_io.crc32c(body)) + body


def encode_timeindex(base_offset: int, created_ms: int, entries: list[tuple[int, int]]) -> bytes:
    """A .timeindex file: (largest timestamp before, absolute offset) pairs."""
    body = b"".join(TIME_ENTRY.pack(ts, off - base_offset) for ts, off in entries)
    return pack_header(TIMEINDEX_MAGIC, base_offset, created_ms, segment_io.crc32c(body)) + body


def _read_index_v1(
    data: bytes, header: FileHeader, entry: struct.Struct, path: str
) -> list[tuple[int, ...]]:
    body = data[HEADER_SIZE:]
    if len(body) % entry.size or segment_io.crc32c(body) != header.extra:
        raise Corrupted("index entries fail their CRC32C or size", path, HEADER_SIZE)
    return list(entry.iter_unpack(body))


_INDEX_READERS: dict[int, Callable[[bytes, FileHeader, struct.Struct, str], list]] = {
    1: _read_index_v1,
}
_SUPPORTED_VERSIONS = frozenset(_INDEX_READERS)


def read_index(path: str, base_offset: int) -> list[tuple[int, int]]:
    """(absolute offset, position) pairs of an .index file; ``Corrupted``/``OSError``."""
    with open(path, "rb") as f:
        data = f.read()
    header = unpack_header(data, INDEX_MAGIC, path)
    if header.base_offset != base_offset:
        raise Corrupted(f"index base offset {header.base_offset} != {base_offset}", path, 8)
    rows = _INDEX_READERS[header.version](data, header, INDEX_ENTRY, path)
    return [(base_offset + rel, pos) for rel, pos in rows]


def read_timeindex(path: str, base_offset: int) -> list[tuple[int, int]]:
    """(largest timestamp before, absolute offset) pairs of a .timeindex file."""
    with open(path, "rb") as f:
        data = f.read()
    header = unpack_header(data, TIMEINDEX_MAGIC, path)
    if header.base_offset != base_offset:
        raise Corrupted(f"timeindex base offset {header.base_offset} != {base_offset}", path, 8)
    rows = _INDEX_READERS[header.version](data, header, TIME_ENTRY, path)
    return [(ts, base_offset + rel) for ts, rel in rows]
