"""MQTT 3.1, 3.1.1 and 5.0 packet codec: the readable pure-Python reference.

Sans-IO: bytes in, packet objects out, and packet objects in, bytes out. ``Decoder.decode``
takes a buffer and returns every complete packet in it with the number of bytes consumed;
a partial packet is left for the next call. Malformed input raises ``MqttError`` with the
MQTT 5 reason code and the byte offset. ``_mqtt_codec.pyx`` is the compiled twin with the
same names and behaviour; the tests run both. Connection state (what is allowed when,
topic aliases, flow control) lives in the broker, not here.
"""

from __future__ import annotations

import struct
from typing import Any, ClassVar

from robustmq._core.mqtt_spec import (
    ACK_RUN,
    AUTH,
    BINARY_DATA,
    BOOLEAN_PROPERTIES,
    BYTE,
    CONNACK,
    CONNECT,
    DISCONNECT,
    FIXED_FLAGS,
    FOUR_BYTE_INT,
    MAX_PACKET_SIZE,
    MAX_REMAINING_LENGTH,
    MQTT_3_1,
    MQTT_3_1_1,
    MQTT_5,
    NONZERO_PROPERTIES,
    PACKET_NAMES,
    PINGREQ,
    PINGRESP,
    PROPERTIES,
    PROPERTY_IDS,
    PROTOCOL_NAMES,
    PUBACK,
    PUBCOMP,
    PUBLISH,
    PUBLISH_RUN,
    PUBREC,
    PUBREL,
    REASON_CODES,
    REPEATABLE,
    SUBACK,
    SUBSCRIBE,
    TWO_BYTE_INT,
    UNSUBACK,
    UNSUBSCRIBE,
    UTF8_STRING,
    V3_CONNACK_CODES,
    V3_SUBACK_CODES,
    VARIABLE_BYTE_INT,
    WILL,
)
from robustmq.errors import MqttError

MALFORMED = 0x81
PROTOCOL_ERROR = 0x82
UNSUPPORTED_VERSION = 0x84
TOPIC_NAME_INVALID = 0x90
TOPIC_ALIAS_INVALID = 0x94
PACKET_TOO_LARGE = 0x95

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")


# ---------------------------------------------------------------------------- packets


class Packet:
    """Base of all control packets: field-wise equality and a readable repr."""

    __slots__ = ()
    _FIELDS: ClassVar[tuple[str, ...]] = ()
    packet_type: ClassVar[int] = 0

    def _fields(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self._FIELDS)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, Packet)
        return self._fields() == other._fields()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        args = ", ".join(f"{n}={getattr(self, n)!r}" for n in self._FIELDS)
        return f"{type(self).__name__}({args})"


class Will(Packet):
    """The Will Message carried in CONNECT (§3.1.2.5, §3.1.3.2)."""

    __slots__ = ("topic", "payload", "qos", "retain", "properties")
    _FIELDS = __slots__

    def __init__(
        self,
        topic: str,
        payload: bytes = b"",
        qos: int = 0,
        retain: bool = False,
        properties: dict[str, Any] | None = None,
    ) -> None:
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
        self.properties = properties


class Connect(Packet):
    __slots__ = (
        "protocol_version",
        "client_id",
        "clean_start",
        "keep_alive",
        "username",
        "password",
        "will",
        "properties",
    )
    _FIELDS = __slots__
    packet_type = CONNECT

    def __init__(
        self,
        client_id: str = "",
        *,
        protocol_version: int = MQTT_3_1_1,
        clean_start: bool = True,
        keep_alive: int = 60,
        username: str | None = None,
        password: bytes | None = None,
        will: Will | None = None,
        properties: dict[str, Any] | None = None,
    ) -> None:
        self.protocol_version = protocol_version
        self.client_id = client_id
        self.clean_start = clean_start
        self.keep_alive = keep_alive
        self.username = username
        self.password = password
        self.will = will
        self.properties = properties


class Connack(Packet):
    __slots__ = ("session_present", "reason_code", "properties")
    _FIELDS = __slots__
    packet_type = CONNACK

    def __init__(
        self,
        session_present: bool = False,
        reason_code: int = 0,
        properties: dict[str, Any] | None = None,
    ) -> None:
        self.session_present = session_present
        self.reason_code = reason_code
        self.properties = properties


class Publish(Packet):
    __slots__ = ("topic", "payload", "qos", "retain", "dup", "packet_id", "properties")
    _FIELDS = __slots__
    packet_type = PUBLISH

    def __init__(
        self,
        topic: str,
        payload: bytes = b"",
        qos: int = 0,
        retain: bool = False,
        dup: bool = False,
        packet_id: int = 0,
        properties: dict[str, Any] | None = None,
    ) -> None:
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
        self.dup = dup
        self.packet_id = packet_id
        self.properties = properties


