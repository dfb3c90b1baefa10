"""Every integration test stops the clients it started before its brokers stop, so no
paho loop keeps reconnecting into a later test's broker on a reused port."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.clients import stop_clients


@pytest.fixture(autouse=True)
def _clients(broker_factory: Any) -> Iterator[None]:
    yield
    stop_clients()
