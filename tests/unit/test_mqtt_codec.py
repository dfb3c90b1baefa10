"""Tests of the MQTT 3.1/3.1.1/5.0 packet codec, run against both twins (the pure-Python
robustmq._core.mqtt_codec and the compiled robustmq._core._mqtt_codec): byte-exact vectors
written by hand from the MQTT 3.1.1 and 5.0 specifications, incremental decoding over every
split of a packet stream, a table of malformed packets with their reason codes and byte
offsets, hypothesis round-trips and fuzzing that compare the twins, and regression tests for the
codec bugs these tests found. Connection state (topic aliases, flow control, what is allowed
when) belongs to the broker and is tested there.
"""

from __future__ import annotations

import contextlib
import pickle
import signal
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import robustmq._core.mqtt_codec as py_codec
from robustmq._core import mqtt_spec as spec
from robustmq.errors import MqttError

try:
    import robustmq._core._mqtt_codec as c_codec
except ImportError:
    c_codec = None

NOT_BUILT = (
    "compiled robustmq._core._mqtt_codec is not built "
    "(from the project root: python setup.py build_ext --inplace)"
)
TWINS: dict[str, ModuleType | None] = {"py": py_codec, "c": c_codec}
AVAILABLE = [m for m in (py_codec, c_codec) if m is not None]
need_c = pytest.mark.skipif(c_codec is None, reason=NOT_BUILT)

MAX = spec.MAX_PACKET_SIZE
MALFORMED = 0x81
PROTOCOL_ERROR = 0x82
UNSUPPORTED_VERSION = 0x84
TOPIC_NAME_INVALID = 0x90
TOPIC_ALIAS_INVALID = 0x94
PACKET_TOO_LARGE = 0x95
DECODER_CODES = {
    MALFORMED,
    PROTOCOL_ERROR,
    UNSUPPORTED_VERSION,
    TOPIC_NAME_INVALID,
    TOPIC_ALIAS_INVALID,
    PACKET_TOO_LARGE,
}

# The fixture is a module, not per-test state, so hypothesis may reuse it across examples.
ROUNDTRIP = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
FUZZ = settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(params=["py", "c"], ids=["py", "c"])
def codec(request: pytest.FixtureRequest) -> ModuleType:
    module = TWINS[request.param]
    if module is None:
        pytest.skip(NOT_BUILT)
    return module


def twin_name(codec: ModuleType) -> str:
    return "py" if codec is py_codec else "c"


def h(text: str) -> bytes:
    return bytes.fromhex(text)


def varint(value: int) -> bytes:
    """The naive oracle for a Variable Byte Integer (§1.5.5)."""
    out = bytearray()
    while True:
        value, byte = divmod(value, 128)
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def decode_error(
    m: ModuleType, version: int, wire: bytes, max_packet_size: int = MAX
) -> tuple[int, int]:
    with pytest.raises(MqttError) as info:
        m.Decoder(version, max_packet_size).decode(wire)
    return info.value.reason_code, info.value.offset


def feed(decoder: Any, chunks: list[bytes]) -> list[Any]:
    """Feeds ``chunks`` as a connection would: keep what was not consumed, append, decode."""
    buf = bytearray()
    out: list[Any] = []
    for chunk in chunks:
        buf += chunk
        packets, consumed = decoder.decode(buf)
        assert 0 <= consumed <= len(buf)
        assert bool(packets) == bool(consumed)
        out += packets
        del buf[:consumed]
    assert not buf, f"{len(buf)} bytes left undecoded"
    return out


@contextlib.contextmanager
def cpu_time_limit(seconds: float) -> Iterator[None]:
    """Raises TimeoutError in the main thread after ``seconds`` of CPU time.

    SIGVTALRM rather than SIGALRM, which pytest-timeout owns.
    """

    def on_timer(signum: int, frame: object) -> None:
        raise TimeoutError(f"no result after {seconds} s of CPU time")

    previous = signal.signal(signal.SIGVTALRM, on_timer)
    signal.setitimer(signal.ITIMER_VIRTUAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_VIRTUAL, 0)
        signal.signal(signal.SIGVTALRM, previous)


def test_twins_have_the_same_api() -> None:
    if c_codec is None:
        pytest.skip(NOT_BUILT)
    assert not c_codec.__file__.endswith(".py")
    assert set(py_codec.__all__) == set(c_codec.__all__)
    for name in py_codec.__all__:
        assert hasattr(c_codec, name), name


# --- 1. byte-exact vectors from the specifications --------------------------------------


@dataclass(frozen=True)
class Vector:
    id: str
    version: int  # the protocol version both sides speak
    wire: str  # hex, spaces between fields
    build: Callable[[ModuleType], Any]
    canonical: bool = True  # encode(build(m), version) gives exactly these bytes


# CONNECT protocol name + level (§3.1.2.1, §3.1.2.2).
MQTT_4 = "00 04 4D 51 54 54 04"
MQTT_5 = "00 04 4D 51 54 54 05"
MQISDP_3 = "00 06 4D 51 49 73 64 70 03"