class PublishRun(Packet):
    """Consecutive PUBLISHes of one read with the same QoS, no DUP or RETAIN flag,
    no properties and the same topic, kept as their wire bytes (``data``) so that a broker
    can route them once and forward them without decoding or encoding each one.
    ``largest`` is the size of the largest packet, for Maximum Packet Size checks."""

    __slots__ = ("topic", "data", "count", "largest", "protocol_version", "qos")
    _FIELDS = __slots__
    packet_type = PUBLISH_RUN

    def __init__(
        self,
        topic: str,
        data: bytes,
        count: int,
        largest: int,
        protocol_version: int,
        qos: int = 0,
    ) -> None:
        self.topic = topic
        self.data = data
        self.count = count
        self.largest = largest
        self.protocol_version = protocol_version
        self.qos = qos

    def publishes(self) -> list[Publish]:
        """The run as Publish packets."""
        return Decoder(self.protocol_version).decode(self.data)[0]  # type: ignore[return-value]

    def wire(self, protocol_version: int) -> bytes:
        """The run's packets as a client of ``protocol_version`` receives them: 3.1 and
        3.1.1 share one form, 5.0 adds an empty property block after the topic. A QoS 0
        run only: a QoS 1/2 run is sent with the receiver's packet identifiers
        (``wire_ids``)."""
        if self.qos:
            raise ValueError("a QoS 1/2 run is sent with the receiver's packet identifiers")
        if (protocol_version == MQTT_5) == (self.protocol_version == MQTT_5):
            return self.data
        return b"".join(
            encode_publish(p.topic, p.payload, protocol_version=protocol_version)
            for p in self.publishes()
        )

    def payloads(self) -> list[bytes]:
        """The payload of each packet, in order."""
        return [p.payload for p in self.publishes()]

    def packet_ids(self) -> list[int]:
        """A QoS 1/2 run's packet identifiers, in order."""
        if not self.qos:
            raise ValueError("a QoS 0 run has no packet identifiers")
        return [p.packet_id for p in self.publishes()]

    def acks(self) -> bytes:
        """A QoS 1 run's PUBACKs or a QoS 2 run's PUBRECs, in order: the success form, the
        same in every version."""
        if not self.qos:
            raise ValueError("a QoS 0 run is not acknowledged")
        first = (PUBACK if self.qos == 1 else PUBREC) << 4
        return b"".join(bytes((first, 2)) + _U16.pack(p.packet_id) for p in self.publishes())

    def wire_ids(self, protocol_version: int, qos: int, packet_ids: Any) -> bytes:
        """A QoS 1/2 run's packets as a client of ``protocol_version`` receives them at
        ``qos`` (1 or 2, at most the run's), each with its identifier from ``packet_ids``
        (one per packet, in order) in place of the publisher's."""
        if not 0 < qos <= self.qos:
            raise ValueError(f"a QoS {self.qos} run cannot be sent at QoS {qos}")
        ids = list(packet_ids)
        if len(ids) != self.count:
            raise ValueError(f"{len(ids)} packet identifiers for a run of {self.count}")
        out = []
        for p, packet_id in zip(self.publishes(), ids, strict=True):
            if not 0 < packet_id <= 0xFFFF:
                raise ValueError(f"packet identifier {packet_id} is not in 1..65535")
            out.append(
                encode_publish(
                    p.topic, p.payload, qos, packet_id=packet_id, protocol_version=protocol_version
                )
            )
        return b"".join(out)


class AckRun(Packet):
    """Consecutive acknowledgements of one type (PUBACK, PUBREC, PUBREL or PUBCOMP) of one
    read in their two-byte success form, as the packet identifiers they carry."""

    __slots__ = ("ack_type", "packet_ids")
    _FIELDS = __slots__
    packet_type = ACK_RUN

    def __init__(self, ack_type: int, packet_ids: list[int]) -> None:
        self.ack_type = ack_type
        self.packet_ids = packet_ids


class _Ack(Packet):
    """PUBACK, PUBREC, PUBREL and PUBCOMP share one shape (§3.4-§3.7)."""

    __slots__ = ("packet_id", "reason_code", "properties")
    _FIELDS = __slots__

    def __init__(
        self, packet_id: int, reason_code: int = 0, properties: dict[str, Any] | None = None
    ) -> None:
        self.packet_id = packet_id
        self.reason_code = reason_code
        self.properties = properties


class Puback(_Ack):
    __slots__ = ()
    packet_type = PUBACK


class Pubrec(_Ack):
    __slots__ = ()
    packet_type = PUBREC


class Pubrel(_Ack):
    __slots__ = ()
    packet_type = PUBREL


class Pubcomp(_Ack):
    __slots__ = ()
    packet_type = PUBCOMP


class Subscription(Packet):
    """One topic filter of a SUBSCRIBE with its options (§3.8.3.1)."""

    __slots__ = ("topic_filter", "qos", "no_local", "retain_as_published", "retain_handling")
    _FIELDS = __slots__

    def __init__(
        self,
        topic_filter: str,
        qos: int = 0,
        no_local: bool = False,
        retain_as_published: bool = False,
        retain_handling: int = 0,
    ) -> None:
        self.topic_filter = topic_filter
        self.qos = qos
        self.no_local = no_local
        self.retain_as_published = retain_as_published
        self.retain_handling = retain_handling


