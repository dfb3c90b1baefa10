"""The Watch stream over real grpc.aio servers on 127.0.0.1 free ports, through
``MetaClient.watch``: one node and three, a follower serving it, the watched node stopped
mid-stream (the client resumes elsewhere with no gap and no duplicate), catch-up by
snapshot when the wanted index is compacted away, and the errors a stream ends with."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from robustmq.errors import InvalidMetaCommand, MetaCommandError, MetaUnavailable, UnknownMetaGroup
from robustmq.meta import host as host_module
from robustmq.meta.client import MetaClient, WatchEvent
from robustmq.meta.groups import MqttStateMachine, encode_command
from robustmq.meta.raft import ConfChange, ConfChangeType
from robustmq.meta.service import MetaServer, start_meta_node
from tests.conftest import free_port
from tests.unit.meta.cluster_util import leader_of, until
from tests.unit.meta.test_grpc import GrpcCluster


def _session(k: int) -> bytes:
    return encode_command("session.set", client_id=f"c{k}", expiry_interval=k, node_id=1)


async def _take(events: AsyncIterator[WatchEvent], count: int) -> list[WatchEvent]:
    out: list[WatchEvent] = []
    async with asyncio.timeout(60):
        async for ev in events:
            out.append(ev)
            if len(out) == count:
                break
    return out


def _replay(events: list[WatchEvent]) -> MqttStateMachine:
    """What a broker's cache would do with the stream: restore snapshots, apply entries."""
    sm = MqttStateMachine()
    for ev in events:
        if ev.kind == "snapshot":
            sm.restore(ev.command)
        elif ev.kind == "entry" and ev.command:
            with contextlib.suppress(MetaCommandError):  # refused alike on every replica
                sm.apply(ev.command)
    return sm


def _assert_contiguous(events: list[WatchEvent]) -> None:
    for prev, ev in zip(events, events[1:], strict=False):
        assert ev.index == prev.index + 1, f"index {ev.index} after {prev.index}"


@pytest.fixture
async def single(tmp_path: Path) -> AsyncIterator[tuple[MetaServer, MetaClient]]:
    port = free_port()
    server = await start_meta_node(1, (), "127.0.0.1", port, str(tmp_path))
    client = MetaClient([f"127.0.0.1:{port}"], timeout=5.0)
    yield server, client
    await client.close()
    await server.stop()


async def test_one_node_streams_history_then_live_entries_with_results(
    single: tuple[MetaServer, MetaClient],
) -> None:
    server, client = single
    for k in range(5):
        await client.propose("mqtt", _session(k))
    stream = client.watch("mqtt", 1)
    history = await _take(stream, 7)  # the bootstrap member, the leader's no-op, 5 writes
    assert [e.index for e in history] == list(range(1, 8))
    assert history[0].kind == "conf_change"
    assert ConfChange.decode(history[0].command) == ConfChange(ConfChangeType.ADD_NODE, 1)
    assert history[1].kind == "entry" and history[1].command == b""
    assert [e.command for e in history[2:]] == [_session(k) for k in range(5)]
    # Entries read back from the log carry no result.
    assert all(e.result is None for e in history)
    # Live entries: the result the proposer got, and the error of a refused command.
    assert await client.propose("mqtt", _session(1)) == {"replaced": True}
    bad = encode_command("session.set", client_id="x")
    with pytest.raises(InvalidMetaCommand, match="expiry_interval"):
        await client.propose("mqtt", bad)
    live = await _take(stream, 2)
    await stream.aclose()
    assert [e.index for e in live] == [8, 9]
    assert live[0].result == {"replaced": True} and live[0].error_kind == ""
    assert live[1].command == bad and live[1].error_kind == "InvalidMetaCommand"
    assert _replay(history + live).read("sessions") == await client.read("mqtt", "sessions")
    assert server.host.groups["mqtt"].watchers == []  # the closed stream let go


async def test_a_compacted_index_is_served_as_the_snapshot_then_entries(
    single: tuple[MetaServer, MetaClient],
) -> None:
    server, client = single
    address = client.addresses[0]
    for k in range(20):
        await client.propose("mqtt", _session(k))
    index = await client.snapshot(address, "mqtt")
    assert index == server.host.groups["mqtt"].node.applied
    assert server.host.groups["mqtt"].store.first_index() == index + 1
    for k in range(20, 25):
        await client.propose("mqtt", _session(k))
    stream = client.watch("mqtt", 3)
    events = await _take(stream, 6)
    await stream.aclose()
    assert events[0].kind == "snapshot" and events[0].index == index
    assert [e.index for e in events[1:]] == list(range(index + 1, index + 6))
    sm = _replay(events)
    assert sorted(sm.read("sessions")) == sorted(f"c{k}" for k in range(25))
    # From an index past the snapshot, no snapshot is sent.
    stream = client.watch("mqtt", index + 2)
    (first,) = await _take(stream, 1)
    await stream.aclose()
    assert (first.kind, first.index) == ("entry", index + 2)


