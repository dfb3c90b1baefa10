"""The Kafka codec, both twins (kafka_codec.py and the compiled _kafka_codec), against its
spec table, real bytes and each other.

Round trips: for every API, version and direction in the table, hypothesis builds bodies
from the field definitions themselves and checks decode(encode(x)) == x. Captured bytes:
requests kafka-python 3.0.12 and confluent-kafka 2.16.1 (librdkafka) sent to this broker,
decoded field by field. Fuzz: arbitrary and mutated frames raise a ``KafkaError`` (never
anything else). Record batches: header parsing, CRC32C checking, refused old formats.
Every test taking ``codec`` runs once per twin (ids py/c); the twin tests feed the same
random and mutated frames to both and require the same result or the same error.
"""

from __future__ import annotations

import struct
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from robustmq._core import kafka_codec as kc
from robustmq._core import segments as segment_io
from robustmq._core.kafka_spec import APIS, SUPPORTED, Field, f, in_range, parse_range
from robustmq.errors import (
    KafkaCorruptMessage,
    KafkaError,
    KafkaInvalidRequest,
    KafkaUnsupportedForMessageFormat,
    KafkaUnsupportedVersion,
)

try:
    from robustmq._core import _kafka_codec as c_codec
except ImportError:  # not built: the c tests skip, the twin tests fail loudly
    c_codec = None

NOT_BUILT = "the compiled _kafka_codec is not built (python setup.py build_ext --inplace)"
TWINS: dict[str, ModuleType | None] = {"py": kc, "c": c_codec}


# The fixture is a module, not per-test state, so hypothesis may reuse it across examples.
TWIN_CHECKS = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]


@pytest.fixture(params=["py", "c"], ids=["py", "c"])
def codec(request: pytest.FixtureRequest) -> ModuleType:
    module = TWINS[request.param]
    if module is None:
        pytest.skip(NOT_BUILT)
    return module


_INTS = {
    "int8": (-(2**7), 2**7 - 1),
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "varint": (-(2**31), 2**31 - 1),
    "varlong": (-(2**63), 2**63 - 1),
}


def _scalar(type_: str) -> st.SearchStrategy[Any]:
    if type_ in _INTS:
        lo, hi = _INTS[type_]
        return st.integers(lo, hi)
    if type_ == "bool":
        return st.booleans()
    if type_ == "string":
        return st.text(max_size=12)
    if type_ in ("bytes", "records"):
        return st.binary(max_size=24)
    if type_ == "uuid":
        return st.binary(min_size=16, max_size=16)
    if type_ == "float64":
        return st.floats(allow_nan=False)
    raise AssertionError(type_)


def _value(fld: Field, version: int) -> st.SearchStrategy[Any]:
    if fld.type == "struct":
        strat: st.SearchStrategy[Any] = _struct(fld.fields, version)
    elif fld.type == "[]":
        strat = st.lists(_struct(fld.fields, version), max_size=3)
    elif fld.type.startswith("[]"):
        strat = st.lists(_scalar(fld.type[2:]), max_size=3)
    else:
        strat = _scalar(fld.type)
    if in_range(version, fld.nullable) or fld.type == "struct":
        strat = st.none() | strat
    return strat


def _struct(fields: tuple[Field, ...], version: int) -> st.SearchStrategy[dict[str, Any]]:
    present = {f.name: _value(f, version) for f in fields if in_range(version, f.versions)}
    return st.fixed_dictionaries(present)


def _normalized(fields: tuple[Field, ...], version: int, flexible: bool, value: Any) -> Any:
    """What decoding gives back: tagged fields only exist in flexible versions, and a
    tagged field holding its default is not written at all."""
    out = {}
    for fld in fields:
        if not in_range(version, fld.versions) or (fld.tag is not None and not flexible):
            continue
        v = value[fld.name]
        if v is not None and fld.type == "struct":
            v = _normalized(fld.fields, version, flexible, v)
        elif v is not None and fld.type == "[]":
            v = [_normalized(fld.fields, version, flexible, x) for x in v]
        out[fld.name] = v
    return out