class Subscribe(Packet):
    __slots__ = ("packet_id", "subscriptions", "properties")
    _FIELDS = __slots__
    packet_type = SUBSCRIBE

    def __init__(
        self,
        packet_id: int,
        subscriptions: list[Subscription],
        properties: dict[str, Any] | None = None,
    ) -> None:
        self.packet_id = packet_id
        self.subscriptions = subscriptions
        self.properties = properties


class Suback(Packet):
    __slots__ = ("packet_id", "reason_codes", "properties")
    _FIELDS = __slots__
    packet_type = SUBACK

    def __init__(
        self, packet_id: int, reason_codes: list[int], properties: dict[str, Any] | None = None
    ) -> None:
        self.packet_id = packet_id
        self.reason_codes = reason_codes
        self.properties = properties


class Unsubscribe(Packet):
    __slots__ = ("packet_id", "topic_filters", "properties")
    _FIELDS = __slots__
    packet_type = UNSUBSCRIBE

    def __init__(
        self, packet_id: int, topic_filters: list[str], properties: dict[str, Any] | None = None
    ) -> None:
        self.packet_id = packet_id
        self.topic_filters = topic_filters
        self.properties = properties


class Unsuback(Packet):
    """UNSUBACK; ``reason_codes`` is empty for MQTT 3.1/3.1.1, which has none."""

    __slots__ = ("packet_id", "reason_codes", "properties")
    _FIELDS = __slots__
    packet_type = UNSUBACK

    def __init__(
        self,
        packet_id: int,
        reason_codes: list[int] | None = None,
        properties: dict[str, Any] | None = None,
    ) -> None:
        self.packet_id = packet_id
        self.reason_codes = reason_codes if reason_codes is not None else []
        self.properties = properties


class Pingreq(Packet):
    __slots__ = ()
    packet_type = PINGREQ


class Pingresp(Packet):
    __slots__ = ()
    packet_type = PINGRESP


class Disconnect(Packet):
    __slots__ = ("reason_code", "properties")
    _FIELDS = __slots__
    packet_type = DISCONNECT

    def __init__(self, reason_code: int = 0, properties: dict[str, Any] | None = None) -> None:
        self.reason_code = reason_code
        self.properties = properties


class Auth(Packet):
    __slots__ = ("reason_code", "properties")
    _FIELDS = __slots__
    packet_type = AUTH

    def __init__(self, reason_code: int = 0, properties: dict[str, Any] | None = None) -> None:
        self.reason_code = reason_code
        self.properties = properties


# ---------------------------------------------------------------------------- decoding


class _Reader:
    """A cursor over one packet's bytes; every read checks the packet's end."""

    __slots__ = ("data", "pos", "end")

    def __init__(self, data: bytes, pos: int, end: int) -> None:
        self.data = data
        self.pos = pos
        self.end = end

    def need(self, n: int, what: str) -> None:
        if self.pos + n > self.end:
            raise MqttError(MALFORMED, f"truncated {what}", self.pos)

    def u8(self, what: str) -> int:
        self.need(1, what)
        value = self.data[self.pos]
        self.pos += 1
        return value

    def u16(self, what: str) -> int:
        self.need(2, what)
        (value,) = _U16.unpack_from(self.data, self.pos)
        self.pos += 2
        return value

    def u32(self, what: str) -> int:
        self.need(4, what)
        (value,) = _U32.unpack_from(self.data, self.pos)
        self.pos += 4
        return value

    def varint(self, what: str) -> int:
        value, self.pos = _read_varint(self.data, self.pos, self.end, what)
        return value

    def binary(self, what: str) -> bytes:
        n = self.u16(what)
        self.need(n, what)
        value = self.data[self.pos : self.pos + n]
        self.pos += n
        return value

    def utf8(self, what: str) -> str:
        start = self.pos
        raw = self.binary(what)
        # §1.5.4: well-formed UTF-8, no surrogates, no U+0000.
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise MqttError(MALFORMED, f"{what} is not valid UTF-8", start) from None
        if "\x00" in text:
            raise MqttError(MALFORMED, f"{what} contains U+0000", start)
        return text

    def packet_id(self) -> int:
        at = self.pos
        value = self.u16("packet identifier")
        if value == 0:
            raise MqttError(PROTOCOL_ERROR, "packet identifier 0", at)
        return value

    def at_end(self) -> bool:
        return self.pos >= self.end

    def expect_end(self, what: str) -> None:
        if self.pos != self.end:
            raise MqttError(MALFORMED, f"unexpected bytes after {what}", self.pos)


