"""MQTT constants from the specifications, defined once for both codec twins.

Packet types, protocol levels, the MQTT 5 property table (identifier, name, wire type and
the packets that may carry it) and the reason codes each packet may carry. The compiled
codec builds its lookup arrays from these tables at import, so a property added here is
known to both twins. Nothing here encodes or decodes.
"""

from __future__ import annotations

from enum import IntEnum

# Control packet types, MQTT 5.0 §2.1.2.
CONNECT = 1
CONNACK = 2
PUBLISH = 3
PUBACK = 4
PUBREC = 5
PUBREL = 6
PUBCOMP = 7
SUBSCRIBE = 8
SUBACK = 9
UNSUBSCRIBE = 10
UNSUBACK = 11
PINGREQ = 12
PINGRESP = 13
DISCONNECT = 14
AUTH = 15
# Not wire types: what a Decoder built with group_publishes=True hands over in one piece.
# Consecutive plain PUBLISHes of one QoS on one topic, kept in their wire form:
PUBLISH_RUN = 16
# Consecutive acknowledgements of one type in their two-byte success form:
ACK_RUN = 17

PACKET_NAMES = {
    CONNECT: "CONNECT",
    CONNACK: "CONNACK",
    PUBLISH: "PUBLISH",
    PUBACK: "PUBACK",
    PUBREC: "PUBREC",
    PUBREL: "PUBREL",
    PUBCOMP: "PUBCOMP",
    SUBSCRIBE: "SUBSCRIBE",
    SUBACK: "SUBACK",
    UNSUBSCRIBE: "UNSUBSCRIBE",
    UNSUBACK: "UNSUBACK",
    PINGREQ: "PINGREQ",
    PINGRESP: "PINGRESP",
    DISCONNECT: "DISCONNECT",
    AUTH: "AUTH",
}

# The flags nibble each packet type must carry (§2.1.3); PUBLISH carries DUP/QoS/RETAIN.
FIXED_FLAGS = {t: 0 for t in PACKET_NAMES}
FIXED_FLAGS.update({PUBREL: 2, SUBSCRIBE: 2, UNSUBSCRIBE: 2})

# Protocol levels carried in CONNECT and the protocol name that goes with each.
MQTT_3_1 = 3
MQTT_3_1_1 = 4
MQTT_5 = 5
PROTOCOL_NAMES = {MQTT_3_1: "MQIsdp", MQTT_3_1_1: "MQTT", MQTT_5: "MQTT"}

# Largest Remaining Length (§1.5.5) plus the 5-byte fixed header that carries it.
MAX_REMAINING_LENGTH = 268_435_455
MAX_PACKET_SIZE = MAX_REMAINING_LENGTH + 5

# Wire types of property values, §2.2.2.2.
BYTE = 1
TWO_BYTE_INT = 2
FOUR_BYTE_INT = 3
VARIABLE_BYTE_INT = 4
UTF8_STRING = 5
BINARY_DATA = 6
UTF8_PAIR = 7

# A pseudo packet type for the Will Properties in the CONNECT payload (§3.1.3.2); type 0
# is reserved on the wire, so its bit is free to mean "will".
WILL = 0

_ACKS = (PUBACK, PUBREC, PUBREL, PUBCOMP)
_ALL_WITH_PROPERTIES = (
    CONNECT, CONNACK, PUBLISH, WILL, PUBACK, PUBREC, PUBREL, PUBCOMP,
    SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, DISCONNECT, AUTH,
)  # fmt: skip

# identifier: (name, wire type, packet types that may carry it), §2.2.2.2 table 2-4.
PROPERTIES: dict[int, tuple[str, int, tuple[int, ...]]] = {
    0x01: ("payload_format_indicator", BYTE, (PUBLISH, WILL)),
    0x02: ("message_expiry_interval", FOUR_BYTE_INT, (PUBLISH, WILL)),
    0x03: ("content_type", UTF8_STRING, (PUBLISH, WILL)),
    0x08: ("response_topic", UTF8_STRING, (PUBLISH, WILL)),
    0x09: ("correlation_data", BINARY_DATA, (PUBLISH, WILL)),
    0x0B: ("subscription_identifier", VARIABLE_BYTE_INT, (PUBLISH, SUBSCRIBE)),
    0x11: ("session_expiry_interval", FOUR_BYTE_INT, (CONNECT, CONNACK, DISCONNECT)),
    0x12: ("assigned_client_identifier", UTF8_STRING, (CONNACK,)),
    0x13: ("server_keep_alive", TWO_BYTE_INT, (CONNACK,)),
    0x15: ("authentication_method", UTF8_STRING, (CONNECT, CONNACK, AUTH)),
    0x16: ("authentication_data", BINARY_DATA, (CONNECT, CONNACK, AUTH)),
    0x17: ("request_problem_information", BYTE, (CONNECT,)),
    0x18: ("will_delay_interval", FOUR_BYTE_INT, (WILL,)),
    0x19: ("request_response_information", BYTE, (CONNECT,)),
    0x1A: ("response_information", UTF8_STRING, (CONNACK,)),
    0x1C: ("server_reference", UTF8_STRING, (CONNACK, DISCONNECT)),
    0x1F: (
        "reason_string",
        UTF8_STRING,
        (CONNACK, *_ACKS, SUBACK, UNSUBACK, DISCONNECT, AUTH),
    ),
    0x21: ("receive_maximum", TWO_BYTE_INT, (CONNECT, CONNACK)),
    0x22: ("topic_alias_maximum", TWO_BYTE_INT, (CONNECT, CONNACK)),
    0x23: ("topic_alias", TWO_BYTE_INT, (PUBLISH,)),
    0x24: ("maximum_qos", BYTE, (CONNACK,)),
    0x25: ("retain_available", BYTE, (CONNACK,)),
    0x26: ("user_property", UTF8_PAIR, _ALL_WITH_PROPERTIES),
    0x27: ("maximum_packet_size", FOUR_BYTE_INT, (CONNECT, CONNACK)),
    0x28: ("wildcard_subscription_available", BYTE, (CONNACK,)),
    0x29: ("subscription_identifier_available", BYTE, (CONNACK,)),
    0x2A: ("shared_subscription_available", BYTE, (CONNACK,)),
}
PROPERTY_IDS = {name: pid for pid, (name, _, _) in PROPERTIES.items()}