CASES = [
    (key, version, response)
    for key, api in sorted(APIS.items())
    for version in range(parse_range(api.request.valid)[0], parse_range(api.request.valid)[1] + 1)
    for response in (False, True)
]


@pytest.mark.parametrize(
    ("api_key", "version", "response"),
    CASES,
    ids=[f"{APIS[k].name}-v{v}-{'resp' if r else 'req'}" for k, v, r in CASES],
)
@settings(max_examples=15, deadline=None, suppress_health_check=TWIN_CHECKS)
@given(data=st.data())
def test_round_trip_every_api_version(
    codec: ModuleType, api_key: int, version: int, response: bool, data
) -> None:
    msg = APIS[api_key].response if response else APIS[api_key].request
    flexible = in_range(version, msg.flexible)
    body = data.draw(_struct(msg.fields, version))
    if response:
        frame = codec.encode_response(api_key, version, 42, body)
        correlation_id, decoded = codec.decode_response(api_key, version, frame[4:])
    else:
        frame = codec.encode_request(api_key, version, 42, "client-1", body)
        header, decoded = codec.decode_request(frame[4:])
        assert header == codec.RequestHeader(api_key, version, 42, "client-1")
        correlation_id = header.correlation_id
    assert correlation_id == 42
    assert struct.unpack(">i", frame[:4])[0] == len(frame) - 4
    expected = _normalized(msg.fields, version, flexible, body)
    # A tagged field equal to its default is not sent: it decodes as the default.
    assert _drop_defaults(msg.fields, version, decoded) == _drop_defaults(
        msg.fields, version, expected
    )


def _drop_defaults(fields: tuple[Field, ...], version: int, value: Any) -> Any:
    out = {}
    for fld in fields:
        if fld.name not in value:
            continue
        v = value[fld.name]
        if fld.tag is not None and v == kc.field_default(fld, in_range(version, fld.nullable)):
            continue
        if fld.type == "[]" and v is not None:
            v = [_drop_defaults(fld.fields, version, x) for x in v]
        out[fld.name] = v
    return out


EVERY_TYPE = tuple(
    f(name, name)
    for name in ("int8", "int16", "uint16", "int32", "int64", "float64", "varint", "varlong")
) + (
    f("bool", "bool"),
    f("uuid", "uuid"),
    f("string", "string"),
    f("nullable_string", "string", nullable="0+", default=None),
    f("bytes", "bytes"),
    f("records", "records", nullable="0+", default=None),
    f("ints", "[]int32"),
    f("strings", "[]string", nullable="0+", default=None),
    f("structs", "[]", "0+", f("a", "int8"), f("b", "string")),
    f("tagged", "varlong", tag=3, default=-1),
    f("tagged_struct", "struct", "0+", f("x", "int32"), tag=1, default=None),
)


@pytest.mark.parametrize("flexible", [False, True], ids=["classic", "flexible"])
@settings(max_examples=200, deadline=None, suppress_health_check=TWIN_CHECKS)
@given(data=st.data())
def test_every_field_type_round_trips(codec: ModuleType, flexible: bool, data) -> None:
    decode, encode = codec.struct_codec(EVERY_TYPE, 0, flexible)
    value = data.draw(_struct(EVERY_TYPE, 0))
    out = bytearray()
    encode(out, value)
    reader = codec.Reader(out)
    decoded = decode(reader)
    assert reader.pos == len(out)
    expected = _normalized(EVERY_TYPE, 0, flexible, value)
    assert _drop_defaults(EVERY_TYPE, 0, decoded) == _drop_defaults(EVERY_TYPE, 0, expected)


def test_varints_use_zigzag_and_compact_lengths_add_one(codec: ModuleType) -> None:
    _, encode = codec.struct_codec((f("v", "varint"), f("s", "string")), 0, True)
    out = bytearray()
    encode(out, {"v": -1, "s": "ab"})
    assert bytes(out) == b"\x01" + b"\x03ab" + b"\x00"


