"""Shared fixtures: a real broker on a free port, real MQTT clients, raw sockets.

``broker`` runs an ``MqttBroker`` in a background thread with its own event loop and real
listening sockets, so tests drive it with paho-mqtt, mosquitto_pub/sub or raw bytes exactly
as users would. Exceptions logged by the broker's event loop fail the test (a handler that
crashes must not pass silently). CLI tests start the real ``robustmq-server`` process.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from robustmq.config import MqttConfig


def _ephemeral_range() -> tuple[int, int]:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(x) for x in f.read().split())
            return low, high
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


_EPHEMERAL = _ephemeral_range()
_handed_out: set[int] = set()


def free_port() -> int:
    """A port nobody listens on, below the kernel's ephemeral range and never handed out
    before in this run. A port from the ephemeral range (``bind(0)``) could be taken by
    any client connection the suite opens between this call and the server's bind; the
    kernel never picks a port below that range for a connection."""
    ports = range(max(1024, _EPHEMERAL[0] - 12_000), _EPHEMERAL[0])
    for _ in range(200):
        port = random.choice(ports)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    with socket.socket() as s:  # that range is full: the kernel's choice
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class BrokerThread:
    """An MqttBroker on 127.0.0.1:<free port>, in a thread with its own loop; ``auth``
    is its ``[auth]`` section (an ``AuthConfig``)."""

    def __init__(self, auth: Any = None, **overrides: Any) -> None:
        from robustmq.broker.mqtt.server import MqttBroker

        fields = {f.name for f in dataclasses.fields(MqttConfig)}
        unknown = set(overrides) - fields
        assert not unknown, f"unknown mqtt config keys {unknown}"
        overrides.setdefault("bind", "127.0.0.1")
        overrides.setdefault("port", free_port())
        for listener in ("tls_port", "ws_port", "wss_port"):
            overrides.setdefault(listener, 0)  # tests that want one pass a free port
        self.config = MqttConfig(**overrides)
        self.port = self.config.port
        self.loop = asyncio.new_event_loop()
        self.loop_errors: list[dict[str, Any]] = []
        self.loop.set_exception_handler(lambda loop, ctx: self.loop_errors.append(ctx))
        self.broker = MqttBroker(self.config, auth=auth)
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.call(self.broker.start())

    def call(self, coro: Any, timeout: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def run(self, fn: Any, *args: Any) -> Any:
        """Runs a plain function on the broker's loop and returns its result."""

        async def wrapper() -> Any:
            return fn(*args)

        return self.call(wrapper())

    def stop(self) -> None:
        self.call(self.broker.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()


@pytest.fixture
def broker_factory(caplog: pytest.LogCaptureFixture) -> Iterator[Any]:
    started: list[BrokerThread] = []

    def start(**overrides: Any) -> BrokerThread:
        b = BrokerThread(**overrides)
        started.append(b)
        return b

    yield start
    errors = []
    for b in started:
        errors += b.loop_errors
        b.stop()
    assert not errors, f"the broker's event loop logged exceptions: {errors}"
    crashes = [r for r in caplog.records if r.name.startswith("robustmq") and r.exc_info]
    assert not crashes, f"the broker logged exceptions: {[r.getMessage() for r in crashes]}"


@pytest.fixture
def broker(broker_factory: Any) -> BrokerThread:
    return broker_factory()


@pytest.fixture(autouse=True)
def _quiet_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="robustmq")