VECTORS = [
    # CONNECT ----------------------------------------------------------------------------
    Vector(
        "connect-3.1-MQIsdp",
        3,
        f"10 10 {MQISDP_3} 02 00 3C 00 02 63 31",
        lambda m: m.Connect("c1", protocol_version=3, keep_alive=60),
    ),
    Vector(
        # 3.1.1 §3.1.2.10 example flags 0xCE: user name, password, will QoS 1, will, clean.
        "connect-3.1.1-will-user-password",
        4,
        f"10 23 {MQTT_4} CE 00 0A 00 03 63 69 64 00 03 77 2F 74 00 03 62 79 65"
        " 00 04 75 73 65 72 00 02 70 77",
        lambda m: m.Connect(
            "cid",
            protocol_version=4,
            keep_alive=10,
            username="user",
            password=b"pw",
            will=m.Will("w/t", b"bye", qos=1),
        ),
    ),
    Vector(
        "connect-3.1.1-will-qos2-retain-no-clean-start",
        4,
        f"10 11 {MQTT_4} 34 00 00 00 00 00 01 61 00 00",
        lambda m: m.Connect(
            "", protocol_version=4, clean_start=False, keep_alive=0, will=m.Will("a", b"", 2, True)
        ),
    ),
    Vector(
        "connect-3.1-username-only",
        3,
        f"10 12 {MQISDP_3} 82 FF FF 00 01 78 00 01 75",
        lambda m: m.Connect("x", protocol_version=3, keep_alive=65535, username="u"),
    ),
    Vector(
        "connect-5.0-properties-will-properties",
        5,
        f"10 3A {MQTT_5} E6 00 1E"
        " 0F 11 00 00 00 0A 21 00 14 26 00 01 6B 00 01 76"
        " 00 02 63 35"
        " 0E 18 00 00 00 05 01 01 03 00 04 74 65 78 74"
        " 00 02 6C 77 00 01 78 00 01 75 00 01 70",
        lambda m: m.Connect(
            "c5",
            protocol_version=5,
            keep_alive=30,
            username="u",
            password=b"p",
            will=m.Will(
                "lw",
                b"x",
                qos=0,
                retain=True,
                properties={
                    "will_delay_interval": 5,
                    "payload_format_indicator": 1,
                    "content_type": "text",
                },
            ),
            properties={
                "session_expiry_interval": 10,
                "receive_maximum": 20,
                "user_property": [("k", "v")],
            },
        ),
    ),
    Vector(
        # MQTT 5.0 §3.1.2.9 dropped the rule that a password needs a user name.
        "connect-5.0-password-without-username",
        5,
        f"10 12 {MQTT_5} 42 00 3C 00 00 01 61 00 02 70 77",
        lambda m: m.Connect("a", protocol_version=5, password=b"pw"),
    ),
    Vector(
        "connect-5.0-authentication",
        5,
        f"10 1A {MQTT_5} 02 00 3C 0D 15 00 05 53 43 52 41 4D 16 00 02 AB CD 00 00",
        lambda m: m.Connect(
            "",
            protocol_version=5,
            properties={"authentication_method": "SCRAM", "authentication_data": b"\xab\xcd"},
        ),
    ),
    # CONNACK ----------------------------------------------------------------------------
    Vector("connack-3.1.1-accepted", 4, "20 02 00 00", lambda m: m.Connack(False, 0)),
    Vector("connack-3.1.1-session-present", 4, "20 02 01 00", lambda m: m.Connack(True, 0)),
    Vector("connack-3.1.1-not-authorized", 4, "20 02 00 05", lambda m: m.Connack(False, 5)),
    Vector("connack-3.1-bad-protocol", 3, "20 02 00 01", lambda m: m.Connack(False, 1)),
    Vector("connack-5.0-no-properties", 5, "20 03 01 00 00", lambda m: m.Connack(True, 0)),
    Vector(
        "connack-5.0-properties",
        5,
        "20 21 00 00 1E 22 00 0A 12 00 06 61 75 74 6F 2D 31 24 01 25 00 27 00 00 04 00"
        " 13 00 78 28 01 29 00 2A 01",
        lambda m: m.Connack(
            False,
            0,
            {
                "topic_alias_maximum": 10,
                "assigned_client_identifier": "auto-1",
                "maximum_qos": 1,
                "retain_available": 0,
                "maximum_packet_size": 1024,
                "server_keep_alive": 120,
                "wildcard_subscription_available": 1,
                "subscription_identifier_available": 0,
                "shared_subscription_available": 1,
            },
        ),
    ),
    Vector(
        "connack-5.0-not-authorized-reason-string",
        5,
        "20 08 00 87 05 1F 00 02 6E 6F",
        lambda m: m.Connack(False, 0x87, {"reason_string": "no"}),
    ),
    # PUBLISH ----------------------------------------------------------------------------
    Vector(
        "publish-3.1.1-qos0",
        4,
        "30 0A 00 03 61 2F 62 68 65 6C 6C 6F",
        lambda m: m.Publish("a/b", b"hello"),
    ),
    Vector(
        "publish-3.1-qos0",
        3,
        "30 0A 00 03 61 2F 62 68 65 6C 6C 6F",
        lambda m: m.Publish("a/b", b"hello"),
    ),
    Vector(
        "publish-3.1.1-qos1-retain",
        4,
        "33 08 00 03 61 2F 62 00 0A 78",
        lambda m: m.Publish("a/b", b"x", qos=1, retain=True, packet_id=10),
    ),
    Vector(
        "publish-3.1.1-qos2-dup-empty-payload",
        4,
        "3C 07 00 03 61 2F 62 FF FF",
        lambda m: m.Publish("a/b", b"", qos=2, dup=True, packet_id=65535),
    ),
    Vector(
        "publish-3.1.1-qos1-dup-retain",
        4,
        "3B 05 00 01 74 00 01",
        lambda m: m.Publish("t", b"", qos=1, retain=True, dup=True, packet_id=1),
    ),
    Vector(
        # 3.1.1 §1.5.3.1 example: "A" U+2A6D4 is 41 F0 AA 9B 94.
        "publish-3.1.1-utf8-spec-example",
        4,
        "30 07 00 05 41 F0 AA 9B 94",
        lambda m: m.Publish("A\U0002a6d4"),
    ),
    Vector(
        # §1.5.4: a BOM (EF BB BF) is U+FEFF and must not be skipped or stripped.
        "publish-3.1.1-bom-kept",
        4,
        "30 06 00 04 EF BB BF 61",
        lambda m: m.Publish("\ufeffa"),
    ),
    Vector("publish-5.0-qos0", 5, "30 06 00 01 74 00 68 69", lambda m: m.Publish("t", b"hi")),
    Vector(
        "publish-5.0-qos1-all-properties",
        5,
        "32 37 00 01 74 00 07 30 01 01 02 00 00 0E 10 03 00 01 61 08 00 01 72 09 00 02 01 02"
        " 26 00 01 61 00 01 31 26 00 01 61 00 01 32 26 00 01 62 00 01 30"
        " 0B 01 0B FF FF FF 7F 70",
        lambda m: m.Publish(
            "t",
            b"p",
            qos=1,
            packet_id=7,
            properties={
                "payload_format_indicator": 1,
                "message_expiry_interval": 3600,
                "content_type": "a",
                "response_topic": "r",
                "correlation_data": b"\x01\x02",
                "user_property": [("a", "1"), ("a", "2"), ("b", "0")],
                "subscription_identifier": [1, 268_435_455],
            },
        ),
    ),
    Vector(
        # §3.3.2.3.4: an empty topic name is allowed when a topic alias is present.
        "publish-5.0-topic-alias-empty-topic",
        5,
        "30 07 00 00 03 23 00 05 7A",
        lambda m: m.Publish("", b"z", properties={"topic_alias": 5}),
    ),
    Vector(
        "publish-5.0-qos2-retain-topic-alias-with-topic",
        5,
        "35 09 00 01 74 00 02 03 23 FF FF",
        lambda m: m.Publish(
            "t", qos=2, retain=True, packet_id=2, properties={"topic_alias": 65535}
        ),
    ),
    # PUBACK / PUBREC / PUBREL / PUBCOMP -------------------------------------------------
    Vector("puback-3.1.1", 4, "40 02 00 01", lambda m: m.Puback(1)),
    Vector("pubrec-3.1.1", 4, "50 02 00 02", lambda m: m.Pubrec(2)),
    Vector("pubrel-3.1.1", 4, "62 02 00 03", lambda m: m.Pubrel(3)),
    Vector("pubcomp-3.1.1", 4, "70 02 00 04", lambda m: m.Pubcomp(4)),
    Vector("puback-3.1", 3, "40 02 12 34", lambda m: m.Puback(0x1234)),
    # §3.4.2.1: Remaining Length 2 means reason code 0x00 and no properties.
    Vector("puback-5.0-short", 5, "40 02 00 01", lambda m: m.Puback(1)),
    Vector("pubrec-5.0-short", 5, "50 02 00 02", lambda m: m.Pubrec(2)),
    Vector("pubrel-5.0-short", 5, "62 02 00 03", lambda m: m.Pubrel(3)),
    Vector("pubcomp-5.0-short", 5, "70 02 00 04", lambda m: m.Pubcomp(4)),
    # §3.4.2.2.1: Remaining Length 3 means a reason code and no properties.
    Vector("puback-5.0-reason-only", 5, "40 03 00 01 10", lambda m: m.Puback(1, 0x10)),
    Vector("pubrec-5.0-reason-only", 5, "50 03 00 02 80", lambda m: m.Pubrec(2, 0x80)),
    Vector("pubrel-5.0-reason-only", 5, "62 03 00 03 92", lambda m: m.Pubrel(3, 0x92)),
    Vector("pubcomp-5.0-reason-only", 5, "70 03 00 04 92", lambda m: m.Pubcomp(4, 0x92)),
    Vector(
        "puback-5.0-properties",
        5,
        "40 08 00 01 80 04 1F 00 01 65",
        lambda m: m.Puback(1, 0x80, {"reason_string": "e"}),
    ),
    Vector(
        "pubcomp-5.0-success-with-properties",
        5,
        "70 0B 00 04 00 07 26 00 01 6B 00 01 76",
        lambda m: m.Pubcomp(4, 0, {"user_property": [("k", "v")]}),
    ),
    Vector(
        "puback-5.0-empty-properties",
        5,
        "40 04 00 01 00 00",
        lambda m: m.Puback(1),
        canonical=False,
    ),
    Vector(
        "pubrel-5.0-reason-empty-properties",
        5,
        "62 04 00 03 92 00",
        lambda m: m.Pubrel(3, 0x92),
        canonical=False,
    ),
    # SUBSCRIBE / SUBACK -----------------------------------------------------------------
    Vector(
        "subscribe-3.1.1",
        4,
        "82 0E 00 0A 00 03 61 2F 2B 01 00 03 62 2F 23 02",
        lambda m: m.Subscribe(10, [m.Subscription("a/+", 1), m.Subscription("b/#", 2)]),
    ),
    Vector(
        # §3.8.3.1: QoS 1 | No Local 0x04 | Retain As Published 0x08 | Retain Handling 2.
        "subscribe-5.0-options",
        5,
        "82 0D 00 01 02 0B 05 00 01 61 2D 00 01 62 10",
        lambda m: m.Subscribe(
            1,
            [m.Subscription("a", 1, True, True, 2), m.Subscription("b", 0, False, False, 1)],
            {"subscription_identifier": [5]},
        ),
    ),
    Vector(
        "subscribe-5.0-no-properties",
        5,
        "82 07 12 34 00 00 01 23 00",
        lambda m: m.Subscribe(0x1234, [m.Subscription("#")]),
    ),
    Vector("suback-3.1.1", 4, "90 05 00 0A 01 02 80", lambda m: m.Suback(10, [1, 2, 0x80])),
    Vector("suback-5.0", 5, "90 06 00 0A 00 01 02 80", lambda m: m.Suback(10, [1, 2, 0x80])),
    Vector(
        "suback-5.0-properties",
        5,
        "90 09 00 0A 04 1F 00 01 78 00 A2",
        lambda m: m.Suback(10, [0, 0xA2], {"reason_string": "x"}),
    ),
    # UNSUBSCRIBE / UNSUBACK -------------------------------------------------------------
    Vector(
        "unsubscribe-3.1.1",
        4,
        "A2 0A 00 0B 00 03 61 2F 62 00 01 63",
        lambda m: m.Unsubscribe(11, ["a/b", "c"]),
    ),
    Vector("unsubscribe-5.0", 5, "A2 06 00 0B 00 00 01 63", lambda m: m.Unsubscribe(11, ["c"])),
    Vector(
        "unsubscribe-5.0-user-property",
        5,
        "A2 0D 00 0B 07 26 00 01 6B 00 01 76 00 01 63",
        lambda m: m.Unsubscribe(11, ["c"], {"user_property": [("k", "v")]}),
    ),
    # §3.11: MQTT 3.1.1 UNSUBACK has no payload.
    Vector("unsuback-3.1.1", 4, "B0 02 00 0B", lambda m: m.Unsuback(11)),
    Vector("unsuback-5.0", 5, "B0 05 00 0B 00 00 11", lambda m: m.Unsuback(11, [0, 0x11])),
    Vector(
        "unsuback-5.0-properties",
        5,
        "B0 08 00 0B 04 1F 00 01 6E 87",
        lambda m: m.Unsuback(11, [0x87], {"reason_string": "n"}),
    ),
    # PINGREQ / PINGRESP -----------------------------------------------------------------
    Vector("pingreq-3.1.1", 4, "C0 00", lambda m: m.Pingreq()),
    Vector("pingresp-3.1.1", 4, "D0 00", lambda m: m.Pingresp()),
    Vector("pingreq-5.0", 5, "C0 00", lambda m: m.Pingreq()),
    Vector("pingresp-5.0", 5, "D0 00", lambda m: m.Pingresp()),
    # DISCONNECT -------------------------------------------------------------------------
    Vector("disconnect-3.1.1", 4, "E0 00", lambda m: m.Disconnect()),
    Vector("disconnect-3.1", 3, "E0 00", lambda m: m.Disconnect()),
    # §3.14.2.1: Remaining Length 0 means 0x00 Normal disconnection.
    Vector("disconnect-5.0-empty", 5, "E0 00", lambda m: m.Disconnect()),
    Vector("disconnect-5.0-reason-only", 5, "E0 01 04", lambda m: m.Disconnect(0x04)),
    Vector(
        "disconnect-5.0-properties",
        5,
        "E0 0C 8E 0A 11 00 00 00 00 1F 00 02 62 79",
        lambda m: m.Disconnect(0x8E, {"session_expiry_interval": 0, "reason_string": "by"}),
    ),
    Vector(
        "disconnect-5.0-server-reference",
        5,
        "E0 08 9C 06 1C 00 03 68 3A 31",
        lambda m: m.Disconnect(0x9C, {"server_reference": "h:1"}),
    ),
    Vector(
        "disconnect-5.0-reason-empty-properties",
        5,
        "E0 02 00 00",
        lambda m: m.Disconnect(),
        canonical=False,
    ),
    Vector("disconnect-5.0-explicit-success", 5, "E0 01 00", lambda m: m.Disconnect(), False),
    # AUTH -------------------------------------------------------------------------------
    Vector("auth-5.0-empty", 5, "F0 00", lambda m: m.Auth()),
    Vector("auth-5.0-reason-only", 5, "F0 01 19", lambda m: m.Auth(0x19)),
    Vector(
        "auth-5.0-properties",
        5,
        "F0 0F 18 0D 15 00 05 53 43 52 41 4D 16 00 02 AB CD",
        lambda m: m.Auth(
            0x18, {"authentication_method": "SCRAM", "authentication_data": b"\xab\xcd"}
        ),
    ),
    Vector("auth-5.0-explicit-success", 5, "F0 02 00 00", lambda m: m.Auth(), canonical=False),
]


def vector_id(vector: Vector) -> str:
    return vector.id


def is_connect(wire: bytes) -> bool:
    return wire[0] >> 4 == spec.CONNECT


@pytest.mark.parametrize("vector", VECTORS, ids=vector_id)
def test_vector_decodes(codec: ModuleType, vector: Vector) -> None:
    wire = h(vector.wire)
    # A CONNECT is decoded as a server would: by a Decoder() that learns the version from it.
    decoder = codec.Decoder(0 if is_connect(wire) else vector.version)
    packets, consumed = decoder.decode(wire)
    assert consumed == len(wire)
    assert packets == [vector.build(codec)]
    assert decoder.protocol_version == vector.version


@pytest.mark.parametrize("vector", [v for v in VECTORS if v.canonical], ids=vector_id)
def test_vector_encodes(codec: ModuleType, vector: Vector) -> None:
    wire = codec.encode(vector.build(codec), vector.version)
    assert type(wire) is bytes
    assert wire.hex(" ").upper() == h(vector.wire).hex(" ").upper()


@pytest.mark.parametrize("vector", VECTORS, ids=vector_id)
def test_vector_every_proper_prefix_is_partial(codec: ModuleType, vector: Vector) -> None:
    wire = h(vector.wire)
    for cut in range(len(wire)):
        decoder = codec.Decoder(0 if is_connect(wire) else vector.version)
        assert decoder.decode(wire[:cut]) == ([], 0), cut


V311_NOT_CONNECT = [v for v in VECTORS if v.version == 4 and not is_connect(h(v.wire))]


@pytest.mark.parametrize("vector", V311_NOT_CONNECT, ids=vector_id)
def test_mqtt_3_1_packets_match_3_1_1(codec: ModuleType, vector: Vector) -> None:
    # Apart from CONNECT, MQTT 3.1 and 3.1.1 packets have the same layout.
    packets, _ = codec.Decoder(3).decode(h(vector.wire))
    assert packets == [vector.build(codec)]
    assert codec.encode(vector.build(codec), 3) == h(vector.wire)


# §1.5.5 table 1-1: the boundaries of each Variable Byte Integer size.
REMAINING_LENGTHS = [
    (0, "00"),
    (127, "7F"),
    (128, "80 01"),
    (16_383, "FF 7F"),
    (16_384, "80 80 01"),
    (2_097_151, "FF FF 7F"),
    (2_097_152, "80 80 80 01"),
    (268_435_455, "FF FF FF 7F"),
]