def _read_varint(data: bytes, pos: int, end: int, what: str) -> tuple[int, int]:
    """A Variable Byte Integer (§1.5.5): at most four bytes."""
    value = 0
    shift = 0
    for i in range(4):
        if pos + i >= end:
            raise MqttError(MALFORMED, f"truncated {what}", pos + i)
        byte = data[pos + i]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos + i + 1
        shift += 7
    raise MqttError(MALFORMED, f"{what} longer than four bytes", pos + 3)


def _read_properties(r: _Reader, packet: int) -> dict[str, Any] | None:
    """The property block of a packet (§2.2.2); None when it is empty."""
    length = r.varint("property length")
    r.need(length, "properties")
    end = r.pos + length
    outer_end, r.end = r.end, end
    props: dict[str, Any] = {}
    try:
        while r.pos < end:
            at = r.pos
            pid = r.varint("property identifier")
            spec = PROPERTIES.get(pid)
            if spec is None:
                raise MqttError(MALFORMED, f"unknown property identifier {pid:#04x}", at)
            name, kind, packets = spec
            if packet not in packets:
                where = "Will" if packet == WILL else PACKET_NAMES[packet]
                raise MqttError(PROTOCOL_ERROR, f"property {name} is not allowed in {where}", at)
            value: Any
            if kind == BYTE:
                value = r.u8(name)
            elif kind == TWO_BYTE_INT:
                value = r.u16(name)
            elif kind == FOUR_BYTE_INT:
                value = r.u32(name)
            elif kind == VARIABLE_BYTE_INT:
                value = r.varint(name)
            elif kind == UTF8_STRING:
                value = r.utf8(name)
            elif kind == BINARY_DATA:
                value = r.binary(name)
            else:
                value = (r.utf8(name), r.utf8(name))
            if name in BOOLEAN_PROPERTIES and value > 1:
                raise MqttError(PROTOCOL_ERROR, f"{name} must be 0 or 1, got {value}", at)
            if name in NONZERO_PROPERTIES and value == 0:
                code = TOPIC_ALIAS_INVALID if name == "topic_alias" else PROTOCOL_ERROR
                raise MqttError(code, f"{name} must not be 0", at)
            once = packet == SUBSCRIBE and name == "subscription_identifier"
            if name in REPEATABLE and not (once and name in props):
                # §3.8.2.1.2: SUBSCRIBE carries at most one subscription identifier.
                props.setdefault(name, []).append(value)
            elif name in props:
                raise MqttError(PROTOCOL_ERROR, f"property {name} appears twice", at)
            else:
                props[name] = value
    finally:
        r.end = outer_end
    return props or None


def _decode_connect(r: _Reader) -> Connect:
    start = r.pos
    name = r.utf8("protocol name")
    level = r.u8("protocol level")
    if PROTOCOL_NAMES.get(level) != name:
        raise MqttError(UNSUPPORTED_VERSION, f"unsupported protocol {name!r} level {level}", start)
    at = r.pos
    flags = r.u8("connect flags")
    if flags & 0x01:
        raise MqttError(MALFORMED, "reserved connect flag is set", at)
    will_flag = bool(flags & 0x04)
    will_qos = (flags >> 3) & 0x03
    will_retain = bool(flags & 0x20)
    if will_qos == 3:
        raise MqttError(MALFORMED, "will QoS 3", at)
    if not will_flag and (will_qos or will_retain):
        raise MqttError(MALFORMED, "will QoS or retain set without a will", at)
    has_password = bool(flags & 0x40)
    has_username = bool(flags & 0x80)
    if level != MQTT_5 and has_password and not has_username:
        raise MqttError(MALFORMED, "password flag set without user name flag", at)
    keep_alive = r.u16("keep alive")
    properties = _read_properties(r, CONNECT) if level == MQTT_5 else None
    client_id = r.utf8("client identifier")
    will = None
    if will_flag:
        will_props = _read_properties(r, WILL) if level == MQTT_5 else None
        at = r.pos
        will_topic = r.utf8("will topic")
        if not will_topic:
            raise MqttError(TOPIC_NAME_INVALID, "will topic is empty", at)
        _check_topic_name(will_topic, at, "will topic")
        will = Will(will_topic, r.binary("will payload"), will_qos, will_retain, will_props)
    username = r.utf8("user name") if has_username else None
    password = r.binary("password") if has_password else None
    r.expect_end("CONNECT payload")
    return Connect(
        client_id,
        protocol_version=level,
        clean_start=bool(flags & 0x02),
        keep_alive=keep_alive,
        username=username,
        password=password,
        will=will,
        properties=properties,
    )


def _check_topic_name(topic: str, at: int, what: str = "topic name") -> None:
    if "+" in topic or "#" in topic:
        raise MqttError(TOPIC_NAME_INVALID, f"{what} {topic!r} contains a wildcard", at)


def _check_reason(code: int, packet: int, at: int) -> None:
    if code not in REASON_CODES[packet]:
        raise MqttError(
            MALFORMED, f"reason code {code:#04x} is not valid in {PACKET_NAMES[packet]}", at
        )