def test_flexible_versions_use_header_v2_and_compact_fields(codec: ModuleType) -> None:
    frame = codec.encode_request(3, 9, 1, "c", {"topics": [{"name": "ab"}]})
    # size, api key 3, v9, correlation 1, client id "c", empty header tags, then a compact
    # array of one (0x02) holding the compact string "ab" (0x03) and its empty tag buffer.
    assert frame[4:].hex() == "000300090000000100016300" + "02" + "03" + "6162" + "00" + "01000000"


def test_api_versions_response_header_is_v0_even_when_flexible(codec: ModuleType) -> None:
    frame = codec.encode_response(18, 3, 9, {"api_keys": []})
    assert frame[4:8] == b"\x00\x00\x00\x09"
    assert frame[8:10] == b"\x00\x00"  # error_code right after the correlation id


def test_unknown_tagged_fields_are_skipped(codec: ModuleType) -> None:
    # Metadata v9 request with an extra tag 7 of 3 bytes on the body.
    body = bytes.fromhex("00" + "01" + "00" + "00") + bytes([1, 7, 3]) + b"xyz"
    frame = bytes.fromhex("000300090000000100016300") + body
    _, decoded = codec.decode_request(frame)
    assert decoded["topics"] is None and decoded["allow_auto_topic_creation"] is True


# Requests captured from real clients talking to this broker (correlation ids as sent).
KAFKA_PYTHON = {
    "api_versions_v4": "001200040000000100026b70000d6b61666b612d707974686f6e07332e302e313200",
    "api_versions_v3": "001200030000000200026b70000d6b61666b612d707974686f6e07332e302e313200",
    "metadata_v9": "000300090000000300026b70000101000000",
    "produce_v9": (
        "000000090000000300026b700000ffff000075300204636170020000000047000000000000000000"
        "00003a0000000002e99b8dd80000000000000000018bcfe568000000018bcfe56800ffffffffffff"
        "ffffffffffffffff0000000110000000026b027600000000"
    ),
}
LIBRDKAFKA = {
    "api_versions_v3": (
        "00120003000000010002636b0017636f6e666c75656e742d6b61666b612d707974686f6e16322e31"
        "362e312d72646b61666b612d322e31362e3000"
    ),
    "metadata_v9": "00030009000000020002636b0002046361700001000000",
    "metadata_v9_all": "0003000900000003000772646b61666b61000000000001000000",
}


def test_decodes_kafka_python_requests(codec: ModuleType) -> None:
    header, body = codec.decode_request(bytes.fromhex(KAFKA_PYTHON["api_versions_v3"]))
    assert header == codec.RequestHeader(18, 3, 2, "kp")
    assert body == {"client_software_name": "kafka-python", "client_software_version": "3.0.12"}
    _, body = codec.decode_request(bytes.fromhex(KAFKA_PYTHON["metadata_v9"]))
    assert body["topics"] == [] and body["allow_auto_topic_creation"] is True  # no topics
    header, body = codec.decode_request(bytes.fromhex(KAFKA_PYTHON["produce_v9"]))
    assert (header.api_key, header.api_version, header.client_id) == (0, 9, "kp")
    assert body["acks"] == -1 and body["timeout_ms"] == 30000
    [topic] = body["topic_data"]
    [part] = topic["partition_data"]
    assert topic["name"] == "cap" and part["index"] == 0
    [batch] = codec.parse_batches(part["records"])
    assert (batch.magic, batch.record_count, batch.base_timestamp) == (2, 1, 1700000000000)
    assert batch.producer_id == -1 and batch.compression == 0
    assert part["records"].endswith(b"\x02k\x02v\x00")  # key "k", value "v", no headers


def test_api_versions_v4_is_read_far_enough_to_refuse(codec: ModuleType) -> None:
    frame = bytes.fromhex(KAFKA_PYTHON["api_versions_v4"])
    header, _ = codec.decode_request_header(frame)
    assert header == codec.RequestHeader(18, 4, 1, "kp")
    with pytest.raises(KafkaUnsupportedVersion):
        codec.decode_request(frame)