@pytest.mark.parametrize(("length", "encoded"), REMAINING_LENGTHS[1:-1])
def test_remaining_length_boundaries(codec: ModuleType, length: int, encoded: str) -> None:
    # A QoS 0 PUBLISH to topic "a" has 3 bytes of variable header before the payload.
    packet = codec.Publish("a", (b"0123456789" * (length // 10 + 1))[: length - 3])
    wire = codec.encode(packet, 4)
    header = bytes([0x30]) + h(encoded)
    assert wire[: len(header)] == header
    assert len(wire) == len(header) + length
    assert h(encoded) == varint(length)
    assert codec.Decoder(4).decode(wire) == ([packet], len(wire))
    assert codec.Decoder(4).decode(wire[:-1]) == ([], 0)
    with pytest.raises(MqttError) as info:
        codec.Decoder(4, len(wire) - 1).decode(wire[: len(header)])
    assert (info.value.reason_code, info.value.offset) == (PACKET_TOO_LARGE, 0)


def test_remaining_length_zero(codec: ModuleType) -> None:
    assert codec.encode(codec.Pingreq()) == h("C0 00")
    assert codec.Decoder(4).decode(h("C0 00")) == ([codec.Pingreq()], 2)


def test_largest_remaining_length_is_only_announced(codec: ModuleType) -> None:
    # 268435455 bytes of body are never sent: the decoder must see the length, wait for the
    # body, and refuse it by size when the limit is lower, without allocating it.
    header = h("30 FF FF FF 7F")
    start = header + h("00 01 61") + b"payload"
    assert codec.Decoder(4).decode(start) == ([], 0)
    assert codec.Decoder(4, MAX).decode(header) == ([], 0)
    assert decode_error(codec, 4, header, MAX - 1) == (PACKET_TOO_LARGE, 0)
    assert decode_error(codec, 4, start, 1_000_000) == (PACKET_TOO_LARGE, 0)
    # Each length byte arriving on its own is still a partial packet.
    for cut in range(1, len(header)):
        assert codec.Decoder(4, 2).decode(header[:cut]) == ([], 0)


def test_user_properties_and_subscription_ids_keep_wire_order(codec: ModuleType) -> None:
    # Repeated properties interleaved with others: each list keeps the order on the wire.
    wire = h(
        "30 1F 00 01 74 1B 26 00 01 62 00 01 32 0B 03 01 00 26 00 01 61 00 01 31"
        " 0B 01 26 00 01 62 00 01 30"
    )
    [packet], consumed = codec.Decoder(5).decode(wire)
    assert consumed == len(wire)
    assert packet.properties == {
        "user_property": [("b", "2"), ("a", "1"), ("b", "0")],
        "subscription_identifier": [3, 1],
        "payload_format_indicator": 0,
    }
    assert list(packet.properties["user_property"]) == [("b", "2"), ("a", "1"), ("b", "0")]


def test_non_ascii_strings_everywhere(codec: ModuleType) -> None:
    packet = codec.Connect(
        "ĉliento",
        protocol_version=5,
        username="用户",
        password="пароль".encode(),
        will=codec.Will("温度/€", "☃".encode(), 1, False, {"content_type": "текст/ü"}),
        properties={"user_property": [("ключ", "值"), ("🙂", "")]},
    )
    wire = codec.encode(packet)
    assert codec.Decoder().decode(wire) == ([packet], len(wire))


def test_v311_encoding_leaves_out_mqtt5_fields(codec: ModuleType) -> None:
    props = {"user_property": [("k", "v")]}
    sub = codec.Subscription("a", 1, no_local=True, retain_as_published=True, retain_handling=2)
    cases = [
        (codec.Subscribe(1, [sub], props), "82 06 00 01 00 01 61 01"),
        (codec.Puback(1, 0x80, props), "40 02 00 01"),
        (codec.Pubrel(1, 0x92), "62 02 00 01"),
        (codec.Connack(True, 0, props), "20 02 01 00"),
        (codec.Publish("t", b"x", properties={"topic_alias": 3}), "30 04 00 01 74 78"),
        (codec.Suback(1, [0, 1], props), "90 04 00 01 00 01"),
        (codec.Unsubscribe(1, ["a"], props), "A2 05 00 01 00 01 61"),
        (codec.Unsuback(1, [0x11], props), "B0 02 00 01"),
        (codec.Disconnect(0x8E, props), "E0 00"),
        (
            codec.Connect("a", will=codec.Will("w", properties={"will_delay_interval": 1})),
            f"10 12 {MQTT_4} 06 00 3C 00 01 61 00 01 77 00 00",
        ),
    ]
    for version in (3, 4):
        for packet, wire in cases:
            assert codec.encode(packet, version) == h(wire), packet


def test_mqtt5_short_forms_are_chosen_when_possible(codec: ModuleType) -> None:
    for packet, wire in [
        (codec.Puback(1, 0, None), "40 02 00 01"),
        (codec.Puback(1, 0, {}), "40 02 00 01"),
        (codec.Pubrec(1, 0x10, {}), "50 03 00 01 10"),
        (codec.Disconnect(0, {}), "E0 00"),
        (codec.Auth(0x18), "F0 01 18"),
        (codec.Connack(False, 0, {}), "20 03 00 00 00"),
        (codec.Publish("t", properties={}), "30 04 00 01 74 00"),
    ]:
        assert codec.encode(packet, 5) == h(wire), packet


def test_encode_publish_matches_encode(codec: ModuleType) -> None:
    props = {"message_expiry_interval": 9, "user_property": [("a", "b")]}
    for version in (3, 4, 5):
        for payload in (b"data", bytearray(b"data"), memoryview(b"xxdata")[2:]):
            direct = codec.encode_publish("a/b", payload, 2, True, True, 77, props, version)
            packet = codec.Publish("a/b", b"data", 2, True, True, 77, props)
            assert direct == codec.encode(packet, version)
    assert codec.encode_publish("t", b"") == h("30 03 00 01 74")


def test_encode_is_version_independent_for_connect(codec: ModuleType) -> None:
    # CONNECT carries its own protocol level; the connection's version argument is moot.
    packet = codec.Connect("a", protocol_version=5)
    assert codec.encode(packet, 4) == codec.encode(packet, 5) == codec.encode(packet)


def test_packet_equality(codec: ModuleType) -> None:
    assert codec.Publish("t", b"x", 1, packet_id=1) == codec.Publish("t", b"x", 1, packet_id=1)
    assert codec.Publish("t", b"x", 1, packet_id=1) != codec.Publish("t", b"x", 1, packet_id=2)
    assert codec.Puback(1) != codec.Pubrec(1)
    assert codec.Pingreq() == codec.Pingreq()
    assert codec.Pingreq() != codec.Pingresp()
    assert codec.Unsuback(1) == codec.Unsuback(1, [])
    with pytest.raises(TypeError):
        hash(codec.Pingreq())
    assert repr(codec.Puback(3, 0x10)) == "Puback(packet_id=3, reason_code=16, properties=None)"


# --- 2. incremental decoding ------------------------------------------------------------


def stream(version: int) -> tuple[bytes, Callable[[ModuleType], list[Any]]]:
    """Every vector of ``version`` back to back, and the packets they decode to."""
    chosen = [v for v in VECTORS if v.version == version and not is_connect(h(v.wire))]
    wire = b"".join(h(v.wire) for v in chosen)
    return wire, lambda m: [v.build(m) for v in chosen]


def server_stream() -> tuple[bytes, Callable[[ModuleType], list[Any]]]:
    """A CONNECT 5.0 followed by MQTT 5 packets, as a server's Decoder() sees them."""
    connect = next(v for v in VECTORS if v.id == "connect-5.0-properties-will-properties")
    wire, expected = stream(5)
    return h(connect.wire) + wire, lambda m: [connect.build(m), *expected(m)]


STREAMS = {"v3": (3, stream(3)), "v4": (4, stream(4)), "v5": (5, stream(5))}
STREAMS["server"] = (0, server_stream())


@pytest.mark.parametrize("name", list(STREAMS))
def test_stream_decodes_in_one_call(codec: ModuleType, name: str) -> None:
    version, (wire, expected) = STREAMS[name]
    for data in (wire, bytearray(wire), memoryview(wire), memoryview(bytearray(wire))):
        decoder = codec.Decoder(version)
        assert decoder.decode(data) == (expected(codec), len(wire))


@pytest.mark.parametrize("name", list(STREAMS))
def test_stream_every_split_point(codec: ModuleType, name: str) -> None:
    version, (wire, expected) = STREAMS[name]
    want = expected(codec)
    for cut in range(len(wire) + 1):
        assert feed(codec.Decoder(version), [wire[:cut], wire[cut:]]) == want, cut


@pytest.mark.parametrize("name", list(STREAMS))
def test_stream_byte_by_byte(codec: ModuleType, name: str) -> None:
    version, (wire, expected) = STREAMS[name]
    chunks = [wire[i : i + 1] for i in range(len(wire))]
    assert feed(codec.Decoder(version), chunks) == expected(codec)


@ROUNDTRIP
@given(name=st.sampled_from(list(STREAMS)), sizes=st.lists(st.integers(1, 40), max_size=60))
def test_stream_random_chunks(codec: ModuleType, name: str, sizes: list[int]) -> None:
    version, (wire, expected) = STREAMS[name]
    chunks, at = [], 0
    for size in sizes:
        chunks.append(wire[at : at + size])
        at += size
    chunks.append(wire[at:])
    assert feed(codec.Decoder(version), chunks) == expected(codec)


def test_decode_leaves_a_partial_packet(codec: ModuleType) -> None:
    wire = h("C0 00 40 02 00 01 30 0A 00 03 61 2F 62 68")
    assert codec.Decoder(4).decode(wire) == ([codec.Pingreq(), codec.Puback(1)], 6)
    assert codec.Decoder(4).decode(wire[:1]) == ([], 0)
    assert codec.Decoder(4).decode(wire[:3]) == ([codec.Pingreq()], 2)
    assert codec.Decoder(4).decode(b"") == ([], 0)


def test_connect_switches_the_version_of_the_packets_after_it(codec: ModuleType) -> None:
    puback_with_reason = h("40 03 00 01 10")
    connect5 = codec.encode(codec.Connect("a", protocol_version=5))
    decoder = codec.Decoder()
    assert decoder.protocol_version == 0
    assert decoder.decode(connect5 + puback_with_reason + h("F0 01 18")) == (
        [codec.Connect("a", protocol_version=5), codec.Puback(1, 0x10), codec.Auth(0x18)],
        len(connect5) + 8,
    )
    assert decoder.protocol_version == 5

    # Under 3.1.1 the same PUBACK has a trailing byte.
    connect4 = codec.encode(codec.Connect("a"))
    decoder = codec.Decoder()
    assert decoder.decode(connect4 + puback_with_reason) == (
        [codec.Connect("a")],
        len(connect4),
    )
    assert decoder.protocol_version == 4
    with pytest.raises(MqttError) as info:
        decoder.decode(puback_with_reason)
    assert (info.value.reason_code, info.value.offset) == (MALFORMED, 4)

    # AUTH is a reserved packet type for MQTT 3.1.
    connect3 = codec.encode(codec.Connect("a", protocol_version=3))
    decoder = codec.Decoder()
    assert decoder.decode(connect3 + h("F0 00")) == (
        [codec.Connect("a", protocol_version=3)],
        len(connect3),
    )
    assert decoder.protocol_version == 3
    with pytest.raises(MqttError) as info:
        decoder.decode(h("F0 00"))
    assert (info.value.reason_code, info.value.offset) == (MALFORMED, 0)


def test_bad_packet_after_good_ones(codec: ModuleType) -> None:
    good = h("C0 00 40 02 00 07")
    bad = h("32 05 00 01 74 00 00")  # PUBLISH QoS 1 with packet identifier 0
    decoder = codec.Decoder(4)
    assert decoder.decode(good + bad) == ([codec.Pingreq(), codec.Puback(7)], len(good))
    with pytest.raises(MqttError) as info:
        decoder.decode(bad)
    assert (info.value.reason_code, info.value.offset) == (PROTOCOL_ERROR, 5)
    # The decoder holds no buffer: the same bytes give the same answer again.
    assert decoder.decode(good + bad) == ([codec.Pingreq(), codec.Puback(7)], len(good))


def test_too_large_packet_after_good_ones(codec: ModuleType) -> None:
    # Only the fixed header of the large packet has arrived.
    decoder = codec.Decoder(4, max_packet_size=16)
    data = h("C0 00 30 0F")
    assert decoder.decode(data) == ([codec.Pingreq()], 2)
    with pytest.raises(MqttError) as info:
        decoder.decode(data[2:])
    assert (info.value.reason_code, info.value.offset) == (PACKET_TOO_LARGE, 0)
    assert decoder.decode(h("30 0E 00 01 74") + bytes(11)) == (
        [codec.Publish("t", bytes(11))],
        16,
    )


def test_max_packet_size_counts_the_fixed_header(codec: ModuleType) -> None:
    wire = h("30 08 00 01 74 61 62 63 64 65")  # 10 bytes in all
    assert codec.Decoder(4, 10).decode(wire) == ([codec.Publish("t", b"abcde")], 10)
    assert decode_error(codec, 4, wire, 9) == (PACKET_TOO_LARGE, 0)
    assert codec.Decoder(4, 2).decode(h("C0 00 D0 00")) == ([codec.Pingreq(), codec.Pingresp()], 4)


@pytest.mark.parametrize(
    "wrap",
    [bytes, bytearray, memoryview, lambda b: memoryview(bytearray(b"..." + b))[3:]],
    ids=["bytes", "bytearray", "memoryview", "memoryview-slice"],
)
def test_input_buffer_types(codec: ModuleType, wrap: Callable[[bytes], Any]) -> None:
    wire, expected = stream(5)
    assert codec.Decoder(5).decode(wrap(wire)) == (expected(codec), len(wire))
    with pytest.raises(MqttError) as info:
        codec.Decoder(5).decode(wrap(h("40 03 00 01 01")))
    assert (info.value.reason_code, info.value.offset) == (MALFORMED, 4)


# --- 3. malformed input -----------------------------------------------------------------


@dataclass(frozen=True)
class Bad:
    id: str
    version: int
    wire: str
    code: int
    offset: int
    max_packet_size: int = MAX


CONNECT_5_HEAD = f"{MQTT_5} 02 00 3C"  # name, level, clean start, keep alive 60

# fmt: off
BAD = [
    # Fixed header (§2.1) ---------------------------------------------------------------
    Bad("remaining-length-5-bytes", 4, "30 FF FF FF FF 01", MALFORMED, 4),
    Bad("remaining-length-5-bytes-zero-value", 4, "C0 80 80 80 80 00", MALFORMED, 4),
    Bad("remaining-length-5-bytes-at-offset", 5, "D0 80 80 80 80 80", MALFORMED, 4),
    Bad("type-0-v3.1.1", 4, "00 00", MALFORMED, 0),
    Bad("type-0-v5", 5, "00 00", MALFORMED, 0),
    Bad("type-0-server-side", 0, "00 00", MALFORMED, 0),
    Bad("type-15-v3.1.1", 4, "F0 00", MALFORMED, 0),
    Bad("type-15-v3.1", 3, "F0 00", MALFORMED, 0),
    Bad("pubrel-flags-0", 4, "60 02 00 01", MALFORMED, 0),
    Bad("pubrel-flags-0-v5", 5, "60 02 00 01", MALFORMED, 0),
    Bad("subscribe-flags-0", 4, "80 06 00 01 00 01 61 00", MALFORMED, 0),
    Bad("unsubscribe-flags-0", 4, "A0 05 00 01 00 01 61", MALFORMED, 0),
    Bad("connect-flags-1", 0, f"11 0D {MQTT_4} 02 00 3C 00 01 63", MALFORMED, 0),
    Bad("connack-flags-8", 4, "28 02 00 00", MALFORMED, 0),
    Bad("puback-flags-2", 4, "42 02 00 01", MALFORMED, 0),
    Bad("pubrec-flags-2", 4, "52 02 00 01", MALFORMED, 0),
    Bad("pubcomp-flags-1", 4, "71 02 00 01", MALFORMED, 0),
    Bad("suback-flags-2", 4, "92 03 00 01 00", MALFORMED, 0),
    Bad("unsuback-flags-2", 4, "B2 02 00 01", MALFORMED, 0),
    Bad("pingreq-flags-1", 4, "C1 00", MALFORMED, 0),
    Bad("pingresp-flags-15", 4, "DF 00", MALFORMED, 0),
    Bad("disconnect-flags-1", 5, "E1 00", MALFORMED, 0),
    Bad("auth-flags-1", 5, "F1 00", MALFORMED, 0),
    Bad("flags-checked-before-body", 4, "60 02", MALFORMED, 0),
    # Packet too large, raised on the fixed header (§3.1.2.11.4, §3.2.2.3.6) -------------
    Bad("too-large-header-only", 4, "30 09", PACKET_TOO_LARGE, 0, 10),
    Bad("too-large-complete", 4, "30 09 00 01 74 61 62 63 64 65 66", PACKET_TOO_LARGE, 0, 10),
    Bad("too-large-before-connect", 0, "10 7F", PACKET_TOO_LARGE, 0, 100),
    Bad("too-large-two-byte-length", 5, "30 80 01", PACKET_TOO_LARGE, 0, 130),
    Bad("too-large-minimum-limit", 4, "C0 01", PACKET_TOO_LARGE, 0, 2),
    # Before CONNECT on a server-side Decoder() (§3.1) -------------------------------------
    Bad("pingreq-before-connect", 0, "C0 00", PROTOCOL_ERROR, 0),
    Bad("publish-header-before-connect", 0, "30 05", PROTOCOL_ERROR, 0),
    Bad("subscribe-before-connect", 0, "82 06 00 01 00 01 61 00", PROTOCOL_ERROR, 0),
    Bad("auth-before-connect", 0, "F0 00", PROTOCOL_ERROR, 0),
    Bad("connack-before-connect", 0, "20 02 00 00", PROTOCOL_ERROR, 0),
    # UTF-8 strings (§1.5.4): offsets point at the string's length prefix ---------------
    Bad("utf8-invalid-byte", 4, "30 05 00 03 61 FF 62", MALFORMED, 2),
    Bad("utf8-surrogate", 4, "30 05 00 03 ED A0 80", MALFORMED, 2),
    Bad("utf8-low-surrogate", 4, "30 05 00 03 ED BF BF", MALFORMED, 2),
    Bad("utf8-u0000", 4, "30 05 00 03 61 00 62", MALFORMED, 2),
    Bad("utf8-overlong-u0000", 4, "30 04 00 02 C0 80", MALFORMED, 2),
    Bad("utf8-overlong-slash", 4, "30 04 00 02 C0 AF", MALFORMED, 2),
    Bad("utf8-truncated-sequence", 4, "30 04 00 02 61 E2", MALFORMED, 2),
    Bad("utf8-above-u10ffff", 4, "30 06 00 04 F4 90 80 80", MALFORMED, 2),
    Bad("utf8-lone-continuation", 4, "30 03 00 01 80", MALFORMED, 2),
    Bad("utf8-client-id", 0, f"10 0D {MQTT_4} 02 00 3C 00 01 FF", MALFORMED, 12),
    Bad("utf8-protocol-name", 0, "10 0D 00 04 4D 51 54 00 04 02 00 3C 00 01 63", MALFORMED, 2),
    Bad("utf8-username-surrogate", 0, f"10 12 {MQTT_4} 82 00 3C 00 01 63 00 03 ED A0 80", MALFORMED, 15),
    Bad("utf8-subscribe-filter-u0000", 4, "82 08 00 01 00 03 61 00 62 00", MALFORMED, 4),
    Bad("utf8-unsubscribe-filter-surrogate", 4, "A2 07 00 01 00 03 ED A0 80", MALFORMED, 4),
    Bad("utf8-user-property-value-u0000", 5, "30 0B 00 01 74 07 26 00 01 6B 00 01 00", MALFORMED, 10 ),
    Bad("utf8-reason-string", 5, "40 08 00 01 80 04 1F 00 01 FE", MALFORMED, 7),
    # Properties (§2.2.2) ----------------------------------------------------------------
    Bad("property-not-allowed-puback", 5, "40 09 00 01 00 05 11 00 00 00 0A", PROTOCOL_ERROR, 6),
    Bad("property-not-allowed-publish", 5, "30 08 00 01 74 04 1F 00 01 78", PROTOCOL_ERROR, 6),
    Bad("property-not-allowed-subscribe", 5, "82 0A 00 01 03 23 00 01 00 01 61 00", PROTOCOL_ERROR, 5),
    Bad("property-not-allowed-connack", 5, "20 08 00 00 05 18 00 00 00 01", PROTOCOL_ERROR, 5),
    Bad("property-not-allowed-auth", 5, "F0 07 18 05 11 00 00 00 01", PROTOCOL_ERROR, 4),
    Bad("property-not-allowed-disconnect", 5, "E0 06 00 04 12 00 01 61", PROTOCOL_ERROR, 4),
    Bad("property-not-allowed-connect", 0, f"10 12 {CONNECT_5_HEAD} 05 18 00 00 00 05 00 00", PROTOCOL_ERROR, 13),
    Bad("property-not-allowed-will", 0, f"10 16 {MQTT_5} 06 00 3C 00 00 00 03 23 00 01 00 01 74 00 00", PROTOCOL_ERROR, 16),
    Bad("property-unknown-id", 5, "30 06 00 01 74 02 04 00", MALFORMED, 6),
    Bad("property-unknown-id-0", 5, "30 05 00 01 74 01 00", MALFORMED, 6),
    Bad("property-unknown-two-byte-id", 5, "30 06 00 01 74 02 80 01", MALFORMED, 6),
    Bad("property-unknown-in-connect", 0, f"10 0E {CONNECT_5_HEAD} 01 7F 00 00", MALFORMED, 13),
    Bad("property-duplicate-publish", 5, "30 08 00 01 74 04 01 00 01 01", PROTOCOL_ERROR, 8),
    Bad("property-duplicate-connack", 5, "20 0C 00 00 09 1F 00 01 61 1F 00 02 62 63", PROTOCOL_ERROR, 9),
    Bad("property-duplicate-connect", 0, f"10 17 {CONNECT_5_HEAD} 0A 11 00 00 00 01 11 00 00 00 02 00 00", PROTOCOL_ERROR, 18),
    Bad("property-boolean-2", 5, "30 06 00 01 74 02 01 02", PROTOCOL_ERROR, 6),
    Bad("property-maximum-qos-2", 5, "20 05 00 00 02 24 02", PROTOCOL_ERROR, 5),
    Bad("property-retain-available-255", 5, "20 05 00 00 02 25 FF", PROTOCOL_ERROR, 5),
    Bad("property-request-problem-information-2", 0, f"10 0F {CONNECT_5_HEAD} 02 17 02 00 00", PROTOCOL_ERROR, 13),
    Bad("property-receive-maximum-0-connect", 0, f"10 10 {CONNECT_5_HEAD} 03 21 00 00 00 00", PROTOCOL_ERROR, 13),
    Bad("property-receive-maximum-0-connack", 5, "20 06 00 00 03 21 00 00", PROTOCOL_ERROR, 5),
    Bad("property-maximum-packet-size-0", 0, f"10 12 {CONNECT_5_HEAD} 05 27 00 00 00 00 00 00", PROTOCOL_ERROR, 13),
    Bad("property-topic-alias-0", 5, "30 07 00 01 74 03 23 00 00", TOPIC_ALIAS_INVALID, 6),
    Bad("property-subscription-identifier-0", 5, "30 06 00 01 74 02 0B 00", PROTOCOL_ERROR, 6),
    Bad("property-subscription-identifier-0-subscribe", 5, "82 09 00 01 02 0B 00 00 01 61 00", PROTOCOL_ERROR, 5),
    Bad("property-subscription-identifier-truncated", 5, "30 08 00 01 74 04 0B 80 80 80", MALFORMED, 10),
    Bad("property-subscription-identifier-5-bytes", 5, "30 0A 00 01 74 06 0B 80 80 80 80 01", MALFORMED, 10),
    Bad("property-length-past-packet", 5, "30 05 00 01 74 05 01", MALFORMED, 6),
    Bad("property-value-past-block", 5, "30 05 00 01 74 01 02", MALFORMED, 7),
    Bad("property-user-pair-without-value", 5, "30 09 00 01 74 05 26 00 01 6B 00", MALFORMED, 10),
    Bad("property-length-missing-publish", 5, "30 03 00 01 74", MALFORMED, 5),
    Bad("property-length-missing-connack", 5, "20 02 00 00", MALFORMED, 4),
    Bad("property-length-missing-suback", 5, "90 02 00 01", MALFORMED, 4),
    # PUBLISH (§3.3) ---------------------------------------------------------------------
    Bad("publish-wildcard-plus", 4, "30 05 00 03 61 2F 2B", TOPIC_NAME_INVALID, 2),
    Bad("publish-wildcard-hash", 4, "30 03 00 01 23", TOPIC_NAME_INVALID, 2),
    Bad("publish-wildcard-inside-level-v5", 5, "30 06 00 03 61 2B 62 00", TOPIC_NAME_INVALID, 2),
    Bad("publish-qos-3", 4, "36 05 00 01 74 00 01", MALFORMED, 0),
    Bad("publish-qos-3-retain", 5, "37 06 00 01 74 00 01 00", MALFORMED, 0),
    Bad("publish-dup-qos-0", 4, "38 03 00 01 74", MALFORMED, 0),
    Bad("publish-packet-id-0-qos-1", 4, "32 05 00 01 74 00 00", PROTOCOL_ERROR, 5),
    Bad("publish-packet-id-0-qos-2", 5, "34 06 00 01 74 00 00 00", PROTOCOL_ERROR, 5),
    Bad("publish-packet-id-truncated", 4, "32 04 00 01 74 00", MALFORMED, 5),
    Bad("publish-topic-truncated", 4, "30 03 00 05 74", MALFORMED, 4),
    Bad("publish-topic-length-truncated", 4, "30 01 00", MALFORMED, 2),
    Bad("publish-empty-body", 4, "30 00", MALFORMED, 2),
    Bad("publish-empty-topic-v3.1.1", 4, "30 02 00 00", PROTOCOL_ERROR, 2),
    Bad("publish-empty-topic-no-alias", 5, "30 03 00 00 00", PROTOCOL_ERROR, 2),
    Bad("publish-empty-topic-other-property", 5, "30 05 00 00 02 01 00", PROTOCOL_ERROR, 2),
    # Acknowledgements (§3.4-§3.7) --------------------------------------------------------
    Bad("puback-packet-id-0", 4, "40 02 00 00", PROTOCOL_ERROR, 2),
    Bad("pubrec-packet-id-0", 5, "50 02 00 00", PROTOCOL_ERROR, 2),
    Bad("pubrel-packet-id-0", 4, "62 02 00 00", PROTOCOL_ERROR, 2),
    Bad("pubcomp-packet-id-0", 5, "70 02 00 00", PROTOCOL_ERROR, 2),
    Bad("puback-truncated", 4, "40 01 00", MALFORMED, 2),
    Bad("puback-empty", 5, "40 00", MALFORMED, 2),
    Bad("puback-trailing-v3.1.1", 4, "40 03 00 01 00", MALFORMED, 4),
    Bad("puback-trailing-after-properties", 5, "40 05 00 01 00 00 FF", MALFORMED, 6),
    Bad("puback-reason-invalid", 5, "40 03 00 01 01", MALFORMED, 4),
    Bad("pubrec-reason-0x92-invalid", 5, "50 03 00 01 92", MALFORMED, 4),
    Bad("pubrel-reason-0x10-invalid", 5, "62 03 00 01 10", MALFORMED, 4),
    Bad("pubcomp-reason-0x80-invalid", 5, "70 03 00 01 80", MALFORMED, 4),
    # SUBSCRIBE / UNSUBSCRIBE (§3.8, §3.10) ---------------------------------------------
    Bad("subscribe-packet-id-0", 4, "82 06 00 00 00 01 61 00", PROTOCOL_ERROR, 2),
    Bad("subscribe-empty-v3.1.1", 4, "82 02 00 01", PROTOCOL_ERROR, 4),
    Bad("subscribe-empty-v5", 5, "82 03 00 01 00", PROTOCOL_ERROR, 5),
    Bad("subscribe-options-missing", 4, "82 05 00 01 00 01 61", MALFORMED, 7),
    Bad("subscribe-v3.1.1-no-local-bit-reserved", 4, "82 06 00 01 00 01 61 04", MALFORMED, 7),
    Bad("subscribe-v3.1.1-retain-handling-reserved", 4, "82 06 00 01 00 01 61 10", MALFORMED, 7),
    Bad("subscribe-v5-bit-6-reserved", 5, "82 07 00 01 00 00 01 61 40", MALFORMED, 8),
    Bad("subscribe-v5-bit-7-reserved", 5, "82 07 00 01 00 00 01 61 80", MALFORMED, 8),
    Bad("subscribe-qos-3-v3.1.1", 4, "82 06 00 01 00 01 61 03", MALFORMED, 7),
    Bad("subscribe-qos-3-v5", 5, "82 07 00 01 00 00 01 61 03", MALFORMED, 8),
    Bad("subscribe-retain-handling-3", 5, "82 07 00 01 00 00 01 61 30", PROTOCOL_ERROR, 8),
    Bad("subscribe-second-filter-bad", 4, "82 0A 00 01 00 01 61 00 00 01 62 03", MALFORMED, 11),
    Bad("unsubscribe-packet-id-0", 4, "A2 05 00 00 00 01 61", PROTOCOL_ERROR, 2),
    Bad("unsubscribe-empty-v3.1.1", 4, "A2 02 00 01", PROTOCOL_ERROR, 4),
    Bad("unsubscribe-empty-v5", 5, "A2 03 00 01 00", PROTOCOL_ERROR, 5),
    Bad("unsubscribe-filter-truncated", 4, "A2 05 00 01 00 05 61", MALFORMED, 6),
    # SUBACK / UNSUBACK (§3.9, §3.11) ---------------------------------------------------
    Bad("suback-packet-id-0", 4, "90 03 00 00 00", PROTOCOL_ERROR, 2),
    Bad("suback-code-v3.1.1-0x81", 4, "90 03 00 01 81", MALFORMED, 4),
    Bad("suback-second-code-invalid", 4, "90 04 00 01 00 11", MALFORMED, 5),
    Bad("suback-code-v5-0x03", 5, "90 04 00 01 00 03", MALFORMED, 5),
    Bad("unsuback-packet-id-0", 4, "B0 02 00 00", PROTOCOL_ERROR, 2),
    Bad("unsuback-trailing-v3.1.1", 4, "B0 03 00 01 00", MALFORMED, 4),
    Bad("unsuback-code-v5-0x01", 5, "B0 04 00 01 00 01", MALFORMED, 5),
    # CONNACK (§3.2) ---------------------------------------------------------------------
    Bad("connack-reserved-flags-v3.1.1", 4, "20 02 02 00", MALFORMED, 2),
    Bad("connack-reserved-flags-v5", 5, "20 03 80 00 00", MALFORMED, 2),
    Bad("connack-return-code-6", 4, "20 02 00 06", MALFORMED, 3),
    Bad("connack-return-code-0x80-v3.1", 3, "20 02 00 80", MALFORMED, 3),
    Bad("connack-reason-0x01-v5", 5, "20 03 00 01 00", MALFORMED, 3),
    Bad("connack-trailing-v3.1.1", 4, "20 03 00 00 00", MALFORMED, 4),
    Bad("connack-trailing-v5", 5, "20 04 00 00 00 00", MALFORMED, 5),
    Bad("connack-truncated", 4, "20 01 00", MALFORMED, 3),
    # PINGREQ / PINGRESP / DISCONNECT / AUTH --------------------------------------------
    Bad("pingreq-trailing", 4, "C0 01 00", MALFORMED, 2),
    Bad("pingresp-trailing", 5, "D0 01 00", MALFORMED, 2),
    Bad("disconnect-trailing-v3.1.1", 4, "E0 01 00", MALFORMED, 2),
    Bad("disconnect-trailing-after-properties", 5, "E0 03 00 00 00", MALFORMED, 4),
    Bad("disconnect-reason-0x01", 5, "E0 01 01", MALFORMED, 2),
    Bad("disconnect-reason-0x8c", 5, "E0 01 8C", MALFORMED, 2),
    Bad("auth-reason-0x01", 5, "F0 01 01", MALFORMED, 2),
    Bad("auth-trailing", 5, "F0 03 00 00 00", MALFORMED, 4),
    Bad("auth-properties-truncated", 5, "F0 03 18 05 15", MALFORMED, 4),
    # CONNECT (§3.1) ---------------------------------------------------------------------
    Bad("connect-unknown-level", 0, "10 0D 00 04 4D 51 54 54 06 02 00 3C 00 01 63", UNSUPPORTED_VERSION, 2),
    Bad("connect-mqtt-level-3", 0, "10 0D 00 04 4D 51 54 54 03 02 00 3C 00 01 63", UNSUPPORTED_VERSION, 2),
    Bad("connect-mqisdp-level-4", 0, "10 0F 00 06 4D 51 49 73 64 70 04 02 00 3C 00 01 63", UNSUPPORTED_VERSION, 2),
    Bad("connect-unknown-name", 0, "10 0D 00 04 4D 51 54 58 04 02 00 3C 00 01 63", UNSUPPORTED_VERSION, 2),
    Bad("connect-lowercase-name", 0, "10 0D 00 04 6D 71 74 74 04 02 00 3C 00 01 63", UNSUPPORTED_VERSION, 2),
    Bad("connect-reserved-flag", 0, f"10 0D {MQTT_4} 03 00 3C 00 01 63", MALFORMED, 9),
    Bad("connect-reserved-flag-v5", 0, f"10 0E {MQTT_5} 01 00 3C 00 00 01 63", MALFORMED, 9),
    Bad("connect-will-qos-3", 0, f"10 0D {MQTT_4} 1E 00 3C 00 01 63", MALFORMED, 9),
    Bad("connect-will-retain-without-will", 0, f"10 0D {MQTT_4} 22 00 3C 00 01 63", MALFORMED, 9),
    Bad("connect-will-qos-without-will", 0, f"10 0D {MQTT_4} 0A 00 3C 00 01 63", MALFORMED, 9),
    Bad("connect-password-without-username", 0, f"10 0F {MQTT_4} 42 00 3C 00 01 63 00 00", MALFORMED, 9),
    Bad("connect-password-without-username-v3.1", 0, f"10 11 {MQISDP_3} 42 00 3C 00 01 63 00 00", MALFORMED, 11),
    Bad("connect-client-id-truncated", 0, f"10 0C {MQTT_4} 02 00 3C 00 05", MALFORMED, 14),
    Bad("connect-keep-alive-truncated", 0, f"10 09 {MQTT_4} 02 00", MALFORMED, 10),
    Bad("connect-will-payload-missing", 0, f"10 10 {MQTT_4} 06 00 3C 00 01 63 00 01 74", MALFORMED, 18),
    Bad("connect-username-missing", 0, f"10 0D {MQTT_4} 82 00 3C 00 01 63", MALFORMED, 15),
    Bad("connect-password-missing", 0, f"10 0F {MQTT_4} C2 00 3C 00 01 63 00 00", MALFORMED, 17),
    Bad("connect-trailing", 0, f"10 0E {MQTT_4} 02 00 3C 00 01 63 FF", MALFORMED, 15),
    Bad("connect-v5-property-length-missing", 0, f"10 0A {CONNECT_5_HEAD}", MALFORMED, 12),
]
# fmt: on


def bad_id(case: Bad) -> str:
    return case.id


def test_bad_table_ids_are_unique() -> None:
    assert len({c.id for c in BAD}) == len(BAD)


@pytest.mark.parametrize("case", BAD, ids=bad_id)
def test_malformed(codec: ModuleType, case: Bad) -> None:
    code, offset = decode_error(codec, case.version, h(case.wire), case.max_packet_size)
    assert (hex(code), offset) == (hex(case.code), case.offset)


@pytest.mark.parametrize("case", [c for c in BAD if c.version], ids=bad_id)
def test_malformed_after_a_good_packet(codec: ModuleType, case: Bad) -> None:
    # The good packet comes back first; the error follows on the next call, with offsets
    # relative to the buffer of that call.
    data = h("C0 00") + h(case.wire)
    decoder = codec.Decoder(case.version, case.max_packet_size)
    assert decoder.decode(data) == ([codec.Pingreq()], 2)
    with pytest.raises(MqttError) as info:
        decoder.decode(memoryview(data)[2:])
    assert (hex(info.value.reason_code), info.value.offset) == (hex(case.code), case.offset)


@need_c
@pytest.mark.parametrize("case", BAD, ids=bad_id)
def test_malformed_twins_agree_on_the_message(case: Bad) -> None:
    messages = []
    for m in (py_codec, c_codec):
        with pytest.raises(MqttError) as info:
            m.Decoder(case.version, case.max_packet_size).decode(h(case.wire))
        messages.append(info.value.message)
    assert messages[0] == messages[1]


# --- 4. hypothesis round-trips ----------------------------------------------------------


class Spec:
    """A packet described independently of the twin, built for either with ``build``."""

    __slots__ = ("cls", "args", "kwargs")

    def __init__(self, cls: str, *args: Any, **kwargs: Any) -> None:
        self.cls = cls
        self.args = args
        self.kwargs = kwargs

    def __repr__(self) -> str:
        parts = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs.items()]
        return f"{self.cls}({', '.join(parts)})"


def build(m: ModuleType, obj: Any) -> Any:
    if isinstance(obj, Spec):
        args = [build(m, a) for a in obj.args]
        kwargs = {k: build(m, v) for k, v in obj.kwargs.items()}
        return getattr(m, obj.cls)(*args, **kwargs)
    if isinstance(obj, list) and obj and isinstance(obj[0], Spec):
        return [build(m, x) for x in obj]
    return obj


MQTT_CHARS = st.characters(exclude_categories=("Cs",), exclude_characters="\x00")
LEVEL_CHARS = st.characters(exclude_categories=("Cs",), exclude_characters="\x00+#/")
mqtt_text = st.text(MQTT_CHARS, max_size=10)
topic_level = st.text(LEVEL_CHARS, max_size=6)
topic_names = st.lists(topic_level, min_size=1, max_size=4).map("/".join).filter(bool)
packet_ids = st.integers(1, 65535)


@st.composite
def topic_filters(draw: st.DrawFn) -> str:
    levels = draw(st.lists(st.one_of(topic_level, st.just("+")), min_size=1, max_size=4))
    if draw(st.booleans()):
        levels.append("#")
    return "/".join(levels) or "#"


def property_values(name: str, ptype: int) -> st.SearchStrategy[Any]:
    kind = spec.PROPERTIES[spec.PROPERTY_IDS[name]][1]
    low = 1 if name in spec.NONZERO_PROPERTIES else 0
    if name in spec.BOOLEAN_PROPERTIES:
        return st.integers(0, 1)
    if kind == spec.BYTE:
        return st.integers(low, 0xFF)
    if kind == spec.TWO_BYTE_INT:
        return st.integers(low, 0xFFFF)
    if kind == spec.FOUR_BYTE_INT:
        return st.integers(low, 0xFFFF_FFFF)
    if kind == spec.VARIABLE_BYTE_INT:
        # §3.8.2.1.2: SUBSCRIBE carries at most one Subscription Identifier.
        most = 1 if ptype == spec.SUBSCRIBE else 3
        return st.lists(st.integers(1, spec.MAX_REMAINING_LENGTH), min_size=1, max_size=most)
    if kind == spec.UTF8_STRING:
        return mqtt_text
    if kind == spec.BINARY_DATA:
        return st.binary(max_size=12)
    assert kind == spec.UTF8_PAIR
    return st.lists(st.tuples(mqtt_text, mqtt_text), min_size=1, max_size=3)


def properties(ptype: int, version: int) -> st.SearchStrategy[dict[str, Any] | None]:
    if version != 5:
        return st.none()
    allowed = {
        name: property_values(name, ptype)
        for name, _, packets in spec.PROPERTIES.values()
        if ptype in packets
    }
    # Decoding gives None, not {}, for an empty property block.
    return st.fixed_dictionaries({}, optional=allowed).map(lambda d: d or None)


def reason_codes(ptype: int, version: int, v3: frozenset[int]) -> st.SearchStrategy[int]:
    return st.sampled_from(sorted(spec.REASON_CODES[ptype] if version == 5 else v3))


@st.composite
def connects(draw: st.DrawFn, version: int) -> Spec:
    username = draw(st.none() | mqtt_text)
    password = draw(st.none() | st.binary(max_size=12))
    if version != 5 and username is None:
        password = None  # §3.1.2.9 of 3.1.1: no password without a user name
    will = None
    if draw(st.booleans()):
        will = Spec(
            "Will",
            draw(topic_names),
            payload=draw(st.binary(max_size=12)),
            qos=draw(st.integers(0, 2)),
            retain=draw(st.booleans()),
            properties=draw(properties(spec.WILL, version)),
        )
    return Spec(
        "Connect",
        draw(mqtt_text),
        protocol_version=version,
        clean_start=draw(st.booleans()),
        keep_alive=draw(st.integers(0, 65535)),
        username=username,
        password=password,
        will=will,
        properties=draw(properties(spec.CONNECT, version)),
    )


@st.composite
def publishes(draw: st.DrawFn, version: int) -> Spec:
    qos = draw(st.integers(0, 2))
    props = draw(properties(spec.PUBLISH, version))
    topic = draw(topic_names | st.just("")) if version == 5 else draw(topic_names)
    if not topic and not (props and "topic_alias" in props):
        props = {**(props or {}), "topic_alias": draw(st.integers(1, 65535))}
    return Spec(
        "Publish",
        topic,
        draw(st.binary(max_size=40)),
        qos=qos,
        retain=draw(st.booleans()),
        dup=draw(st.booleans()) if qos else False,
        packet_id=draw(packet_ids) if qos else 0,
        properties=props,
    )


@st.composite
def acks(draw: st.DrawFn, version: int, cls: str, ptype: int) -> Spec:
    if version != 5:
        return Spec(cls, draw(packet_ids))
    code = draw(reason_codes(ptype, version, frozenset()))
    return Spec(cls, draw(packet_ids), code, draw(properties(ptype, version)))


@st.composite
def subscribes(draw: st.DrawFn, version: int) -> Spec:
    subscriptions = []
    for topic_filter in draw(st.lists(topic_filters(), min_size=1, max_size=4)):
        if version == 5:
            sub = Spec(
                "Subscription",
                topic_filter,
                draw(st.integers(0, 2)),
                draw(st.booleans()),
                draw(st.booleans()),
                draw(st.integers(0, 2)),
            )
        else:
            sub = Spec("Subscription", topic_filter, draw(st.integers(0, 2)))
        subscriptions.append(sub)
    return Spec(
        "Subscribe", draw(packet_ids), subscriptions, draw(properties(spec.SUBSCRIBE, version))
    )


def packets(version: int) -> st.SearchStrategy[Spec]:
    def props(ptype: int) -> st.SearchStrategy[dict[str, Any] | None]:
        return properties(ptype, version)

    choices = [
        connects(version),
        st.builds(
            Spec,
            st.just("Connack"),
            st.booleans(),
            reason_codes(spec.CONNACK, version, spec.V3_CONNACK_CODES),
            props(spec.CONNACK),
        ),
        publishes(version),
        acks(version, "Puback", spec.PUBACK),
        acks(version, "Pubrec", spec.PUBREC),
        acks(version, "Pubrel", spec.PUBREL),
        acks(version, "Pubcomp", spec.PUBCOMP),
        subscribes(version),
        st.builds(
            Spec,
            st.just("Suback"),
            packet_ids,
            st.lists(
                reason_codes(spec.SUBACK, version, spec.V3_SUBACK_CODES), min_size=1, max_size=4
            ),
            props(spec.SUBACK),
        ),
        st.builds(
            Spec,
            st.just("Unsubscribe"),
            packet_ids,
            st.lists(topic_filters(), min_size=1, max_size=4),
            props(spec.UNSUBSCRIBE),
        ),
        st.just(Spec("Pingreq")),
        st.just(Spec("Pingresp")),
    ]
    if version == 5:
        choices += [
            st.builds(
                Spec,
                st.just("Unsuback"),
                packet_ids,
                st.lists(reason_codes(spec.UNSUBACK, 5, frozenset()), min_size=1, max_size=4),
                props(spec.UNSUBACK),
            ),
            st.builds(
                Spec,
                st.just("Disconnect"),
                reason_codes(spec.DISCONNECT, 5, frozenset()),
                props(spec.DISCONNECT),
            ),
            st.builds(
                Spec, st.just("Auth"), reason_codes(spec.AUTH, 5, frozenset()), props(spec.AUTH)
            ),
        ]
    else:
        choices += [
            st.builds(Spec, st.just("Unsuback"), packet_ids),
            st.just(Spec("Disconnect")),
        ]
    return st.one_of(choices)


VERSIONED_PACKETS = st.sampled_from([3, 4, 5]).flatmap(lambda v: st.tuples(st.just(v), packets(v)))
VERSIONED_STREAMS = st.sampled_from([3, 4, 5]).flatmap(
    lambda v: st.tuples(st.just(v), st.lists(packets(v), min_size=1, max_size=8))
)


def decoder_for(m: ModuleType, version: int, packet: Spec) -> Any:
    return m.Decoder(0 if packet.cls == "Connect" else version)


@ROUNDTRIP
@given(case=VERSIONED_PACKETS)
def test_roundtrip(codec: ModuleType, case: tuple[int, Spec]) -> None:
    version, described = case
    packet = build(codec, described)
    wire = codec.encode(packet, version)
    decoded, consumed = decoder_for(codec, version, described).decode(wire)
    assert consumed == len(wire)
    assert decoded == [packet]
    # Encoding what was decoded gives the same bytes back.
    assert codec.encode(decoded[0], version) == wire


@need_c
@ROUNDTRIP
@given(case=VERSIONED_PACKETS)
def test_twins_encode_and_decode_alike(case: tuple[int, Spec]) -> None:
    version, described = case
    py_packet, c_packet = build(py_codec, described), build(c_codec, described)
    assert repr(py_packet) == repr(c_packet)
    wire = py_codec.encode(py_packet, version)
    assert c_codec.encode(c_packet, version) == wire
    py_out = decoder_for(py_codec, version, described).decode(wire)
    c_out = decoder_for(c_codec, version, described).decode(wire)
    assert repr(py_out) == repr(c_out) == repr(([py_packet], len(wire)))


@settings(ROUNDTRIP, max_examples=150)
@given(case=VERSIONED_STREAMS, data=st.data())
def test_roundtrip_stream_in_random_chunks(
    codec: ModuleType, case: tuple[int, list[Spec]], data: st.DataObject
) -> None:
    version, described = case
    expected = [build(codec, p) for p in described]
    connect = codec.Connect("s", protocol_version=version)
    wire = codec.encode(connect) + b"".join(codec.encode(p, version) for p in expected)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=10)))
    chunks = [wire[a:b] for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True)]
    decoder = codec.Decoder()
    # Later CONNECTs switch the version again; they all carry the same one here.
    assert feed(decoder, chunks) == [connect, *expected]
    assert decoder.protocol_version == version


