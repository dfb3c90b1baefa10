"""Review of the cluster link's route writing (session 4), in-process: the link of one
node with a real ``Router`` and a real ``ClusterStateMachine`` standing in for the
``cluster`` group, behind a proposer that can answer ``MetaTimeout`` for a proposal it
did commit (as ``errors.MetaTimeout`` says a proposal may). The test proved a bug found
in review (now fixed: a failed round makes the next one send the whole set); the link
between real processes is ``tests/cluster/test_review_session4.py``'s.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import orjson

from robustmq.broker.mqtt.cluster_link import ClusterLink
from robustmq.broker.router import Router
from robustmq.errors import MetaTimeout
from robustmq.meta.groups import ClusterStateMachine

NODE = 1


class CommittingProposer:
    """The ``cluster`` group of one state machine: every proposal is applied; the one
    for which ``timeout_when`` holds then answers ``MetaTimeout`` after ``meanwhile``."""

    def __init__(self) -> None:
        self.sm = ClusterStateMachine()
        self.timeout_when: Callable[[dict[str, Any]], bool] = lambda cmd: False
        self.meanwhile: Callable[[], None] = lambda: None
        self.applied = asyncio.Event()

    async def propose(self, group: str, command: bytes) -> Any:
        assert group == "cluster"
        result = self.sm.apply(command)
        self.applied.set()
        cmd = orjson.loads(command)
        if self.timeout_when(cmd):
            self.timeout_when = lambda cmd: False
            self.meanwhile()
            raise MetaTimeout("no answer within the client's timeout (committed later)")
        return result

    def routes(self) -> set[str]:
        return set(self.sm.read("routes").get(str(NODE), {}))


class IdleWatch:
    """A watch stream on which nothing happens (the link's other nodes do not matter)."""

    def __init__(self) -> None:
        self._never = asyncio.Event()

    async def next_events(self) -> list[Any]:
        await self._never.wait()
        return []

    def close(self) -> None:
        pass


async def _until(what: str, check: Callable[[], bool]) -> None:
    async def poll() -> None:
        while not check():
            await asyncio.sleep(0.01)

    try:
        await asyncio.wait_for(poll(), 30.0)
    except TimeoutError:
        raise AssertionError(f"not {what} within 30 s") from None


async def test_a_route_deleted_by_a_timed_out_proposal_comes_back_when_resubscribed() -> None:
    proposer = CommittingProposer()
    broker = SimpleNamespace(router=Router(), stats=Counter())
    link = ClusterLink(
        NODE,
        broker,  # type: ignore[arg-type]
        proposer,
        watch=IdleWatch,
        routes=lambda: proposer.sm.read("routes"),
        addresses=dict,
        brokers=set,
        channel=lambda address: None,
    )
    link.start()
    try:
        await _until("the first round stored", lambda: proposer.applied.is_set())
        link.subscribed("sensors/+")
        await _until("the route stored", lambda: proposer.routes() == {"sensors/+"})
        # The last subscriber leaves; the delete commits but its answer times out, and
        # meanwhile a subscriber of this node takes the filter again.
        proposer.timeout_when = lambda cmd: cmd["delete"] == ["sensors/+"]
        proposer.meanwhile = lambda: link.subscribed("sensors/+")
        link.unsubscribed("sensors/+")
        await _until("the delete applied", lambda: proposer.routes() == set())
        # Another filter afterwards: once it is stored, every earlier change was handled.
        link.subscribed("other/#")
        await _until("the next change stored", lambda: "other/#" in proposer.routes())
        assert proposer.routes() == {"sensors/+", "other/#"}
    finally:
        await link.stop()
