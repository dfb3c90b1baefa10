"""The Meta Service over gRPC (``robustmq/proto/meta.proto``): server and Raft transport.

``MetaServer`` serves, on one ``grpc.aio`` server, the ``RaftTransport`` service (batches
of encoded Raft messages from peers, handed to ``MultiRaftHost.receive``) and the
``MetaService`` (Propose, Read, Status, the Watch stream, AddNode/RemoveNode, Snapshot)
brokers and operators reach through ``meta/client.py``. Errors travel in
``MetaReply.error`` by their class name in ``robustmq/errors.py``, so the client raises
the same class. ``GrpcTransport`` is the host's ``Transport`` to peers: per peer one queue
and one sender task, so all groups' messages queued while a call is in flight go out
together in the next call; peers added by a membership change get theirs on the fly.
``RpcStats`` counts the MetaService's requests and their latency per method (plain
integers, read by ``/metrics``). The same server carries the brokers' node-to-node
traffic: ``/robustmq.BrokerLink/Forward``, a stream per sending node of raw-bytes frames
handed to ``forward_sink``
(framed and read by ``robustmq/broker/mqtt/cluster_link.py``). The Raft loop itself is
``meta/host.py``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import orjson

from robustmq.errors import ConfigError, ForwardFrameError, ForwardNotReady, MetaError, RaftError
from robustmq.meta.client import CHANNEL_OPTIONS
from robustmq.meta.codec import decode_message, encode_message
from robustmq.meta.host import HostConfig, MultiRaftHost, WatchEvent
from robustmq.meta.raft import Message
from robustmq.observability.latency import LatencyHistogram
from robustmq.proto import meta_pb2, meta_pb2_grpc

log = logging.getLogger("robustmq.meta")

# Messages queued for one unreachable peer beyond this are dropped oldest first: Raft
# resends what matters (probe, heartbeat, snapshot retry) once the peer answers again.
MAX_QUEUED_PER_PEER = 10_000
SEND_TIMEOUT = 5.0
RETRY_DELAY = 0.05
_WATCH_KINDS = {
    "entry": meta_pb2.WatchEvent.ENTRY,
    "conf_change": meta_pb2.WatchEvent.CONF_CHANGE,
    "snapshot": meta_pb2.WatchEvent.SNAPSHOT,
}


class GrpcTransport:
    """``Transport`` to the peers' ``RaftTransport`` services; ``close()`` stops it."""

    def __init__(self, node_id: int, addresses: dict[int, str]) -> None:
        self.node_id = node_id
        self.address = addresses.get(node_id, "")
        self.addresses = {i: a for i, a in addresses.items() if i != node_id}
        self._queues: dict[int, list[Message]] = {i: [] for i in self.addresses}
        self._ready = {i: asyncio.Event() for i in self.addresses}
        self._channels: dict[int, grpc.aio.Channel] = {}
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._started = False

    def start(self) -> None:
        self._started = True
        for peer in self.addresses:
            self._connect(peer)

    def _connect(self, peer: int) -> None:
        loop = asyncio.get_running_loop()
        self._channels[peer] = grpc.aio.insecure_channel(
            self.addresses[peer], options=CHANNEL_OPTIONS
        )
        self._tasks[peer] = loop.create_task(self._sender(peer), name=f"raft-send-{peer}")

    def set_address(self, node_id: int, address: str) -> None:
        if node_id == self.node_id or self.addresses.get(node_id) == address:
            return
        self.addresses[node_id] = address
        self._queues.setdefault(node_id, [])
        self._ready.setdefault(node_id, asyncio.Event())
        if not self._started:
            return
        old_task, old_channel = self._tasks.pop(node_id, None), self._channels.pop(node_id, None)
        if old_task is not None:
            old_task.cancel()
        if old_channel is not None:
            asyncio.get_running_loop().create_task(old_channel.close())
        self._connect(node_id)
        self._ready[node_id].set()

    def send(self, to: int, messages: list[Message]) -> None:
        queue = self._queues.get(to)
        if queue is None:
            log.warning("raft message for unknown node %d dropped", to)
            return
        queue.extend(messages)
        if len(queue) > MAX_QUEUED_PER_PEER:
            del queue[: len(queue) - MAX_QUEUED_PER_PEER]
        self._ready[to].set()

    async def _sender(self, peer: int) -> None:
        stub = meta_pb2_grpc.RaftTransportStub(self._channels[peer])
        while True:
            await self._ready[peer].wait()
            self._ready[peer].clear()
            batch, self._queues[peer] = self._queues[peer], []
            if not batch:
                continue
            request = meta_pb2.RaftBatch(
                from_node=self.node_id,
                messages=[encode_message(m) for m in batch],
                from_address=self.address,
            )
            try:
                await stub.Send(request, timeout=SEND_TIMEOUT)
            except grpc.aio.AioRpcError as exc:
                # Lost messages are Raft's normal weather; pause so a dead peer costs
                # one failed call per RETRY_DELAY, not a busy loop.
                log.debug("raft batch to node %d failed: %s", peer, exc.code())
                await asyncio.sleep(RETRY_DELAY)

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for channel in self._channels.values():
            await channel.close()
        self._tasks = {}
        self._started = False