# --- 5. fuzzing -------------------------------------------------------------------------

# Mostly the default limit, so that most inputs get past the fixed header.
FUZZ_SIZES = st.one_of(st.just(MAX), st.just(MAX), st.sampled_from([2, 3, 5, 16, 64, 1000]))


def outcome(
    m: ModuleType, version: int, max_packet_size: int, data: bytes, group: bool = False
) -> list[Any]:
    """Decodes ``data`` as a connection would, returning every step for comparison."""
    decoder = m.Decoder(version, max_packet_size, group_publishes=group)
    steps: list[Any] = []
    rest = data
    while True:
        before = decoder.protocol_version
        try:
            packets, consumed = decoder.decode(rest)
        except MqttError as exc:
            assert exc.reason_code in DECODER_CODES, exc
            assert 0 <= exc.offset <= len(rest), exc
            steps.append(("error", exc.reason_code, exc.offset))
            return steps
        assert 0 <= consumed <= len(rest)
        assert bool(packets) == bool(consumed)
        steps.append((repr(packets), consumed, decoder.protocol_version))
        check_reencodes(m, before, packets)
        if not consumed:
            return steps
        rest = rest[consumed:]


ACK_CLASSES = {4: "Puback", 5: "Pubrec", 6: "Pubrel", 7: "Pubcomp"}