def _decode_publish(r: _Reader, flags: int, version: int, header_at: int) -> Publish:
    qos = (flags >> 1) & 0x03
    if qos == 3:
        raise MqttError(MALFORMED, "PUBLISH with QoS 3", header_at)
    dup = bool(flags & 0x08)
    if dup and qos == 0:
        raise MqttError(MALFORMED, "PUBLISH with DUP set at QoS 0", header_at)
    at = r.pos
    topic = r.utf8("topic name")
    _check_topic_name(topic, at)
    packet_id = r.packet_id() if qos else 0
    properties = _read_properties(r, PUBLISH) if version == MQTT_5 else None
    if not topic and (properties is None or "topic_alias" not in properties):
        raise MqttError(PROTOCOL_ERROR, "empty topic name without a topic alias", at)
    payload = r.data[r.pos : r.end]
    return Publish(topic, payload, qos, bool(flags & 0x01), dup, packet_id, properties)


def _decode_ack(r: _Reader, ptype: int, version: int) -> _Ack:
    cls = _ACK_CLASSES[ptype]
    packet_id = r.packet_id()
    if version != MQTT_5 or r.at_end():
        r.expect_end(PACKET_NAMES[ptype])
        return cls(packet_id)
    at = r.pos
    code = r.u8("reason code")
    _check_reason(code, ptype, at)
    properties = None if r.at_end() else _read_properties(r, ptype)
    r.expect_end(PACKET_NAMES[ptype])
    return cls(packet_id, code, properties)


def _decode_subscribe(r: _Reader, version: int) -> Subscribe:
    packet_id = r.packet_id()
    properties = _read_properties(r, SUBSCRIBE) if version == MQTT_5 else None
    subscriptions = []
    while not r.at_end():
        topic_filter = r.utf8("topic filter")
        at = r.pos
        options = r.u8("subscription options")
        reserved = 0xC0 if version == MQTT_5 else 0xFC
        if options & reserved:
            raise MqttError(MALFORMED, "reserved subscription option bits set", at)
        qos = options & 0x03
        if qos == 3:
            raise MqttError(MALFORMED, "subscription with QoS 3", at)
        retain_handling = (options >> 4) & 0x03
        if retain_handling == 3:
            raise MqttError(PROTOCOL_ERROR, "retain handling 3", at)
        subscriptions.append(
            Subscription(
                topic_filter, qos, bool(options & 0x04), bool(options & 0x08), retain_handling
            )
        )
    if not subscriptions:
        raise MqttError(PROTOCOL_ERROR, "SUBSCRIBE without a topic filter", r.pos)
    return Subscribe(packet_id, subscriptions, properties)


def _decode_unsubscribe(r: _Reader, version: int) -> Unsubscribe:
    packet_id = r.packet_id()
    properties = _read_properties(r, UNSUBSCRIBE) if version == MQTT_5 else None
    filters = []
    while not r.at_end():
        filters.append(r.utf8("topic filter"))
    if not filters:
        raise MqttError(PROTOCOL_ERROR, "UNSUBSCRIBE without a topic filter", r.pos)
    return Unsubscribe(packet_id, filters, properties)


def _decode_codes(r: _Reader, ptype: int, allowed: frozenset[int]) -> list[int]:
    codes = []
    while not r.at_end():
        at = r.pos
        code = r.u8("reason code")
        if code not in allowed:
            raise MqttError(
                MALFORMED, f"reason code {code:#04x} is not valid in {PACKET_NAMES[ptype]}", at
            )
        codes.append(code)
    return codes


def _decode_body(r: _Reader, ptype: int, flags: int, version: int, header_at: int) -> Packet:
    """One packet's variable header and payload; r spans exactly its Remaining Length."""
    if ptype == PUBLISH:
        return _decode_publish(r, flags, version, header_at)
    if ptype in _ACK_CLASSES:
        return _decode_ack(r, ptype, version)
    if ptype == SUBSCRIBE:
        return _decode_subscribe(r, version)
    if ptype == SUBACK:
        packet_id = r.packet_id()
        v5 = version == MQTT_5
        properties = _read_properties(r, SUBACK) if v5 else None
        codes = _decode_codes(r, SUBACK, REASON_CODES[SUBACK] if v5 else V3_SUBACK_CODES)
        return Suback(packet_id, codes, properties)
    if ptype == UNSUBSCRIBE:
        return _decode_unsubscribe(r, version)
    if ptype == UNSUBACK:
        packet_id = r.packet_id()
        if version != MQTT_5:
            r.expect_end("UNSUBACK")
            return Unsuback(packet_id)
        properties = _read_properties(r, UNSUBACK)
        return Unsuback(packet_id, _decode_codes(r, UNSUBACK, REASON_CODES[UNSUBACK]), properties)
    if ptype in (PINGREQ, PINGRESP):
        r.expect_end(PACKET_NAMES[ptype])
        return Pingreq() if ptype == PINGREQ else Pingresp()
    if ptype == CONNACK:
        at = r.pos
        ack_flags = r.u8("connack flags")
        if ack_flags & 0xFE:
            raise MqttError(MALFORMED, "reserved CONNACK flags set", at)
        at = r.pos
        code = r.u8("reason code")
        if version == MQTT_5:
            _check_reason(code, CONNACK, at)
            properties = _read_properties(r, CONNACK)
        else:
            if code not in V3_CONNACK_CODES:
                raise MqttError(MALFORMED, f"CONNACK return code {code} is not valid", at)
            properties = None
        r.expect_end("CONNACK")
        return Connack(bool(ack_flags), code, properties)
    if ptype == CONNECT:
        return _decode_connect(r)
    # DISCONNECT and AUTH (§3.14.2.1, §3.15.2.1): reason code and properties may be omitted.
    code, properties = 0, None
    if version == MQTT_5 and not r.at_end():
        at = r.pos
        code = r.u8("reason code")
        _check_reason(code, ptype, at)
        if not r.at_end():
            properties = _read_properties(r, ptype)
    r.expect_end(PACKET_NAMES[ptype])
    return Disconnect(code, properties) if ptype == DISCONNECT else Auth(code, properties)