def test_decodes_librdkafka_requests(codec: ModuleType) -> None:
    header, body = codec.decode_request(bytes.fromhex(LIBRDKAFKA["api_versions_v3"]))
    assert header.client_id == "ck"
    assert body["client_software_name"] == "confluent-kafka-python"
    assert body["client_software_version"] == "2.16.1-rdkafka-2.16.0"
    _, body = codec.decode_request(bytes.fromhex(LIBRDKAFKA["metadata_v9"]))
    assert body["topics"] == [{"name": "cap"}]
    assert body["allow_auto_topic_creation"] is True


def test_supported_is_the_table() -> None:
    assert SUPPORTED[18] == (0, 3)
    assert SUPPORTED[0] == (3, 9)
    assert set(SUPPORTED) == set(APIS)


# --- frames ---------------------------------------------------------------------------


def test_split_frames_keeps_partial_frames(codec: ModuleType) -> None:
    a = codec.encode_request(18, 0, 1, None, {})
    b = codec.encode_request(18, 0, 2, None, {})
    frames, used = codec.split_frames(a + b[:5], 1 << 20)
    assert [bytes(f) for f in frames] == [a[4:]] and used == len(a)


@pytest.mark.parametrize("size", [-1, 0, 7, 1025])
def test_split_frames_refuses_bad_sizes(codec: ModuleType, size: int) -> None:
    with pytest.raises(KafkaInvalidRequest):
        codec.split_frames(struct.pack(">i", size) + b"\x00" * 8, 1024)


def test_split_frames_lets_only_produce_exceed_max_other_size(codec: ModuleType) -> None:
    big = 1 << 16
    produce = struct.pack(">ih", big, 0) + b"\x00" * (big - 2)
    frames, used = codec.split_frames(produce, 1 << 20, 1024)
    assert len(frames) == 1 and used == big + 4
    with pytest.raises(KafkaInvalidRequest, match="only Produce"):
        codec.split_frames(struct.pack(">ih", big, 9) + b"\x00" * 8, 1 << 20, 1024)
    # Refused on the header alone, before the body is buffered; the api key is awaited.
    assert codec.split_frames(struct.pack(">ib", big, 0), 1 << 20, 1024) == ([], 0)
    small = codec.encode_request(18, 0, 1, None, {})
    assert codec.split_frames(small, 1 << 20, 1024)[1] == len(small)


def test_parse_batches_refuses_counts_the_bytes_cannot_hold(codec: ModuleType) -> None:
    batch = bytearray(make_batch([b"x"]))
    for count, delta in ((0, -1), (0, 0), (2, 1), (3, 0), (1, 2**31 - 1)):
        struct.pack_into(">i", batch, 23, delta)
        struct.pack_into(">i", batch, 57, count)
        struct.pack_into(">I", batch, 17, segment_io.crc32c(bytes(batch[21:])))
        with pytest.raises(KafkaCorruptMessage, match="record count"):
            codec.parse_batches(bytes(batch))


def test_trailing_bytes_after_a_request_body_are_ignored_as_kafka_does(codec: ModuleType) -> None:
    frame = codec.encode_request(18, 0, 1, None, {})
    assert codec.decode_request(frame[4:] + b"\x00")[1] == {}
    # librdkafka 2.16 AdminClient.list_topics(): Metadata v9 for all topics, 3 extra bytes.
    header, body = codec.decode_request(bytes.fromhex(LIBRDKAFKA["metadata_v9_all"]))
    assert header.client_id == "rdkafka" and body["topics"] is None


def test_unknown_api_key_is_unsupported(codec: ModuleType) -> None:
    frame = struct.pack(">hhih", 999, 0, 1, -1)
    with pytest.raises(KafkaUnsupportedVersion):
        codec.decode_request(frame)


@settings(max_examples=400, deadline=None, suppress_health_check=TWIN_CHECKS)
@given(st.binary(max_size=200))
def test_fuzz_arbitrary_frames_raise_kafka_errors_only(codec: ModuleType, data: bytes) -> None:
    try:
        codec.decode_request(data)
    except KafkaError:
        pass