def check_reencodes(m: ModuleType, version: int, packets: list[Any]) -> None:
    """Whatever the decoder accepted, the encoder writes and the decoder reads back."""
    for packet in packets:
        if isinstance(packet, m.PublishRun):
            expanded = packet.publishes()
            assert len(expanded) == packet.count
            assert all(
                p.qos == packet.qos and not p.retain and p.properties is None for p in expanded
            )
            assert {p.topic for p in expanded} == {packet.topic}
            assert b"".join(m.encode(p, version) for p in expanded) == packet.data
            continue
        if isinstance(packet, m.AckRun):
            ack_class = ACK_CLASSES[packet.ack_type]
            assert packet.packet_ids
            acks = b"".join(m.encode(getattr(m, ack_class)(i), version) for i in packet.packet_ids)
            assert m.Decoder(version).decode(acks)[0] == [
                getattr(m, ack_class)(i) for i in packet.packet_ids
            ]
            continue
        if isinstance(packet, m.Connect):
            version = packet.protocol_version
            again = m.Decoder(0).decode(m.encode(packet))
        else:
            again = m.Decoder(version).decode(m.encode(packet, version))
        assert again[0] == [packet]


def compare_twins(version: int, max_packet_size: int, data: bytes, group: bool = False) -> None:
    results = [outcome(m, version, max_packet_size, data, group) for m in AVAILABLE]
    assert all(r == results[0] for r in results[1:]), results