# First bytes of PUBACK, PUBREC, PUBREL and PUBCOMP (PUBREL's fixed flags are 0b0010).
_ACK_FIRST_BYTES = frozenset((PUBACK << 4, PUBREC << 4, (PUBREL << 4) | 2, PUBCOMP << 4))


class Decoder:
    """Incremental decoder for one connection.

    ``protocol_version`` is 0 until a CONNECT is decoded (server side) or is set up front
    (client side). ``max_packet_size`` bounds the whole packet, fixed header included; a
    larger one raises 0x95 as soon as its fixed header is seen, before its body arrives.
    """

    __slots__ = ("protocol_version", "max_packet_size", "group_publishes")

    def __init__(
        self,
        protocol_version: int = 0,
        max_packet_size: int = MAX_PACKET_SIZE,
        group_publishes: bool = False,
    ) -> None:
        if protocol_version not in (0, MQTT_3_1, MQTT_3_1_1, MQTT_5):
            raise ValueError(f"protocol_version must be 0, 3, 4 or 5, not {protocol_version}")
        if not 2 <= max_packet_size <= MAX_PACKET_SIZE:
            raise ValueError(f"max_packet_size must be in [2, {MAX_PACKET_SIZE}]")
        self.protocol_version = protocol_version
        self.max_packet_size = max_packet_size
        # Hand plain PUBLISHes over as PublishRuns and plain acknowledgements as
        # AckRuns (the broker's batched lanes).
        self.group_publishes = group_publishes

    def decode(self, data: bytes | bytearray | memoryview) -> tuple[list[Packet], int]:
        """Every complete packet at the start of ``data`` and the number of bytes they span.

        When a packet is malformed after others decoded fine, those are returned and the
        error is raised by the next call, which starts at the bad packet.
        """
        buf = data if type(data) is bytes else memoryview(data).tobytes()
        end = len(buf)
        pos = 0
        packets: list[Packet] = []
        run: list[Any] | None = None  # [topic, start, count, largest, first byte] of a run
        acks: AckRun | None = None  # an open run of acknowledgements
        while pos < end:
            if end - pos < 2:
                break
            try:
                packet, consumed = self._decode_one(buf, pos, end)
            except MqttError:
                if packets or run or acks:
                    break
                raise
            if packet is None:
                break
            first = buf[pos]
            grouped = self.group_publishes
            if grouped and first in _ACK_FIRST_BYTES and consumed - pos == 4:
                if run is not None:
                    packets.append(self._run(buf, run, pos))
                    run = None
                if acks is not None and acks.ack_type != first >> 4:
                    packets.append(acks)
                    acks = None
                if acks is None:
                    acks = AckRun(first >> 4, [])
                acks.packet_ids.append(packet.packet_id)  # type: ignore[attr-defined]
            elif grouped and first in (0x30, 0x32, 0x34) and packet.properties is None:  # type: ignore[attr-defined]
                if acks is not None:
                    packets.append(acks)
                    acks = None
                topic = packet.topic  # type: ignore[attr-defined]
                if run is not None and (run[0] != topic or run[4] != first):
                    packets.append(self._run(buf, run, pos))
                    run = None
                if run is None:
                    run = [topic, pos, 0, 0, first]
                run[2] += 1
                run[3] = max(run[3], consumed - pos)
            else:
                if run is not None:
                    packets.append(self._run(buf, run, pos))
                    run = None
                if acks is not None:
                    packets.append(acks)
                    acks = None
                packets.append(packet)
            pos = consumed
        if run is not None:
            packets.append(self._run(buf, run, pos))
        if acks is not None:
            packets.append(acks)
        return packets, pos

    def _run(self, buf: bytes, run: list[Any], end: int) -> PublishRun:
        topic, start, count, largest, first = run
        return PublishRun(
            topic, buf[start:end], count, largest, self.protocol_version, (first >> 1) & 3
        )

    def _decode_one(self, buf: bytes, pos: int, end: int) -> tuple[Packet | None, int]:
        first = buf[pos]
        ptype, flags = first >> 4, first & 0x0F
        version = self.protocol_version
        try:
            length, body = _read_varint(buf, pos + 1, end, "remaining length")
        except MqttError as exc:
            if exc.offset >= end:
                return None, pos  # the length itself is still arriving
            raise
        if body - pos + length > self.max_packet_size:
            raise MqttError(
                PACKET_TOO_LARGE,
                f"{PACKET_NAMES.get(ptype, 'packet')} of {body - pos + length} bytes exceeds "
                f"the maximum packet size {self.max_packet_size}",
                pos,
            )
        if ptype == 0 or (ptype == AUTH and version != MQTT_5 and version != 0):
            raise MqttError(MALFORMED, f"reserved packet type {ptype}", pos)
        if ptype != PUBLISH and flags != FIXED_FLAGS[ptype]:
            raise MqttError(MALFORMED, f"invalid flags {flags:#x} on {PACKET_NAMES[ptype]}", pos)
        if version == 0 and ptype != CONNECT:
            raise MqttError(
                PROTOCOL_ERROR,
                f"{PACKET_NAMES[ptype]} before CONNECT: first packet must be CONNECT",
                pos,
            )
        if body + length > end:
            return None, pos
        packet = _decode_body(_Reader(buf, body, body + length), ptype, flags, version, pos)
        if ptype == CONNECT:
            self.protocol_version = packet.protocol_version  # type: ignore[attr-defined]
        return packet, body + length


