"""An application message as it travels from a publisher to subscribers.

A ``Message`` is immutable once routed; each delivery picks its own QoS, retain flag and
subscription identifiers. Encoded PUBLISH bytes are cached per delivery shape so that a
message going to many subscribers is encoded once per shape, and only its packet
identifier differs between QoS 1/2 deliveries.
"""

from __future__ import annotations

import time
from typing import Any

from robustmq._core import mqtt


class Message:
    __slots__ = (
        "topic",
        "payload",
        "qos",
        "retain",
        "properties",
        "sender",
        "expires_at",
        "_key",
        "_shape",
        "_shapes",
    )

    def __init__(
        self,
        topic: str,
        payload: bytes,
        qos: int,
        retain: bool,
        properties: dict[str, Any] | None = None,
        sender: str = "",
    ) -> None:
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
        self.sender = sender
        self.expires_at = 0.0
        if properties:
            properties = {k: v for k, v in properties.items() if k not in _HOP_PROPERTIES}
            interval = properties.get("message_expiry_interval")
            if interval is not None:
                self.expires_at = time.monotonic() + interval
        self.properties = properties or None
        # The first shape encoded sits in two slots; a dict only for a second shape. Most
        # messages go to one subscriber or to many of one shape.
        self._key: Any = None
        self._shape: tuple[bytes, bytes] | None = None
        self._shapes: dict[Any, tuple[bytes, bytes]] | None = None

    def expired(self, now: float) -> bool:
        return self.expires_at != 0.0 and now >= self.expires_at

    def encoded(
        self,
        version: int,
        qos: int,
        retain: bool,
        sub_ids: tuple[int, ...],
        alias: int = 0,
        alias_known: bool = False,
    ) -> tuple[bytes, bytes]:
        """PUBLISH bytes split around the packet identifier: (head, tail).

        For QoS 0 the tail is empty and the head is the whole packet. ``alias`` is the
        receiving connection's topic alias for this topic (MQTT 5 §3.3.2.3.4); once the
        client knows it, the topic is left out. The split is cached per shape unless the
        message carries an expiry, whose remaining interval changes.
        """
        # Most deliveries carry no identifiers and no alias: an int key hashes fastest.
        key: Any = (
            (version, qos, retain, sub_ids, alias, alias_known)
            if sub_ids or alias
            else (version << 3) | (qos << 1) | retain
        )
        if key == self._key:
            return self._shape  # type: ignore[return-value]
        if self._shapes is not None:
            cached = self._shapes.get(key)
            if cached is not None:
                return cached
        props = self.properties
        if version == 5 and (sub_ids or self.expires_at or alias):
            props = dict(props or {})
            if sub_ids:
                props["subscription_identifier"] = list(sub_ids)
            if self.expires_at:
                props["message_expiry_interval"] = max(
                    0, int(self.expires_at - time.monotonic() + 0.999)
                )
            if alias:
                props["topic_alias"] = alias
        topic = "" if alias_known else self.topic
        if qos:
            shape = mqtt.encode_publish_split(topic, self.payload, qos, retain, props, version)
        else:
            shape = (
                mqtt.encode_publish(topic, self.payload, 0, retain, False, 0, props, version),
                b"",
            )
        if not self.expires_at:
            if self._key is None:
                self._key, self._shape = key, shape
            else:
                if self._shapes is None:
                    self._shapes = {}
                self._shapes[key] = shape
        return shape


# Properties that belong to one hop, never forwarded (MQTT 5 §3.3.2.3.4, §3.3.2.3.8).
_HOP_PROPERTIES = frozenset({"topic_alias", "subscription_identifier"})
