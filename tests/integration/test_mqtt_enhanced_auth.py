"""MQTT 5 enhanced authentication (§4.12): the AUTH exchange through a registered method."""

from __future__ import annotations

import pytest

from robustmq._core import mqtt_codec
from tests.integration.clients import Raw

METHOD = "TEST-CHALLENGE"


class ChallengeResponse:
    """A toy method: the server asks "challenge?", the client must answer "answer"."""

    def __init__(self) -> None:
        self.asked = False

    def step(self, data):
        if not self.asked:
            self.asked = True
            return 0x18, b"challenge?"
        return (0x00, b"welcome") if data == b"answer" else (0x87, None)


@pytest.fixture
def auth_broker(broker_factory):
    b = broker_factory()
    b.broker.auth_methods[METHOD] = ChallengeResponse
    return b


def _start(port, data=b"hello"):
    raw = Raw(port, 5)
    raw.send_packet(
        mqtt_codec.Connect(
            "authed",
            protocol_version=5,
            properties={"authentication_method": METHOD, "authentication_data": data},
        )
    )
    return raw


def _auth(raw, code, data):
    props = {"authentication_method": METHOD, "authentication_data": data}
    raw.send_packet(mqtt_codec.Auth(code, props))


def test_challenge_then_connack_with_the_method(auth_broker):
    raw = _start(auth_broker.port)
    challenge = raw.recv()
    assert (challenge.reason_code, challenge.properties["authentication_data"]) == (
        0x18,
        b"challenge?",
    )
    _auth(raw, 0x18, b"answer")
    ack = raw.recv()
    assert isinstance(ack, mqtt_codec.Connack) and ack.reason_code == 0
    assert ack.properties["authentication_method"] == METHOD
    assert ack.properties["authentication_data"] == b"welcome"
    # the connection is usable
    raw.send_packet(mqtt_codec.Subscribe(1, [mqtt_codec.Subscription("a", 0)]))
    assert raw.recv().reason_codes == [0]


def test_wrong_answer_is_refused_with_the_methods_code(auth_broker):
    raw = _start(auth_broker.port)
    raw.recv()
    _auth(raw, 0x18, b"guess")
    ack = raw.recv()
    assert (type(ack).__name__, ack.reason_code) == ("Connack", 0x87)
    assert raw.closed()


def test_re_authentication_after_connect(auth_broker):
    raw = _start(auth_broker.port)
    raw.recv()
    _auth(raw, 0x18, b"answer")
    assert raw.recv().reason_code == 0
    _auth(raw, 0x19, b"again")  # re-authenticate
    assert raw.recv().properties["authentication_data"] == b"challenge?"
    _auth(raw, 0x18, b"answer")
    done = raw.recv()
    assert isinstance(done, mqtt_codec.Auth) and done.reason_code == 0


def test_unknown_method_is_refused_with_0x8c(broker):
    raw = Raw(broker.port, 5)
    raw.send_packet(
        mqtt_codec.Connect("x", protocol_version=5, properties={"authentication_method": "NOPE"})
    )
    assert raw.recv().reason_code == 0x8C
    assert raw.closed()


def test_publish_before_authentication_completes_closes_the_connection(auth_broker):
    raw = _start(auth_broker.port)
    raw.recv()
    raw.send_packet(mqtt_codec.Publish("a", b"sneaky"))
    assert raw.closed()


def test_auth_with_another_method_is_a_protocol_error(auth_broker):
    raw = _start(auth_broker.port)
    raw.recv()
    raw.send_packet(mqtt_codec.Auth(0x18, {"authentication_method": "OTHER"}))
    assert raw.closed()
