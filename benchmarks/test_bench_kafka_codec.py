"""Micro benchmarks of the Kafka codec: the compiled twin against the pure-Python one.

Run: ``python -m pytest benchmarks/test_bench_kafka_codec.py --benchmark-group-by=group``.
Each group times one call the broker makes per request: decoding a Produce request (one
record batch of 100 records of 100 B, librdkafka's shape), checking its batch header and
CRC, encoding a Fetch response, decoding a Metadata request, and splitting 1000 frames
off one buffer (as one socket read that carries many pipelined requests).
"""

from __future__ import annotations

import importlib

import pytest

from tests.unit.test_kafka_codec import make_batch

CODECS = {"py": "robustmq._core.kafka_codec", "c": "robustmq._core._kafka_codec"}
FRAMES = 1000
BATCH = make_batch([b"v" * 100] * 100)


@pytest.fixture(params=list(CODECS), ids=list(CODECS))
def codec(request):
    try:
        return importlib.import_module(CODECS[request.param])
    except ImportError:
        pytest.skip("compiled codec not built")


def _produce(codec, version=9):
    body = {
        "acks": 1,
        "timeout_ms": 30000,
        "topic_data": [{"name": "bench", "partition_data": [{"index": 0, "records": BATCH}]}],
    }
    return codec.encode_request(0, version, 1, "rdkafka", body)[4:]


@pytest.mark.parametrize("version", [7, 9])
def test_decode_produce_request(benchmark, codec, version):
    benchmark.group = f"decode Produce v{version} (1 batch, 100 x 100 B)"
    frame = _produce(codec, version)
    header, body = benchmark(codec.decode_request, frame)
    assert body["topic_data"][0]["partition_data"][0]["records"] == BATCH


def test_parse_batches(benchmark, codec):
    benchmark.group = "parse_batches (1 batch, 100 x 100 B, CRC32C)"
    [h] = benchmark(codec.parse_batches, BATCH)
    assert h.record_count == 100


@pytest.mark.parametrize("version", [11, 12])
def test_encode_fetch_response(benchmark, codec, version):
    benchmark.group = f"encode Fetch v{version} response (8 partitions x 1 batch)"
    partitions = [
        {
            "partition_index": i,
            "error_code": 0,
            "high_watermark": 1000,
            "last_stable_offset": 1000,
            "log_start_offset": 0,
            "aborted_transactions": None,
            "records": BATCH,
        }
        for i in range(8)
    ]
    body = {
        "error_code": 0,
        "session_id": 0,
        "responses": [{"topic": "t", "partitions": partitions}],
    }
    out = benchmark(codec.encode_response, 1, version, 5, body)
    assert len(out) > 8 * len(BATCH)


def test_decode_metadata_request(benchmark, codec):
    benchmark.group = "decode Metadata v9 request (3 topics)"
    frame = codec.encode_request(
        3, 9, 1, "rdkafka", {"topics": [{"name": f"t{i}"} for i in range(3)]}
    )
    _, body = benchmark(codec.decode_request, frame[4:])
    assert len(body["topics"]) == 3


def test_split_frames(benchmark, codec):
    benchmark.group = f"split {FRAMES} frames (ApiVersions v3)"
    one = codec.encode_request(18, 3, 1, "c", {"client_software_name": "x"})
    data = bytearray(one * FRAMES)
    frames, used = benchmark(codec.split_frames, data, 1 << 20, 1 << 20)
    assert len(frames) == FRAMES and used == len(data)
