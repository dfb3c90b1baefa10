"""Helpers shared by the meta host and gRPC tests: polling for a condition, finding leaders."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

from robustmq.meta.host import MultiRaftHost
from robustmq.meta.raft import StateType


async def until(cond: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
    """Poll ``cond`` until it returns something truthy; fail the test after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = cond()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s")
        await asyncio.sleep(0.02)


def leader_of(hosts: Iterable[MultiRaftHost], group: str) -> MultiRaftHost | None:
    """The one host leading ``group`` in the highest term, if every other host agrees."""
    hosts = list(hosts)
    leaders = [h for h in hosts if h.groups[group].node.state == StateType.LEADER]
    if not leaders:
        return None
    top = max(leaders, key=lambda h: h.groups[group].node.term)
    lead_id = top.config.node_id
    if all(h.groups[group].node.lead == lead_id for h in hosts):
        return top
    return None