async def test_a_watcher_that_fell_behind_a_compaction_gets_the_snapshot(
    single: tuple[MetaServer, MetaClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(host_module, "WATCH_BUFFER", 4)
    server, client = single
    host = server.host
    watch = host.watch("mqtt", 1)
    for k in range(10):
        await client.propose("mqtt", _session(k))
    # Nobody reads it: the host holds four events for it and reads no further ahead.
    await until(lambda: len(watch.events) == 4, what="a full watch buffer")
    index = await host.snapshot("mqtt")
    events = list(await watch.next_events())
    await client.propose("mqtt", _session(10))
    while events[-1].index <= index:
        events += await asyncio.wait_for(watch.next_events(), 30)
    watch.close()
    assert [e.index for e in events[:4]] == [1, 2, 3, 4]
    assert (events[4].kind, events[4].index) == ("snapshot", index)
    assert events[5].index == index + 1
    replayed = [WatchEvent(e.kind, e.index, e.term, e.data) for e in events]
    assert sorted(_replay(replayed).read("sessions")) == sorted(f"c{k}" for k in range(11))


async def test_three_nodes_a_follower_serves_the_same_log(tmp_path: Path) -> None:
    c = GrpcCluster(tmp_path)
    for i in (1, 2, 3):
        await c.start(i)
    client = MetaClient(c.addresses, timeout=5.0)
    try:
        leader = await until(lambda: leader_of(c.hosts(), "mqtt"), what="an mqtt leader")
        follower = next(i for i in (1, 2, 3) if i != leader.config.node_id)
        for k in range(10):
            await client.propose("mqtt", _session(k))
        target = leader.groups["mqtt"].node.applied
        watcher = MetaClient([c.peers[follower - 1][1]], timeout=5.0)
        try:
            events = await _take(watcher.watch("mqtt"), target)
        finally:
            await watcher.close()
        log = leader.groups["mqtt"].store.entries(1, target + 1, 1 << 62)
        assert [(e.index, e.term, e.data) for e in log] == [
            (e.index, e.term, e.command) for e in events
        ]
    finally:
        await client.close()
        for i in list(c.servers):
            await c.stop(i)


async def test_the_watched_node_stopping_mid_stream_loses_and_repeats_nothing(
    tmp_path: Path,
) -> None:
    c = GrpcCluster(tmp_path)
    for i in (1, 2, 3):
        await c.start(i)
    writer = MetaClient(c.addresses, timeout=5.0)
    try:
        leader = await until(lambda: leader_of(c.hosts(), "mqtt"), what="an mqtt leader")
        lead = leader.config.node_id
        watched = next(i for i in (1, 2, 3) if i != lead)
        other = next(i for i in (1, 2, 3) if i not in (lead, watched))
        order = [c.peers[watched - 1][1], c.peers[other - 1][1], c.peers[lead - 1][1]]
        watcher = MetaClient(order, timeout=5.0, backoff=0.05)
        events: list[WatchEvent] = []
        stopped = asyncio.Event()

        async def consume() -> None:
            async for ev in watcher.watch("mqtt"):
                events.append(ev)
                if len(events) == 40:
                    stopped.set()
                if ev.kind == "entry" and ev.command == _session(299):
                    return

        async def write() -> None:
            for k in range(300):
                await writer.propose("mqtt", _session(k))
                if k == 60:
                    await asyncio.wait_for(stopped.wait(), 60)
                    await c.stop(watched)

        try:
            async with asyncio.timeout(90):
                await asyncio.gather(consume(), write())
        finally:
            await watcher.close()
        assert watched not in c.servers  # it was stopped while streaming
        assert events[0].index == 1
        _assert_contiguous(events)
        commands = [e.command for e in events if e.kind == "entry" and e.command]
        assert commands == [_session(k) for k in range(300)]
        assert _replay(events).read("sessions") == await writer.read("mqtt", "sessions")
    finally:
        await writer.close()
        for i in list(c.servers):
            await c.stop(i)


async def test_errors_a_watch_can_end_with(single: tuple[MetaServer, MetaClient]) -> None:
    server, client = single
    with pytest.raises(UnknownMetaGroup, match="kafka"):
        await _take(client.watch("kafka"), 1)
    nobody = MetaClient([f"127.0.0.1:{free_port()}"], timeout=0.5, retries=2, backoff=0.01)
    try:
        with pytest.raises(MetaUnavailable, match="after 2 attempts"):
            await _take(nobody.watch("mqtt"), 1)
    finally:
        await nobody.close()
    # A watch waiting for entries ends with MetaUnavailable when its node stops.
    watch = server.host.watch("mqtt", 10_000)
    waiter: asyncio.Task[Any] = asyncio.create_task(watch.next_events())
    await asyncio.sleep(0)
    await server.host.stop()
    with pytest.raises(MetaUnavailable, match="stopped"):
        await asyncio.wait_for(waiter, 10)
