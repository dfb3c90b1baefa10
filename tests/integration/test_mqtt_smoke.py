"""Publish/subscribe across protocol versions and QoS levels with paho-mqtt."""

from __future__ import annotations

import pytest

from tests.integration.clients import Paho


@pytest.mark.parametrize("version", [3, 4, 5], ids=["3.1", "3.1.1", "5.0"])
@pytest.mark.parametrize("qos", [0, 1, 2])
def test_publish_reaches_subscriber(broker, version, qos):
    sub = Paho(broker.port, "sub", version)
    granted = sub.subscribe("t/+", qos)
    assert [int(getattr(code, "value", code)) for code in granted] == [qos]
    pub = Paho(broker.port, "pub", version)
    pub.publish("t/x", b"hello", qos)
    msg = sub.get()
    assert (msg.topic, msg.payload, msg.qos, msg.retain) == ("t/x", b"hello", qos, False)
    pub.disconnect()
    sub.disconnect()