HEADERS = [(t << 4) | spec.FIXED_FLAGS[t] for t in spec.PACKET_NAMES] + [0x32, 0x35, 0x3B, 0x3D]


@st.composite
def framed(draw: st.DrawFn) -> bytes:
    """A fixed header that fits its random body, so the body decoders get exercised."""
    first = draw(st.sampled_from(HEADERS) | st.integers(0, 255))
    body = draw(st.binary(max_size=48))
    return bytes([first]) + varint(len(body)) + body


fuzz_bytes = st.one_of(
    st.binary(max_size=64),
    st.lists(st.one_of(framed(), st.binary(max_size=6)), max_size=5).map(b"".join),
)


@FUZZ
@given(
    version=st.sampled_from([0, 3, 4, 5]),
    max_packet_size=FUZZ_SIZES,
    data=fuzz_bytes,
    group=st.booleans(),
)
def test_fuzz_arbitrary_bytes(version: int, max_packet_size: int, data: bytes, group: bool) -> None:
    compare_twins(version, max_packet_size, data, group)


@st.composite
def mutated_streams(draw: st.DrawFn) -> tuple[int, bytes]:
    version, described = draw(VERSIONED_STREAMS)
    wire = bytearray(b"".join(py_codec.encode(build(py_codec, p), version) for p in described))
    decoder_version = draw(st.sampled_from([0, version]))
    if decoder_version == 0:
        wire[:0] = py_codec.encode(py_codec.Connect("m", protocol_version=version))
    for _ in range(draw(st.integers(1, 3))):
        mutation = draw(st.sampled_from(["flip", "set", "truncate", "insert", "delete"]))
        at = draw(st.integers(0, max(len(wire) - 1, 0)))
        if mutation == "flip" and wire:
            wire[at] ^= 1 << draw(st.integers(0, 7))
        elif mutation == "set" and wire:
            wire[at] = draw(st.sampled_from([0x00, 0x7F, 0x80, 0xFF, 0x2B, 0x23]))
        elif mutation == "truncate":
            del wire[at:]
        elif mutation == "insert":
            wire[at:at] = draw(st.binary(min_size=1, max_size=4))
        elif mutation == "delete":
            del wire[at : at + draw(st.integers(1, 4))]
    return decoder_version, bytes(wire)


