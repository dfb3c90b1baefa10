"""The Meta Service over gRPC (``robustmq/proto/meta.proto``): server and Raft transport.

``MetaServer`` serves, on one ``grpc.aio`` server, the ``RaftTransport`` service (batches
of encoded Raft messages from peers, handed to ``MultiRaftHost.receive``) and the
``MetaService`` (Propose, Read, Status) brokers reach through ``meta/client.py``. Errors
travel in ``MetaReply.error`` by their class name in ``robustmq/errors.py``, so the client
raises the same class. ``GrpcTransport`` is the host's ``Transport`` to peers: per peer one
queue and one sender task, so all groups' messages queued while a call is in flight go out
together in the next call. The Raft loop itself is ``meta/host.py``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import grpc
import orjson

from robustmq.errors import ConfigError, MetaError, RaftError
from robustmq.meta.client import CHANNEL_OPTIONS
from robustmq.meta.codec import decode_message, encode_message
from robustmq.meta.host import HostConfig, MultiRaftHost
from robustmq.meta.raft import Message
from robustmq.proto import meta_pb2, meta_pb2_grpc

log = logging.getLogger("robustmq.meta")

# Messages queued for one unreachable peer beyond this are dropped oldest first: Raft
# resends what matters (probe, heartbeat, snapshot retry) once the peer answers again.
MAX_QUEUED_PER_PEER = 10_000
SEND_TIMEOUT = 5.0
RETRY_DELAY = 0.05


class GrpcTransport:
    """``Transport`` to the peers' ``RaftTransport`` services; ``close()`` stops it."""

    def __init__(self, node_id: int, addresses: dict[int, str]) -> None:
        self.node_id = node_id
        self.addresses = {i: a for i, a in addresses.items() if i != node_id}
        self._queues: dict[int, list[Message]] = {i: [] for i in self.addresses}
        self._ready = {i: asyncio.Event() for i in self.addresses}
        self._channels: dict[int, grpc.aio.Channel] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        for peer, address in self.addresses.items():
            self._channels[peer] = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
            self._tasks.append(loop.create_task(self._sender(peer), name=f"raft-send-{peer}"))

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
                from_node=self.node_id, messages=[encode_message(m) for m in batch]
            )
            try:
                await stub.Send(request, timeout=SEND_TIMEOUT)
            except grpc.aio.AioRpcError as exc:
                # Lost messages are Raft's normal weather; pause so a dead peer costs
                # one failed call per RETRY_DELAY, not a busy loop.
                log.debug("raft batch to node %d failed: %s", peer, exc.code())
                await asyncio.sleep(RETRY_DELAY)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for channel in self._channels.values():
            await channel.close()
        self._tasks = []


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
        self.host.receive(messages)
        return meta_pb2.RaftAck()


class _MetaService(meta_pb2_grpc.MetaServiceServicer):
    def __init__(self, host: MultiRaftHost) -> None:
        self.host = host

    async def Propose(self, request: meta_pb2.ProposeRequest, context: Any) -> meta_pb2.MetaReply:  # noqa: N802
        try:
            result = await self.host.propose(
                request.group, request.command, _timeout(request.timeout_ms)
            )
        except MetaError as exc:
            return _error_reply(exc)
        return meta_pb2.MetaReply(result=orjson.dumps(result))

    async def Read(self, request: meta_pb2.ReadRequest, context: Any) -> meta_pb2.MetaReply:  # noqa: N802
        try:
            result = await self.host.read(request.group, request.key, _timeout(request.timeout_ms))
        except MetaError as exc:
            return _error_reply(exc)
        return meta_pb2.MetaReply(result=orjson.dumps(result))

    async def Status(self, request: meta_pb2.StatusRequest, context: Any) -> meta_pb2.StatusReply:  # noqa: N802
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
            )
            for s in self.host.status()
        ]
        return meta_pb2.StatusReply(node_id=self.host.config.node_id, groups=groups)


class MetaServer:
    """A ``MultiRaftHost`` with its gRPC server and transport: one meta node.

    ``bind`` is "host:port"; None runs no gRPC server (a single node with gRPC disabled).
    ``port`` is the port listened on once started."""

    def __init__(self, host: MultiRaftHost, transport: GrpcTransport, bind: str | None) -> None:
        self.host = host
        self.transport = transport
        self.bind = bind
        self.port = 0
        self._server: grpc.aio.Server | None = None
        if bind is not None:
            self._server = grpc.aio.server(options=CHANNEL_OPTIONS)
            meta_pb2_grpc.add_RaftTransportServicer_to_server(
                _RaftTransportService(host), self._server
            )
            meta_pb2_grpc.add_MetaServiceServicer_to_server(_MetaService(host), self._server)

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

    With ``peers``, this node listens on the port of its own entry; without, it is a
    one-member group (through the same code path) listening on ``grpc_port``, or on
    nothing when that is 0."""
    bind: str | None
    if peers:
        addresses = dict(peers)
        if node_id not in addresses:
            raise ConfigError(
                "cluster.peers", [f"{i}@{a}" for i, a in peers], f"an entry for node {node_id}"
            )
        if grpc_port == 0:
            raise ConfigError("cluster.grpc_port", 0, "a port > 0 when cluster.peers is set")
        bind = f"{bind_host}:{addresses[node_id].rpartition(':')[2]}"
    else:
        advertised = "127.0.0.1" if bind_host in ("0.0.0.0", "::", "") else bind_host
        peers = ((node_id, f"{advertised}:{grpc_port}"),)
        bind = f"{bind_host}:{grpc_port}" if grpc_port else None
    config = HostConfig(node_id=node_id, peers=peers, data_dir=data_dir)
    transport = GrpcTransport(node_id, config.addresses)
    server = MetaServer(MultiRaftHost(config, transport), transport, bind)
    await server.start()
    return server
