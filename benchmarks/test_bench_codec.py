"""Micro benchmarks of the MQTT codec: the compiled twin against the pure-Python one.

Run: ``python -m pytest benchmarks/test_bench_codec.py --benchmark-group-by=group``.
Decode benchmarks decode a buffer of BATCH packets in one call (as a connection does with
one socket read), so per-packet cost is the reported time divided by BATCH.
"""

from __future__ import annotations

import importlib

import pytest

BATCH = 1000

CODECS = {"py": "robustmq._core.mqtt_codec", "c": "robustmq._core._mqtt_codec"}


@pytest.fixture(params=list(CODECS), ids=list(CODECS))
def codec(request):
    try:
        return importlib.import_module(CODECS[request.param])
    except ImportError:
        pytest.skip("compiled codec not built")


def _publish(codec, size, version=4):
    return codec.encode_publish(
        "sensors/building-7/floor-3/temp", b"x" * size, 1, False, False, 17, None, version
    )


@pytest.mark.parametrize("size", [64, 1024])
def test_decode_publish_batch(benchmark, codec, size):
    benchmark.group = f"decode {BATCH} x PUBLISH {size} B"
    data = _publish(codec, size) * BATCH
    decoder = codec.Decoder(4)
    packets, consumed = benchmark(decoder.decode, data)
    assert len(packets) == BATCH and consumed == len(data)


def test_decode_publish_v5_properties_batch(benchmark, codec):
    benchmark.group = f"decode {BATCH} x PUBLISH v5 with properties"
    props = {"message_expiry_interval": 60, "user_property": [("k", "v")], "content_type": "json"}
    one = codec.encode_publish("a/b", b"x" * 64, 1, False, False, 5, props, 5)
    decoder = codec.Decoder(5)
    packets, _ = benchmark(decoder.decode, one * BATCH)
    assert packets[0].properties == props


@pytest.mark.parametrize("size", [64, 1024])
def test_encode_publish(benchmark, codec, size):
    benchmark.group = f"encode PUBLISH {size} B"
    payload = b"x" * size
    out = benchmark(
        codec.encode_publish,
        "sensors/building-7/floor-3/temp",
        payload,
        1,
        False,
        False,
        17,
        None,
        4,
    )
    assert out.endswith(payload)


def _connect(codec):
    will = codec.Will("status/dev-1", b"offline", 1, True, {"will_delay_interval": 5})
    return codec.Connect(
        "dev-1",
        protocol_version=5,
        clean_start=False,
        keep_alive=30,
        username="user",
        password=b"secret",
        will=will,
        properties={"session_expiry_interval": 3600, "receive_maximum": 100},
    )


def test_decode_connect(benchmark, codec):
    benchmark.group = "decode CONNECT v5"
    data = codec.encode(_connect(codec), 5)
    packets, _ = benchmark(lambda: codec.Decoder().decode(data))
    assert packets[0].client_id == "dev-1"


def test_encode_connect(benchmark, codec):
    benchmark.group = "encode CONNECT v5"
    packet = _connect(codec)
    assert benchmark(codec.encode, packet, 5)


def _subscribe(codec):
    subs = [codec.Subscription(f"devices/{i}/+/status", 1, True, False, 1) for i in range(5)]
    return codec.Subscribe(42, subs, {"subscription_identifier": [7]})


def test_decode_subscribe(benchmark, codec):
    benchmark.group = "decode SUBSCRIBE v5 (5 filters)"
    data = codec.encode(_subscribe(codec), 5)
    decoder = codec.Decoder(5)
    packets, _ = benchmark(decoder.decode, data)
    assert len(packets[0].subscriptions) == 5


def test_encode_subscribe(benchmark, codec):
    benchmark.group = "encode SUBSCRIBE v5 (5 filters)"
    assert benchmark(codec.encode, _subscribe(codec), 5)