# ---------------------------------------------------------------------------- encoding


def _varint(value: int) -> bytes:
    if not 0 <= value <= MAX_REMAINING_LENGTH:
        raise ValueError(f"variable byte integer {value} out of range")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _binary(value: bytes) -> bytes:
    if len(value) > 0xFFFF:
        raise ValueError(f"binary field of {len(value)} bytes exceeds 65535")
    return _U16.pack(len(value)) + value


def _utf8(value: str) -> bytes:
    return _binary(value.encode("utf-8"))


def _properties(props: dict[str, Any] | None) -> bytes:
    if not props:
        return b"\x00"
    out = bytearray()
    for name, value in props.items():
        pid = PROPERTY_IDS.get(name)
        if pid is None:
            raise ValueError(f"unknown MQTT property {name!r}")
        kind = PROPERTIES[pid][1]
        for item in value if name in REPEATABLE else (value,):
            out.append(pid)
            if kind == BYTE:
                out.append(item)
            elif kind == TWO_BYTE_INT:
                out += _U16.pack(item)
            elif kind == FOUR_BYTE_INT:
                out += _U32.pack(item)
            elif kind == VARIABLE_BYTE_INT:
                out += _varint(item)
            elif kind == UTF8_STRING:
                out += _utf8(item)
            elif kind == BINARY_DATA:
                out += _binary(item)
            else:
                out += _utf8(item[0]) + _utf8(item[1])
    return _varint(len(out)) + out


def _packet(first: int, body: bytes) -> bytes:
    if len(body) > MAX_REMAINING_LENGTH:
        raise ValueError(f"packet body of {len(body)} bytes exceeds {MAX_REMAINING_LENGTH}")
    return bytes((first,)) + _varint(len(body)) + body


def _encode_connect(p: Connect) -> bytes:
    v5 = p.protocol_version == MQTT_5
    flags = 0x02 if p.clean_start else 0
    if p.will is not None:
        if not 0 <= p.will.qos <= 2:
            raise ValueError(f"will QoS must be 0, 1 or 2, not {p.will.qos}")
        flags |= 0x04 | (p.will.qos << 3) | (0x20 if p.will.retain else 0)
    if p.password is not None:
        flags |= 0x40
    if p.username is not None:
        flags |= 0x80
    body = bytearray(_utf8(PROTOCOL_NAMES[p.protocol_version]))
    body += bytes((p.protocol_version, flags)) + _U16.pack(p.keep_alive)
    if v5:
        body += _properties(p.properties)
    body += _utf8(p.client_id)
    if p.will is not None:
        if v5:
            body += _properties(p.will.properties)
        body += _utf8(p.will.topic) + _binary(p.will.payload)
    if p.username is not None:
        body += _utf8(p.username)
    if p.password is not None:
        body += _binary(p.password)
    return _packet(CONNECT << 4, bytes(body))


def encode_publish(
    topic: str,
    payload: bytes,
    qos: int = 0,
    retain: bool = False,
    dup: bool = False,
    packet_id: int = 0,
    properties: dict[str, Any] | None = None,
    protocol_version: int = MQTT_3_1_1,
) -> bytes:
    """A PUBLISH packet from its fields, without building a Publish object."""
    if not 0 <= qos <= 2:
        raise ValueError(f"QoS must be 0, 1 or 2, not {qos}")
    first = (PUBLISH << 4) | (0x08 if dup else 0) | (qos << 1) | (0x01 if retain else 0)
    body = _utf8(topic)
    if qos:
        body += _U16.pack(packet_id)
    if protocol_version == MQTT_5:
        body += _properties(properties)
    return _packet(first, body + memoryview(payload).tobytes())