# The MetaService's methods, numbered for ``RpcStats``.
METHODS = ("Propose", "Read", "Status", "Watch", "AddNode", "RemoveNode", "Snapshot")
PROPOSE, READ, STATUS, WATCH, ADD_NODE, REMOVE_NODE, SNAPSHOT = range(len(METHODS))


class RpcStats:
    """MetaService requests answered and their time, per method (``/metrics``): every
    request is timed, except a Watch stream, which is only counted."""

    __slots__ = ("latency", "requests")

    def __init__(self) -> None:
        self.requests = [0] * len(METHODS)
        self.latency = LatencyHistogram(len(METHODS), 1)

    def observe(self, method: int, seconds: float) -> None:
        self.requests[method] += 1
        self.latency.record(method, int(seconds * 1e9))


def _error_reply(exc: MetaError) -> meta_pb2.MetaReply:
    return meta_pb2.MetaReply(
        error=meta_pb2.MetaErrorReply(
            kind=type(exc).__name__,
            message=str(exc),
            leader_id=getattr(exc, "leader_id", 0),
            leader_address=getattr(exc, "leader_address", ""),
        )
    )


def _timeout(ms: int) -> float | None:
    return ms / 1000 if ms else None


class _RaftTransportService(meta_pb2_grpc.RaftTransportServicer):
    def __init__(self, host: MultiRaftHost) -> None:
        self.host = host

    async def Send(self, request: meta_pb2.RaftBatch, context: Any) -> meta_pb2.RaftAck:  # noqa: N802
        try:
            messages = [decode_message(b) for b in request.messages]
        except RaftError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        self.host.receive(messages, request.from_node, request.from_address)
        return meta_pb2.RaftAck()


def _event(e: WatchEvent) -> meta_pb2.WatchEvent:
    return meta_pb2.WatchEvent(
        kind=_WATCH_KINDS[e.kind],
        index=e.index,
        term=e.term,
        data=e.data,
        result=e.result,
        error_kind=e.error_kind,
    )


class _MetaService(meta_pb2_grpc.MetaServiceServicer):
    def __init__(self, host: MultiRaftHost, stats: RpcStats) -> None:
        self.host = host
        self.stats = stats

    async def _reply(self, method: int, work: Any) -> meta_pb2.MetaReply:
        loop = asyncio.get_running_loop()
        start = loop.time()
        try:
            reply = meta_pb2.MetaReply(result=orjson.dumps(await work))
        except MetaError as exc:
            reply = _error_reply(exc)
        self.stats.observe(method, loop.time() - start)
        return reply

    async def Propose(self, request: meta_pb2.ProposeRequest, context: Any) -> meta_pb2.MetaReply:  # noqa: N802
        timeout = _timeout(request.timeout_ms)
        return await self._reply(
            PROPOSE, self.host.propose(request.group, request.command, timeout)
        )

    async def Read(self, request: meta_pb2.ReadRequest, context: Any) -> meta_pb2.MetaReply:  # noqa: N802
        timeout = _timeout(request.timeout_ms)
        return await self._reply(READ, self.host.read(request.group, request.key, timeout))

    async def AddNode(  # noqa: N802
        self, request: meta_pb2.MembershipRequest, context: Any
    ) -> meta_pb2.MetaReply:
        work = self.host.add_node(
            request.group, request.node_id, request.address, _timeout(request.timeout_ms)
        )
        return await self._reply(ADD_NODE, work)

    async def RemoveNode(  # noqa: N802
        self, request: meta_pb2.MembershipRequest, context: Any
    ) -> meta_pb2.MetaReply:
        work = self.host.remove_node(request.group, request.node_id, _timeout(request.timeout_ms))
        return await self._reply(REMOVE_NODE, work)

    async def Snapshot(  # noqa: N802
        self, request: meta_pb2.SnapshotRequest, context: Any
    ) -> meta_pb2.MetaReply:
        async def snapshot() -> dict[str, int]:
            return {"index": await self.host.snapshot(request.group)}

        return await self._reply(SNAPSHOT, snapshot())

    async def Watch(  # noqa: N802
        self, request: meta_pb2.WatchRequest, context: Any
    ) -> AsyncIterator[meta_pb2.WatchEvent]:
        self.stats.requests[WATCH] += 1  # a stream has no one latency: counted only
        try:
            watch = self.host.watch(request.group, request.from_index)
        except MetaError as exc:
            yield meta_pb2.WatchEvent(error=_error_reply(exc).error)
            return
        try:
            while True:
                try:
                    events = await watch.next_events()
                except MetaError as exc:
                    yield meta_pb2.WatchEvent(error=_error_reply(exc).error)
                    return
                for e in events:
                    yield _event(e)
        finally:
            watch.close()

    async def Status(self, request: meta_pb2.StatusRequest, context: Any) -> meta_pb2.StatusReply:  # noqa: N802
        start = asyncio.get_running_loop().time()
        groups = [
            meta_pb2.GroupStatus(
                group=s["group"],
                role=s["role"],
                leader_id=s["leader_id"],
                leader_address=s["leader_address"],
                term=s["term"],
                commit=s["commit"],
                applied=s["applied"],
                snapshot_index=s["snapshot_index"],
                voters=s["voters"],
                learners=s["learners"],
            )
            for s in self.host.status()
        ]
        self.stats.observe(STATUS, asyncio.get_running_loop().time() - start)
        return meta_pb2.StatusReply(node_id=self.host.config.node_id, groups=groups)