@settings(max_examples=400, deadline=None, suppress_health_check=TWIN_CHECKS)
@given(st.data())
def test_fuzz_mutated_client_frames_raise_kafka_errors_only(codec: ModuleType, data) -> None:
    frame = bytearray(bytes.fromhex(data.draw(st.sampled_from(list(KAFKA_PYTHON.values())))))
    for _ in range(data.draw(st.integers(1, 4))):
        frame[data.draw(st.integers(0, len(frame) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(10, len(frame)))
    try:
        _, body = codec.decode_request(bytes(frame[:cut]))
    except KafkaError:
        return
    for topic in body.get("topic_data") or []:
        for part in topic["partition_data"]:
            try:
                codec.parse_batches(part["records"] or b"")
            except KafkaError:
                pass


# --- record batches -------------------------------------------------------------------


def make_batch(
    values: list[bytes],
    base_timestamp: int = 1000,
    attributes: int = 0,
    producer: tuple[int, int, int] = (-1, -1, -1),
) -> bytes:
    """A minimal uncompressed record batch v2 (tests only; the broker never builds one).
    ``producer`` is (producer id, producer epoch, base sequence)."""
    records = bytearray()
    for i, value in enumerate(values):
        rec = bytearray(b"\x00")  # attributes
        for n in (i, i):  # timestamp delta, offset delta
            kc.write_uvarint(rec, n << 1)
        rec += b"\x01"  # key: null (varint -1)
        kc.write_uvarint(rec, len(value) << 1)
        rec += value + b"\x00"  # no headers
        kc.write_uvarint(records, len(rec) << 1)
        records += rec
    n = len(values)
    after_crc = (
        struct.pack(
            ">hiqqqhii", attributes, n - 1, base_timestamp, base_timestamp + n - 1, *producer, n
        )
        + records
    )
    crc = segment_io.crc32c(after_crc)
    body = struct.pack(">ibI", -1, 2, crc) + after_crc
    return struct.pack(">qi", 0, len(body)) + body


def test_parse_batches_reads_headers_and_checks_crc(codec: ModuleType) -> None:
    data = make_batch([b"a", b"bb", b"ccc"]) + make_batch([b"d"], base_timestamp=5000)
    first, second = codec.parse_batches(data)
    assert (first.position, first.record_count, first.last_offset_delta) == (0, 3, 2)
    assert (first.base_timestamp, first.max_timestamp) == (1000, 1002)
    assert second.position == first.size and second.max_timestamp == 5000
    assert first.size + second.size == len(data)


def test_parse_batches_refuses_a_bad_crc(codec: ModuleType) -> None:
    data = bytearray(make_batch([b"hello"]))
    data[-2] ^= 0xFF
    with pytest.raises(KafkaCorruptMessage, match="CRC32C"):
        codec.parse_batches(bytes(data))


def test_parse_batches_refuses_truncation(codec: ModuleType) -> None:
    data = make_batch([b"hello"])
    with pytest.raises(KafkaCorruptMessage):
        codec.parse_batches(data[:-1])


def test_parse_batches_refuses_message_format_v1(codec: ModuleType) -> None:
    data = bytearray(make_batch([b"x"]))
    data[16] = 1
    with pytest.raises(KafkaUnsupportedForMessageFormat):
        codec.parse_batches(bytes(data))


def test_base_offset_is_outside_the_crc(codec: ModuleType) -> None:
    from robustmq.storage.engine import patch_base_offset

    data = patch_base_offset(make_batch([b"x", b"y"]), 12345, 0)
    [h] = codec.parse_batches(data)
    assert h.base_offset == 12345


# --- the twins against each other -----------------------------------------------------


def _outcome(fn: Any, *args: Any) -> Any:
    """What a call gives: its result, or its error's class and arguments (message, offset)."""
    try:
        result = fn(*args)
    except Exception as exc:  # compared whatever it is: both twins must fail alike
        return ("raised", type(exc), exc.args)
    if isinstance(result, tuple) and result and isinstance(result[0], list):
        return ([bytes(x) for x in result[0]], *result[1:])  # split_frames' memoryviews
    return result


def _both(fn_name: str, *args: Any) -> Any:
    assert c_codec is not None, NOT_BUILT
    py = _outcome(getattr(kc, fn_name), *args)
    c = _outcome(getattr(c_codec, fn_name), *args)
    assert py == c, f"{fn_name}: pure {py!r} != compiled {c!r}"
    return py


def _mutate(data: Any, frame: bytes) -> bytes:
    buf = bytearray(frame)
    for _ in range(data.draw(st.integers(0, 4))):
        buf[data.draw(st.integers(0, len(buf) - 1))] = data.draw(st.integers(0, 255))
    return bytes(buf[: data.draw(st.integers(0, len(buf)))])


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=120))
# A tagged field whose size does not fit 63 bits (the compiled twin once overflowed).
@example(bytes.fromhex("0012000300000001ffff010081808080808080808001"))
def test_twins_agree_on_arbitrary_bytes(data: bytes) -> None:
    _both("decode_request", data)
    _both("split_frames", data, 64, 32)
    _both("parse_batches", data)
    for api_key, version in ((0, 8), (1, 12), (3, 9), (18, 3)):
        _both("decode_response", api_key, version, data)


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_twins_agree_on_mutated_real_frames(data) -> None:
    frame = bytes.fromhex(
        data.draw(st.sampled_from(list(KAFKA_PYTHON.values()) + list(LIBRDKAFKA.values())))
    )
    mutated = _mutate(data, frame)
    decoded = _both("decode_request", mutated)
    _both("split_frames", struct.pack(">i", len(mutated)) + mutated, 1 << 20, 1 << 10)
    if isinstance(decoded, tuple) and decoded[0] != "raised":
        for topic in decoded[1].get("topic_data") or []:
            for part in topic["partition_data"]:
                _both("parse_batches", part["records"] or b"")


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_twins_agree_on_mutated_record_batches(data) -> None:
    values = data.draw(st.lists(st.binary(max_size=8), min_size=1, max_size=4))
    batch = make_batch(values, attributes=data.draw(st.sampled_from([0, 1, 0x10])))
    _both("parse_batches", _mutate(data, batch + batch))


