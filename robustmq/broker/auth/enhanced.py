"""MQTT 5 enhanced authentication (§4.12): the hook an authentication method plugs into.

A method is registered on ``MqttBroker.auth_methods`` under its name (as clients send it
in Authentication Method) as a factory of ``AuthExchange`` objects, one per exchange.
The connection drives the CONNECT/AUTH/CONNACK (and re-authentication AUTH) packets;
the exchange only judges the Authentication Data. With no method registered, a CONNECT
that names one is refused with 0x8C Bad authentication method.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

CONTINUE = 0x18  # Continue authentication
SUCCESS = 0x00


class AuthExchange(Protocol):
    def step(self, data: bytes | None) -> tuple[int, bytes | None]:
        """Judges the client's Authentication Data; returns (reason code, data to send):
        ``SUCCESS``, ``CONTINUE`` (another AUTH round) or a failure code >= 0x80."""
        ...


AuthMethods = dict[str, Callable[[], AuthExchange]]