@FUZZ
@given(case=mutated_streams(), max_packet_size=FUZZ_SIZES, group=st.booleans())
def test_fuzz_mutated_packets(case: tuple[int, bytes], max_packet_size: int, group: bool) -> None:
    version, data = case
    compare_twins(version, max_packet_size, data, group)


def test_fuzz_every_single_byte_change_of_the_streams() -> None:
    # Exhaustive over one-byte edits of the v5 and server streams: each byte set to a few
    # telling values, and each cut.
    for version, (wire, _) in (STREAMS["v5"], STREAMS["server"]):
        for at in range(len(wire)):
            for value in (0x00, 0x01, 0x7F, 0x80, 0xFF, wire[at] ^ 0x01):
                data = wire[:at] + bytes([value]) + wire[at + 1 :]
                compare_twins(version, MAX, data)
            compare_twins(version, MAX, wire[:at])


# --- 6. API edges -----------------------------------------------------------------------


@pytest.mark.parametrize("version", [-1, 1, 2, 6, 255])
def test_decoder_rejects_bad_protocol_version(codec: ModuleType, version: int) -> None:
    with pytest.raises(ValueError, match="protocol_version"):
        codec.Decoder(version)


@pytest.mark.parametrize("size", [-1, 0, 1, MAX + 1])
def test_decoder_rejects_bad_max_packet_size(codec: ModuleType, size: int) -> None:
    with pytest.raises(ValueError, match="max_packet_size"):
        codec.Decoder(4, size)


def test_decoder_defaults_and_bounds(codec: ModuleType) -> None:
    decoder = codec.Decoder()
    assert (decoder.protocol_version, decoder.max_packet_size) == (0, MAX)
    for version in (0, 3, 4, 5):
        assert codec.Decoder(version, 2).protocol_version == version
    assert codec.Decoder(protocol_version=5, max_packet_size=MAX).max_packet_size == MAX


NOT_PACKETS: list[tuple[str, Callable[[ModuleType], Any]]] = [
    ("object", lambda m: object()),
    ("bytes", lambda m: b"\xc0\x00"),
    ("int", lambda m: 12),
    ("base-packet", lambda m: m.Packet()),
    ("will", lambda m: m.Will("t")),
    ("subscription", lambda m: m.Subscription("a")),
    ("none", lambda m: None),
]


@pytest.mark.parametrize(("name", "make"), NOT_PACKETS, ids=[n for n, _ in NOT_PACKETS])
def test_encode_rejects_non_packets(
    request: pytest.FixtureRequest, codec: ModuleType, name: str, make: Callable[[ModuleType], Any]
) -> None:
    with pytest.raises(TypeError):
        codec.encode(make(codec))


def test_mqtt_error_carries_code_and_offset(codec: ModuleType) -> None:
    with pytest.raises(MqttError) as info:
        codec.Decoder(5).decode(h("40 03 00 01 01"))
    error = info.value
    assert (error.reason_code, error.offset) == (MALFORMED, 4)
    assert "0x81" in str(error)
    assert "byte 4" in str(error)
    assert error.message in str(error)
    again = pickle.loads(pickle.dumps(error))
    assert (again.reason_code, again.message, again.offset) == (0x81, error.message, 4)
    without_offset = str(MqttError(0x82, "no offset"))
    assert "0x82" in without_offset and "byte" not in without_offset


def test_encode_rejects_oversized_strings(codec: ModuleType) -> None:
    with pytest.raises(ValueError):
        codec.encode(codec.Publish("t" * 65536))
    with pytest.raises(ValueError):
        codec.encode(codec.Connect("a", password=bytes(65536), username="u"))
    with pytest.raises(ValueError):
        codec.encode(codec.Puback(1, 0x80, {"reason_string": "é" * 40000}), 5)
    assert len(codec.encode(codec.Publish("t" * 65535))) == 65541


def test_will_topic_wildcard(codec: ModuleType) -> None:
    # The offset is checked by test_will_topic_wildcard_offset_is_the_will_topic.
    wire = h(f"10 11 {MQTT_4} 06 00 3C 00 00 00 01 2B 00 00")
    assert decode_error(codec, 0, wire)[0] == TOPIC_NAME_INVALID


# --- 7. regressions: codec bugs these tests found, now fixed ---------------------------


def test_subscribe_rejects_a_repeated_subscription_identifier(codec: ModuleType) -> None:
    wire = h("82 0B 00 01 04 0B 01 0B 02 00 01 61 00")
    assert decode_error(codec, 5, wire) == (PROTOCOL_ERROR, 7)


def test_will_topic_wildcard_offset_is_the_will_topic(codec: ModuleType) -> None:
    wire = h(f"10 14 {MQTT_4} 06 00 3C 00 01 63 00 03 61 2F 23 00 00")
    assert decode_error(codec, 0, wire) == (TOPIC_NAME_INVALID, 15)


def test_connect_rejects_an_empty_will_topic(codec: ModuleType) -> None:
    wire = h(f"10 11 {MQTT_4} 06 00 3C 00 01 63 00 00 00 00")
    code, offset = decode_error(codec, 0, wire)
    assert code in (PROTOCOL_ERROR, TOPIC_NAME_INVALID)
    assert offset == 15


def test_encode_rejects_a_negative_subscription_identifier(
    request: pytest.FixtureRequest, codec: ModuleType
) -> None:
    packet = codec.Publish("t", properties={"subscription_identifier": [-1]})
    with cpu_time_limit(1.0), pytest.raises(ValueError):
        codec.encode(packet, 5)


def test_encode_rejects_a_subscription_identifier_above_268435455(
    request: pytest.FixtureRequest, codec: ModuleType
) -> None:
    packet = codec.Publish("t", properties={"subscription_identifier": [268_435_456]})
    with pytest.raises(ValueError):
        codec.encode(packet, 5)


OUT_OF_RANGE: list[tuple[str, int, Callable[[ModuleType], Any]]] = [
    ("puback-packet-id-65536", 4, lambda m: m.Puback(65536)),
    ("puback-packet-id-negative", 4, lambda m: m.Puback(-1)),
    ("publish-packet-id-70000", 4, lambda m: m.Publish("t", qos=1, packet_id=70000)),
    ("connect-keep-alive-65536", 4, lambda m: m.Connect("a", keep_alive=65536)),
    ("connack-reason-256", 5, lambda m: m.Connack(False, 256)),
    ("suback-code-256", 4, lambda m: m.Suback(1, [256])),
    ("disconnect-reason-256", 5, lambda m: m.Disconnect(256)),
    ("retain-handling-16", 5, lambda m: m.Subscribe(1, [m.Subscription("a", retain_handling=16)])),
    (
        "byte-property-256",
        5,
        lambda m: m.Publish("t", properties={"payload_format_indicator": 256}),
    ),
    ("two-byte-property-65536", 5, lambda m: m.Publish("t", properties={"topic_alias": 65536})),
    (
        "four-byte-property-2**32",
        5,
        lambda m: m.Publish("t", properties={"message_expiry_interval": 2**32}),
    ),
]


@pytest.mark.parametrize(
    ("name", "version", "make"), OUT_OF_RANGE, ids=[n for n, _, _ in OUT_OF_RANGE]
)
def test_encode_rejects_values_that_do_not_fit_their_field(
    request: pytest.FixtureRequest,
    codec: ModuleType,
    name: str,
    version: int,
    make: Callable[[ModuleType], Any],
) -> None:
    with pytest.raises((ValueError, OverflowError, struct.error)):
        codec.encode(make(codec), version)


def test_decode_accepts_a_strided_memoryview(
    request: pytest.FixtureRequest, codec: ModuleType
) -> None:
    wire, expected = stream(4)
    spaced = bytes(b for pair in zip(wire, b"\xee" * len(wire), strict=True) for b in pair)
    assert codec.Decoder(4).decode(memoryview(spaced)[::2]) == (expected(codec), len(wire))


@pytest.mark.parametrize("data", [2, [0xC0, 0x00]], ids=["int", "list"])
def test_decode_rejects_non_buffers(
    request: pytest.FixtureRequest, codec: ModuleType, data: Any
) -> None:
    with pytest.raises(TypeError):
        codec.Decoder(4).decode(data)


@pytest.mark.parametrize("payload", [3, [1, 2]], ids=["int", "list"])
def test_encode_rejects_non_buffer_payloads(
    request: pytest.FixtureRequest, codec: ModuleType, payload: Any
) -> None:
    with pytest.raises(TypeError):
        codec.encode(codec.Publish("t", payload))


@pytest.mark.parametrize(
    "make",
    [
        lambda m: m.Publish("t", qos=4),
        lambda m: m.Publish("t", qos=-1),
        lambda m: m.Connect("c", will=m.Will("w", b"", qos=3)),
        lambda m: m.Subscribe(1, [m.Subscription("a", qos=3)]),
        lambda m: m.Subscribe(1, [m.Subscription("a", retain_handling=3)]),
    ],
    ids=[
        "publish-qos-4",
        "publish-qos-negative",
        "will-qos-3",
        "subscription-qos-3",
        "retain-handling-3",
    ],
)
def test_encode_rejects_invalid_enumerations(
    codec: ModuleType, make: Callable[[ModuleType], Any]
) -> None:
    with pytest.raises(ValueError):
        codec.encode(make(codec), 5)


# --- 8. publish runs: the broker's forwarding lane --------------------------------------


def _pub(m: ModuleType, version: int, topic: str, payload: bytes = b"x", **kw: Any) -> bytes:
    return m.encode_publish(topic, payload, protocol_version=version, **kw)


@pytest.mark.parametrize("version", [3, 4, 5])
def test_runs_group_consecutive_plain_publishes_on_one_topic(
    codec: ModuleType, version: int
) -> None:
    wire = (
        _pub(codec, version, "a/b", b"1")
        + _pub(codec, version, "a/b", b"22")
        + _pub(codec, version, "a/b", b"")
        + _pub(codec, version, "c", b"3")
    )
    packets, consumed = codec.Decoder(version, group_publishes=True).decode(wire)
    assert consumed == len(wire)
    first_len = len(wire) - len(_pub(codec, version, "c", b"3"))
    assert packets == [
        codec.PublishRun(
            "a/b", wire[:first_len], 3, len(_pub(codec, version, "a/b", b"22")), version
        ),
        codec.PublishRun("c", wire[first_len:], 1, len(wire) - first_len, version),
    ]
    assert [p.payload for p in packets[0].publishes()] == [b"1", b"22", b""]