@pytest.mark.parametrize(
    ("api_key", "version", "response"),
    CASES[::3],
    ids=[f"{APIS[k].name}-v{v}-{'resp' if r else 'req'}" for k, v, r in CASES[::3]],
)
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_twins_encode_the_same_bytes_and_decode_mutations_alike(
    api_key: int, version: int, response: bool, data
) -> None:
    msg = APIS[api_key].response if response else APIS[api_key].request
    body = data.draw(_struct(msg.fields, version))
    if response:
        frame = _both("encode_response", api_key, version, 7, body)
        _both("decode_response", api_key, version, _mutate(data, frame[4:]))
    else:
        frame = _both("encode_request", api_key, version, 7, "c", body)
        _both("decode_request", _mutate(data, frame[4:]))


@pytest.mark.parametrize(
    "varint",
    [b"\xff" * 9 + b"\x01", b"\xff" * 9 + b"\x7f", b"\xff" * 10 + b"\x01", b"\x80" * 11],
    ids=["64-bit", "70-bit", "11-byte", "endless"],
)
def test_twins_agree_on_oversized_varints(varint: bytes) -> None:
    # A compact length, a varlong field and a tag count fed the same varint.
    _both("decode_request", bytes.fromhex("000300090000000100016300") + varint)
    fields = (f("v", "varlong"),)
    for module in (kc, c_codec):
        assert module is not None, NOT_BUILT
    py_dec, _ = kc.struct_codec(fields, 0, True)
    c_dec, _ = c_codec.struct_codec(fields, 0, True)
    assert _outcome(lambda: py_dec(kc.Reader(varint))) == _outcome(
        lambda: c_dec(c_codec.Reader(varint))
    )


def test_compiled_twin_is_selected_unless_disabled() -> None:
    from robustmq import _core

    assert _core.kafka is (kc if _core.NO_EXTENSIONS or c_codec is None else c_codec)
    assert c_codec is not None, NOT_BUILT
    assert set(kc.__all__) <= set(dir(c_codec))