def encode_publish_split(
    topic: str,
    payload: bytes,
    qos: int,
    retain: bool = False,
    properties: dict[str, Any] | None = None,
    protocol_version: int = MQTT_3_1_1,
) -> tuple[bytes, bytes]:
    """A QoS 1/2 PUBLISH in two parts around its packet identifier, (head, tail), so one
    encoding serves every delivery: head + identifier + tail is the packet."""
    if qos not in (1, 2):
        raise ValueError(f"only QoS 1 and 2 carry a packet identifier, not QoS {qos}")
    data = encode_publish(topic, payload, qos, retain, False, 0, properties, protocol_version)
    at = len(data) - len(payload) - 2
    if protocol_version == MQTT_5:
        at -= len(_properties(properties))
    return data[:at], data[at + 2 :]


def _encode_ack(p: _Ack, version: int) -> bytes:
    first = (p.packet_type << 4) | FIXED_FLAGS[p.packet_type]
    body = _U16.pack(p.packet_id)
    if version == MQTT_5 and (p.reason_code or p.properties):
        body += bytes((p.reason_code,))
        if p.properties:
            body += _properties(p.properties)
    return _packet(first, body)


def _encode_subscribe(p: Subscribe, version: int) -> bytes:
    body = bytearray(_U16.pack(p.packet_id))
    if version == MQTT_5:
        body += _properties(p.properties)
    for s in p.subscriptions:
        if not (0 <= s.qos <= 2 and 0 <= s.retain_handling <= 2):
            raise ValueError(f"bad subscription options in {s!r}")
        options = s.qos
        if version == MQTT_5:
            options |= (
                (0x04 if s.no_local else 0)
                | (0x08 if s.retain_as_published else 0)
                | (s.retain_handling << 4)
            )
        body += _utf8(s.topic_filter) + bytes((options,))
    return _packet((SUBSCRIBE << 4) | 2, bytes(body))


def _encode_reason_only(p: Disconnect | Auth, version: int) -> bytes:
    body = b""
    if version == MQTT_5 and (p.reason_code or p.properties):
        body = bytes((p.reason_code,))
        if p.properties:
            body += _properties(p.properties)
    return _packet(p.packet_type << 4, body)


def encode(packet: Packet, protocol_version: int = MQTT_3_1_1) -> bytes:
    """The wire bytes of ``packet`` for a connection speaking ``protocol_version``."""
    v5 = protocol_version == MQTT_5
    if isinstance(packet, Publish):
        return encode_publish(
            packet.topic,
            packet.payload,
            packet.qos,
            packet.retain,
            packet.dup,
            packet.packet_id,
            packet.properties,
            protocol_version,
        )
    if isinstance(packet, _Ack):
        return _encode_ack(packet, protocol_version)
    if isinstance(packet, Connect):
        return _encode_connect(packet)
    if isinstance(packet, Connack):
        body = bytes((1 if packet.session_present else 0, packet.reason_code))
        if v5:
            body += _properties(packet.properties)
        return _packet(CONNACK << 4, body)
    if isinstance(packet, Subscribe):
        return _encode_subscribe(packet, protocol_version)
    if isinstance(packet, (Suback, Unsuback)):
        body = _U16.pack(packet.packet_id)
        if v5:
            body += _properties(packet.properties) + bytes(packet.reason_codes)
        elif isinstance(packet, Suback):
            body += bytes(packet.reason_codes)
        return _packet(packet.packet_type << 4, body)
    if isinstance(packet, Unsubscribe):
        body = _U16.pack(packet.packet_id)
        if v5:
            body += _properties(packet.properties)
        body += b"".join(_utf8(f) for f in packet.topic_filters)
        return _packet((UNSUBSCRIBE << 4) | 2, body)
    if isinstance(packet, (Pingreq, Pingresp)):
        return bytes((packet.packet_type << 4, 0))
    if isinstance(packet, (Disconnect, Auth)):
        return _encode_reason_only(packet, protocol_version)
    raise TypeError(f"not an MQTT packet: {packet!r}")


_ACK_CLASSES: dict[int, type[_Ack]] = {
    PUBACK: Puback,
    PUBREC: Pubrec,
    PUBREL: Pubrel,
    PUBCOMP: Pubcomp,
}

__all__ = [
    "AckRun",
    "Auth",
    "Connack",
    "Connect",
    "Decoder",
    "Disconnect",
    "Packet",
    "Pingreq",
    "Pingresp",
    "Puback",
    "Pubcomp",
    "Publish",
    "PublishRun",
    "Pubrec",
    "Pubrel",
    "Suback",
    "Subscribe",
    "Subscription",
    "Unsuback",
    "Unsubscribe",
    "Will",
    "encode",
    "encode_publish",
    "encode_publish_split",
]