# Properties that may appear more than once; their decoded value is always a list
# (user_property: a list of (name, value) pairs).
REPEATABLE = frozenset({"user_property", "subscription_identifier"})

# Byte-valued properties whose only legal values are 0 and 1 (§3.1.2.11, §3.2.2.3).
BOOLEAN_PROPERTIES = frozenset(
    {
        "payload_format_indicator",
        "request_problem_information",
        "request_response_information",
        "maximum_qos",
        "retain_available",
        "wildcard_subscription_available",
        "subscription_identifier_available",
        "shared_subscription_available",
    }
)
# Integer properties for which 0 is a Protocol Error.
NONZERO_PROPERTIES = frozenset(
    {"receive_maximum", "maximum_packet_size", "topic_alias", "subscription_identifier"}
)


class ReasonCode(IntEnum):
    """MQTT 5.0 reason codes, §2.4."""

    SUCCESS = 0x00
    GRANTED_QOS_1 = 0x01
    GRANTED_QOS_2 = 0x02
    DISCONNECT_WITH_WILL = 0x04
    NO_MATCHING_SUBSCRIBERS = 0x10
    NO_SUBSCRIPTION_EXISTED = 0x11
    CONTINUE_AUTHENTICATION = 0x18
    RE_AUTHENTICATE = 0x19
    UNSPECIFIED_ERROR = 0x80
    MALFORMED_PACKET = 0x81
    PROTOCOL_ERROR = 0x82
    IMPLEMENTATION_SPECIFIC_ERROR = 0x83
    UNSUPPORTED_PROTOCOL_VERSION = 0x84
    CLIENT_IDENTIFIER_NOT_VALID = 0x85
    BAD_USER_NAME_OR_PASSWORD = 0x86
    NOT_AUTHORIZED = 0x87
    SERVER_UNAVAILABLE = 0x88
    SERVER_BUSY = 0x89
    BANNED = 0x8A
    SERVER_SHUTTING_DOWN = 0x8B
    BAD_AUTHENTICATION_METHOD = 0x8C
    KEEP_ALIVE_TIMEOUT = 0x8D
    SESSION_TAKEN_OVER = 0x8E
    TOPIC_FILTER_INVALID = 0x8F
    TOPIC_NAME_INVALID = 0x90
    PACKET_IDENTIFIER_IN_USE = 0x91
    PACKET_IDENTIFIER_NOT_FOUND = 0x92
    RECEIVE_MAXIMUM_EXCEEDED = 0x93
    TOPIC_ALIAS_INVALID = 0x94
    PACKET_TOO_LARGE = 0x95
    MESSAGE_RATE_TOO_HIGH = 0x96
    QUOTA_EXCEEDED = 0x97
    ADMINISTRATIVE_ACTION = 0x98
    PAYLOAD_FORMAT_INVALID = 0x99
    RETAIN_NOT_SUPPORTED = 0x9A
    QOS_NOT_SUPPORTED = 0x9B
    USE_ANOTHER_SERVER = 0x9C
    SERVER_MOVED = 0x9D
    SHARED_SUBSCRIPTIONS_NOT_SUPPORTED = 0x9E
    CONNECTION_RATE_EXCEEDED = 0x9F
    MAXIMUM_CONNECT_TIME = 0xA0
    SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED = 0xA1
    WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED = 0xA2


_PUB_ERRORS = (0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99)

# Reason codes each MQTT 5 packet may carry (§3.2.2.2, §3.4.2.1, ... §3.15.2.1).
REASON_CODES: dict[int, frozenset[int]] = {
    CONNACK: frozenset(
        (0x00, *range(0x80, 0x8B), 0x8C, 0x90, 0x95, 0x97, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F)
    ),
    PUBACK: frozenset(_PUB_ERRORS),
    PUBREC: frozenset(_PUB_ERRORS),
    PUBREL: frozenset((0x00, 0x92)),
    PUBCOMP: frozenset((0x00, 0x92)),
    SUBACK: frozenset((0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2)),
    UNSUBACK: frozenset((0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91)),
    DISCONNECT: frozenset(
        (0x00, 0x04, *range(0x80, 0x84), 0x87, 0x89, 0x8B, *range(0x8D, 0x91), *range(0x93, 0xA3))
    ),
    AUTH: frozenset((0x00, 0x18, 0x19)),
}
# MQTT 3.1/3.1.1 return codes: CONNACK 0-5 (§3.2.2.3), SUBACK 0, 1, 2, 0x80 (§3.9.3).
V3_CONNACK_CODES = frozenset(range(6))
V3_SUBACK_CODES = frozenset((0x00, 0x01, 0x02, 0x80))