class MetaServer:
    """A ``MultiRaftHost`` with its gRPC server and transport: one meta node.

    ``bind`` is "host:port"; None runs no gRPC server (a single node with gRPC disabled).
    ``port`` is the port listened on once started. ``forward_sink`` takes the frames other
    brokers forward (set by the node once its broker runs: until then they are refused
    as UNAVAILABLE and the sender tries again)."""

    def __init__(self, host: MultiRaftHost, transport: GrpcTransport, bind: str | None) -> None:
        self.host = host
        self.transport = transport
        self.bind = bind
        self.port = 0
        self.stats = RpcStats()
        self._server: grpc.aio.Server | None = None
        if bind is not None:
            self._server = grpc.aio.server(options=CHANNEL_OPTIONS)
            meta_pb2_grpc.add_RaftTransportServicer_to_server(
                _RaftTransportService(host), self._server
            )
            meta_pb2_grpc.add_MetaServiceServicer_to_server(
                _MetaService(host, self.stats), self._server
            )
            forward = grpc.stream_stream_rpc_method_handler(self._forward)  # raw bytes
            self._server.add_generic_rpc_handlers(
                (grpc.method_handlers_generic_handler("robustmq.BrokerLink", {"Forward": forward}),)
            )
        self.forward_sink: Callable[[bytes], Awaitable[None]] | None = None

    async def _forward(
        self, frames: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        """One stream per sending node: each frame handed to ``forward_sink``, then
        answered with an empty message."""
        async for frame in frames:
            sink = self.forward_sink
            if sink is None:
                await context.abort(
                    grpc.StatusCode.UNAVAILABLE, "this node's broker is not running"
                )
            try:
                await sink(frame)  # type: ignore[misc]
            except ForwardFrameError as exc:
                log.warning("a forwarded frame was refused: %s", exc)
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            except ForwardNotReady as exc:
                await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
            yield b""

    async def start(self) -> None:
        if self._server is not None and self.bind is not None:
            self.port = self._server.add_insecure_port(self.bind)
            if self.port == 0:
                raise OSError(f"meta gRPC server cannot listen on {self.bind}")
            await self._server.start()
        self.transport.start()
        await self.host.start()

    async def stop(self, grace: float = 0.5) -> None:
        if self._server is not None:
            await self._server.stop(grace)
        await self.host.stop()
        await self.transport.close()


async def start_meta_node(
    node_id: int,
    peers: tuple[tuple[int, str], ...],
    bind_host: str,
    grpc_port: int,
    data_dir: str,
) -> MetaServer:
    """Start the meta role of a node (the ``[cluster]`` section's values).

    With ``peers`` naming this node, it listens on the port of its own entry (and a new
    data directory bootstraps the groups with ``peers`` as voters). With ``peers`` not
    naming it, it joins that cluster: it listens on ``grpc_port`` and takes part once a
    member adds it (``robustmq-ctl cluster node add``). Without ``peers``, it is a
    one-member group (through the same code path) listening on ``grpc_port``, or on
    nothing when that is 0."""
    bind: str | None
    join = False
    advertised = "127.0.0.1" if bind_host in ("0.0.0.0", "::", "") else bind_host
    if peers:
        if grpc_port == 0:
            raise ConfigError("cluster.grpc_port", 0, "a port > 0 when cluster.peers is set")
        addresses = dict(peers)
        if node_id not in addresses:
            join = True
            peers = (*peers, (node_id, f"{advertised}:{grpc_port}"))
            addresses[node_id] = f"{advertised}:{grpc_port}"
        bind = f"{bind_host}:{addresses[node_id].rpartition(':')[2]}"
    else:
        peers = ((node_id, f"{advertised}:{grpc_port}"),)
        bind = f"{bind_host}:{grpc_port}" if grpc_port else None
    config = HostConfig(node_id=node_id, peers=peers, data_dir=data_dir, join=join)
    transport = GrpcTransport(node_id, config.addresses)
    server = MetaServer(MultiRaftHost(config, transport), transport, bind)
    await server.start()
    return server