@pytest.mark.parametrize(
    ("other", "kind"),
    [
        (lambda m, v: _pub(m, v, "a", qos=1, packet_id=7), "PublishRun"),  # a QoS 1 run
        (lambda m, v: _pub(m, v, "a", retain=True), "Publish"),
        (lambda m, v: m.encode(m.Pingreq(), v), "Pingreq"),
        (lambda m, v: m.encode(m.Puback(3), v), "AckRun"),
    ],
    ids=["qos1", "retain", "pingreq", "puback"],
)
def test_runs_end_at_any_other_packet(codec: ModuleType, other: Any, kind: str) -> None:
    plain = _pub(codec, 4, "a")
    wire = plain + plain + other(codec, 4) + plain
    packets, _ = codec.Decoder(4, group_publishes=True).decode(wire)
    assert [type(p).__name__ for p in packets] == ["PublishRun", kind, "PublishRun"]
    assert [p.count for p in (packets[0], packets[2])] == [2, 1]
    assert [p.qos for p in (packets[0], packets[2])] == [0, 0]


@pytest.mark.parametrize("version", [3, 4, 5])
def test_qos1_runs_keep_identifiers_and_restamp_them(codec: ModuleType, version: int) -> None:
    payloads = [b"", b"x", b"y" * 122, b"z" * 124, b"v" * 20000]
    wire = b"".join(
        _pub(codec, version, "t/1", p, qos=1, packet_id=i + 10) for i, p in enumerate(payloads)
    )
    [run], consumed = codec.Decoder(version, group_publishes=True).decode(wire)
    assert consumed == len(wire) and (run.qos, run.count) == (1, len(payloads))
    assert run.payloads() == payloads
    assert run.acks() == b"".join(bytes((0x40, 2, 0, i + 10)) for i in range(len(payloads)))
    for target in (3, 4, 5):
        ids = [65535, 1, 2, 300, 7]
        assert run.wire_ids(target, 1, ids) == b"".join(
            _pub(codec, target, "t/1", p, qos=1, packet_id=i)
            for p, i in zip(payloads, ids, strict=True)
        )
    with pytest.raises(ValueError, match="packet identifiers for a run of 5"):
        run.wire_ids(version, 1, [1])
    with pytest.raises(ValueError, match="not in 1..65535"):
        run.wire_ids(version, 1, [1, 2, 3, 4, 0])
    with pytest.raises(ValueError, match="a QoS 1 run cannot be sent at QoS 2"):
        run.wire_ids(version, 2, [1, 2, 3, 4, 5])
    with pytest.raises(ValueError, match="receiver's packet identifiers"):
        run.wire(version)


@pytest.mark.parametrize("version", [3, 4, 5])
def test_qos2_runs_are_acknowledged_with_pubrecs_and_sent_at_qos_1_or_2(
    codec: ModuleType, version: int
) -> None:
    payloads = [b"a", b"bb" * 70, b""]
    wire = b"".join(
        _pub(codec, version, "q2", p, qos=2, packet_id=i + 1) for i, p in enumerate(payloads)
    )
    [run], _ = codec.Decoder(version, group_publishes=True).decode(wire)
    assert (run.qos, run.count, run.payloads()) == (2, 3, payloads)
    assert run.packet_ids() == [1, 2, 3]
    assert run.acks() == b"".join(bytes((0x50, 2, 0, i + 1)) for i in range(3))
    for qos in (1, 2):
        assert run.wire_ids(5, qos, [9, 8, 7]) == b"".join(
            _pub(codec, 5, "q2", p, qos=qos, packet_id=i)
            for p, i in zip(payloads, [9, 8, 7], strict=True)
        )


def test_qos0_runs_have_no_acks(codec: ModuleType) -> None:
    [run], _ = codec.Decoder(4, group_publishes=True).decode(_pub(codec, 4, "a"))
    with pytest.raises(ValueError, match="a QoS 0 run is not acknowledged"):
        run.acks()
    with pytest.raises(ValueError, match="a QoS 0 run has no packet identifiers"):
        run.packet_ids()
    with pytest.raises(ValueError, match="a QoS 0 run cannot be sent at QoS 1"):
        run.wire_ids(4, 1, [1])


@pytest.mark.parametrize("version", [3, 4, 5])
def test_acknowledgements_group_by_type(codec: ModuleType, version: int) -> None:
    acks = [codec.Puback(1), codec.Puback(2), codec.Pubrec(3), codec.Pubrel(4), codec.Pubrel(5)]
    with_reason = codec.Puback(6, 0x10) if version == 5 else codec.Pingreq()
    wire = b"".join(codec.encode(a, version) for a in [*acks, with_reason, codec.Pubcomp(7)])
    packets, consumed = codec.Decoder(version, group_publishes=True).decode(wire)
    assert consumed == len(wire)
    assert packets == [
        codec.AckRun(4, [1, 2]),
        codec.AckRun(5, [3]),
        codec.AckRun(6, [4, 5]),
        with_reason,
        codec.AckRun(7, [7]),
    ]


def test_an_acknowledgement_with_identifier_0_is_still_an_error(codec: ModuleType) -> None:
    decoder = codec.Decoder(4, group_publishes=True)
    packets, consumed = decoder.decode(b"\x40\x02\x00\x01\x40\x02\x00\x00")
    assert packets == [codec.AckRun(4, [1])] and consumed == 4
    with pytest.raises(MqttError) as info:
        decoder.decode(b"\x40\x02\x00\x00")
    assert info.value.reason_code == PROTOCOL_ERROR


def test_v5_publishes_with_properties_are_not_grouped(codec: ModuleType) -> None:
    with_props = _pub(codec, 5, "a", properties={"content_type": "text/plain"})
    plain = _pub(codec, 5, "a")
    packets, _ = codec.Decoder(5, group_publishes=True).decode(plain + with_props + plain)
    assert [type(p).__name__ for p in packets] == ["PublishRun", "Publish", "PublishRun"]
    assert packets[1].properties == {"content_type": "text/plain"}


def test_runs_are_off_unless_asked(codec: ModuleType) -> None:
    plain = _pub(codec, 4, "a")
    packets, _ = codec.Decoder(4).decode(plain + plain)
    assert [type(p).__name__ for p in packets] == ["Publish", "Publish"]


def test_a_run_before_a_malformed_packet_comes_first_then_the_error(codec: ModuleType) -> None:
    plain = _pub(codec, 4, "a")
    bad = b"\x30\x03\x00\x05a"  # topic length past the end of the packet
    decoder = codec.Decoder(4, group_publishes=True)
    packets, consumed = decoder.decode(plain + plain + bad)
    assert [p.count for p in packets] == [2] and consumed == 2 * len(plain)
    with pytest.raises(MqttError) as info:
        decoder.decode(bad)
    assert info.value.reason_code == MALFORMED


def test_a_run_stops_at_a_partial_packet(codec: ModuleType) -> None:
    plain = _pub(codec, 4, "a", b"p" * 200)  # two-byte remaining length
    decoder = codec.Decoder(4, group_publishes=True)
    for cut in (1, 2, len(plain) - 1):
        packets, consumed = decoder.decode(plain + plain[:cut])
        assert consumed == len(plain) and packets[0].count == 1


def test_the_first_publish_of_a_run_is_validated(codec: ModuleType) -> None:
    with pytest.raises(MqttError) as info:
        codec.Decoder(4, group_publishes=True).decode(_pub(codec, 4, "a/#"))
    assert info.value.reason_code == TOPIC_NAME_INVALID


@pytest.mark.parametrize(("source", "target"), [(4, 5), (5, 4), (3, 5), (5, 3), (3, 4), (5, 5)])
def test_run_wire_form_for_each_protocol_version(
    codec: ModuleType, source: int, target: int
) -> None:
    # 123 and 124 bytes straddle the one/two-byte remaining length boundary.
    payloads = [b"", b"x", b"y" * 122, b"z" * 123, b"w" * 124, b"v" * 20000]
    wire = b"".join(_pub(codec, source, "t/1", p) for p in payloads)
    [run], _ = codec.Decoder(source, group_publishes=True).decode(wire)
    assert run.wire(target) == b"".join(_pub(codec, target, "t/1", p) for p in payloads)


publish_specs = st.lists(
    st.one_of(
        st.tuples(
            st.sampled_from(["a", "a/b", "c", "a"]),
            st.binary(max_size=300),
            st.sampled_from([0, 0, 0, 1, 2]),
            st.booleans(),
            st.sampled_from([None, None, None, {"content_type": "x"}]),
            st.integers(1, 65535),
        ),
        # An acknowledgement: (type, packet identifier, reason code).
        st.tuples(
            st.sampled_from([4, 4, 5, 6, 7]), st.integers(1, 65535), st.sampled_from([0, 0, 0x10])
        ),
    ),
    max_size=20,
)


def _spec_wire(codec: ModuleType, version: int, spec: tuple[Any, ...]) -> bytes:
    if len(spec) == 3:
        ack_type, packet_id, code = spec
        ack_class = getattr(codec, ACK_CLASSES[ack_type])
        return codec.encode(ack_class(packet_id, code if ack_type == 4 else 0), version)
    topic, payload, qos, retain, props, packet_id = spec
    return _pub(
        codec,
        version,
        topic,
        payload,
        qos=qos,
        packet_id=packet_id if qos else 0,
        retain=retain and qos == 0,
        properties=props,
    )


@settings(ROUNDTRIP, max_examples=300)
@given(version=st.sampled_from([3, 4, 5]), specs=publish_specs)
def test_runs_expand_to_what_the_plain_decoder_returns(
    codec: ModuleType, version: int, specs: list[Any]
) -> None:
    wire = b"".join(_spec_wire(codec, version, spec) for spec in specs)
    grouped, consumed = codec.Decoder(version, group_publishes=True).decode(wire)
    plain, plain_consumed = codec.Decoder(version).decode(wire)
    assert consumed == plain_consumed == len(wire)
    expanded: list[Any] = []
    other = 4 if version == 5 else 5
    for packet in grouped:
        if isinstance(packet, codec.PublishRun):
            publishes = packet.publishes()
            assert packet.largest == max(len(codec.encode(p, version)) for p in publishes)
            assert packet.payloads() == [p.payload for p in publishes]
            expanded += publishes
            if packet.qos:
                assert packet.packet_ids() == [p.packet_id for p in publishes]
                ids = [p.packet_id % 65535 + 1 for p in publishes]
                assert packet.wire_ids(other, packet.qos, ids) == b"".join(
                    codec.encode(codec.Publish(p.topic, p.payload, packet.qos, packet_id=i), other)
                    for p, i in zip(publishes, ids, strict=True)
                )
                ack_class = codec.Puback if packet.qos == 1 else codec.Pubrec
                assert packet.acks() == b"".join(
                    codec.encode(ack_class(p.packet_id), version) for p in publishes
                )
            else:
                assert packet.wire(other) == b"".join(codec.encode(p, other) for p in publishes)
        elif isinstance(packet, codec.AckRun):
            ack_class = getattr(codec, ACK_CLASSES[packet.ack_type])
            expanded += [ack_class(i) for i in packet.packet_ids]
        else:
            expanded.append(packet)
    assert expanded == plain
    # Runs are maximal: neighbouring runs never share a topic and QoS, or an ack type.
    for before, after in zip(grouped, grouped[1:], strict=False):
        if isinstance(before, codec.PublishRun) and isinstance(after, codec.PublishRun):
            assert (before.topic, before.qos) != (after.topic, after.qos)
        if isinstance(before, codec.AckRun) and isinstance(after, codec.AckRun):
            assert before.ack_type != after.ack_type


# --- 9. encode_publish_split: one encoding for every QoS 1/2 delivery -------------------


@settings(ROUNDTRIP, max_examples=200)
@given(
    version=st.sampled_from([3, 4, 5]),
    topic=st.text(min_size=1, max_size=40).filter(lambda t: "\x00" not in t),
    payload=st.binary(max_size=300),
    qos=st.sampled_from([1, 2]),
    retain=st.booleans(),
    packet_id=st.integers(1, 65535),
    props=st.sampled_from([None, {"content_type": "a/b"}, {"user_property": [("k", "v")]}]),
)
def test_split_publish_is_the_packet_around_its_identifier(
    codec: ModuleType,
    version: int,
    topic: str,
    payload: bytes,
    qos: int,
    retain: bool,
    packet_id: int,
    props: Any,
) -> None:
    props = props if version == 5 else None
    head, tail = codec.encode_publish_split(topic, payload, qos, retain, props, version)
    whole = codec.encode_publish(topic, payload, qos, retain, False, packet_id, props, version)
    assert head + packet_id.to_bytes(2, "big") + tail == whole


def test_split_publish_refuses_qos0(codec: ModuleType) -> None:
    with pytest.raises(ValueError):
        codec.encode_publish_split("t", b"", 0)
