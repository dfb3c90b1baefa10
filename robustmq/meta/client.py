"""``MetaClient``: the only way a broker talks to the Meta Service (over gRPC).

It knows the meta nodes' addresses, remembers each group's leader, follows ``NotLeader``
redirects, and retries what is retriable (an unreachable node, no leader yet, a timeout)
up to ``retries`` times with a short backoff before raising ``MetaUnavailable``. The group
commands are idempotent puts and deletes (``robustmq/meta/groups``), which is what makes
retrying a proposal whose outcome is unknown safe; membership changes are idempotent too.
``watch`` is an async iterator over a group's applied entries that moves to another node
when its stream breaks and resumes after the last index it yielded. The server side is
``meta/service.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

import grpc
import orjson

from robustmq import errors
from robustmq.errors import ConfigError, MetaError, MetaTimeout, MetaUnavailable, NotLeader
from robustmq.proto import meta_pb2, meta_pb2_grpc

# gRPC's default 4 MiB limit would refuse a large read, or an InstallSnapshot of a large
# group forever (the server and the Raft transport use the same options).
MAX_MESSAGE_BYTES = 256 << 20
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
]

# A node down, starting, or too slow: another node (or the same one later) may answer.
RETRIABLE_CODES = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}
)


@dataclass(frozen=True, slots=True)
class GroupStatus:
    group: str
    role: str
    leader_id: int
    leader_address: str
    term: int
    commit: int
    applied: int
    snapshot_index: int
    voters: tuple[int, ...] = ()
    learners: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One applied entry of a watched group, or its state machine at ``index``.

    ``kind``: "entry" (``command``; empty for a new leader's no-op), "conf_change"
    (``command`` is an encoded ``robustmq.meta.raft.ConfChange``) or "snapshot"
    (``command`` is the state machine's ``snapshot()`` bytes, for ``restore``).
    ``result`` is the state machine's result when the serving node still had it (None
    otherwise, and for refused commands); ``error_kind`` names the ``MetaCommandError``
    a refused command got, when known."""

    kind: str
    index: int
    term: int
    command: bytes
    result: Any = None
    error_kind: str = ""


_KINDS = {
    meta_pb2.WatchEvent.ENTRY: "entry",
    meta_pb2.WatchEvent.CONF_CHANGE: "conf_change",
    meta_pb2.WatchEvent.SNAPSHOT: "snapshot",
}


def _raise_reply_error(err: meta_pb2.MetaErrorReply) -> None:
    cls = getattr(errors, err.kind, None)
    if cls is NotLeader:
        raise NotLeader(err.message, err.leader_id, err.leader_address)
    if isinstance(cls, type) and issubclass(cls, MetaError):
        raise cls(err.message)
    raise MetaError(f"{err.kind}: {err.message}")


class MetaClient:
    """``addresses``: "host:port" of the meta nodes' gRPC servers. ``timeout`` bounds
    each call; ``retries`` bounds the attempts of one operation."""

    def __init__(
        self,
        addresses: list[str],
        *,
        timeout: float = 5.0,
        retries: int = 20,
        backoff: float = 0.05,
    ) -> None:
        if not addresses:
            raise ConfigError("meta.addresses", addresses, "at least one host:port")
        if timeout <= 0 or retries < 1 or backoff < 0:
            raise ConfigError(
                "meta.client", (timeout, retries, backoff), "timeout > 0, retries >= 1"
            )
        self.addresses = list(addresses)
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self._leaders: dict[str, str] = {}
        self._next = 0
        self._channels: dict[str, grpc.aio.Channel] = {}

    def _stub(self, address: str) -> meta_pb2_grpc.MetaServiceStub:
        channel = self._channels.get(address)
        if channel is None:
            channel = self._channels[address] = grpc.aio.insecure_channel(
                address, options=CHANNEL_OPTIONS
            )
        return meta_pb2_grpc.MetaServiceStub(channel)

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels = {}

    async def propose(self, group: str, command: bytes) -> Any:
        """Replicate ``command`` (``robustmq.meta.groups.encode_command``) in ``group``
        and return its result."""
        ms = int(self.timeout * 1000)
        return await self._call(
            group,
            lambda stub: stub.Propose(
                meta_pb2.ProposeRequest(group=group, command=command, timeout_ms=ms),
                timeout=self.timeout + 1,
            ),
        )

    async def read(self, group: str, key: str) -> Any:
        """A linearizable read of ``"<table>"`` or ``"<table>/<name>"`` in ``group``."""
        ms = int(self.timeout * 1000)
        return await self._call(
            group,
            lambda stub: stub.Read(
                meta_pb2.ReadRequest(group=group, key=key, timeout_ms=ms), timeout=self.timeout + 1
            ),
        )

    async def status(self, address: str) -> tuple[int, list[GroupStatus]]:
        """The node id at ``address`` and its view of every group."""
        try:
            reply = await self._stub(address).Status(meta_pb2.StatusRequest(), timeout=self.timeout)
        except grpc.aio.AioRpcError as exc:
            raise MetaUnavailable(
                f"meta node {address}: {exc.code().name} {exc.details()}"
            ) from None
        groups = [
            GroupStatus(
                g.group,
                g.role,
                g.leader_id,
                g.leader_address,
                g.term,
                g.commit,
                g.applied,
                g.snapshot_index,
                tuple(g.voters),
                tuple(g.learners),
            )
            for g in reply.groups
        ]
        return reply.node_id, groups

    async def add_node(
        self, group: str, node_id: int, address: str, timeout: float = 60.0
    ) -> dict[str, list[int]]:
        """Make ``node_id`` at ``address`` a voter of ``group`` (a learner until it has
        caught up); returns the membership. ``timeout`` bounds the catch-up."""
        request = meta_pb2.MembershipRequest(
            group=group, node_id=node_id, address=address, timeout_ms=int(timeout * 1000)
        )
        # A timeout here is the new node not catching up: retrying would only wait again.
        result: dict[str, list[int]] = await self._call(
            group, lambda stub: stub.AddNode(request, timeout=timeout + 1), retry_timeout=False
        )
        return result

    async def remove_node(self, group: str, node_id: int) -> dict[str, list[int]]:
        """Take ``node_id`` out of ``group``; returns the membership."""
        request = meta_pb2.MembershipRequest(
            group=group, node_id=node_id, timeout_ms=int(self.timeout * 1000)
        )
        result: dict[str, list[int]] = await self._call(
            group, lambda stub: stub.RemoveNode(request, timeout=self.timeout + 1)
        )
        return result

    async def snapshot(self, address: str, group: str) -> int:
        """Make the node at ``address`` snapshot ``group`` now (compacting its log); the
        snapshot's index."""
        try:
            reply = await self._stub(address).Snapshot(
                meta_pb2.SnapshotRequest(group=group), timeout=self.timeout
            )
        except grpc.aio.AioRpcError as exc:
            raise MetaUnavailable(
                f"meta node {address}: {exc.code().name} {exc.details()}"
            ) from None
        if reply.HasField("error"):
            _raise_reply_error(reply.error)
        index: int = orjson.loads(reply.result)["index"]
        return index

    async def watch(self, group: str, from_index: int = 1) -> AsyncGenerator[WatchEvent, None]:
        """Every entry applied in ``group`` from ``from_index`` on, in index order, each
        once (a "snapshot" event first when a node has compacted that index away).

        Any member serves it. When a stream breaks (the node stops, is unreachable, or
        fails) the next address is tried and the stream resumes after the last index
        yielded; ``MetaUnavailable`` after ``retries`` attempts in a row yield nothing.
        Errors that retrying cannot fix (an unknown group) are raised at once."""
        next_index = max(from_index, 1)
        failures = 0
        last: BaseException | None = None
        k = self._next
        while failures < self.retries:
            address = self.addresses[k % len(self.addresses)]
            call = self._stub(address).Watch(
                meta_pb2.WatchRequest(group=group, from_index=next_index)
            )
            try:
                async for ev in call:
                    if ev.HasField("error"):
                        _raise_reply_error(ev.error)
                    if ev.kind == meta_pb2.WatchEvent.SNAPSHOT:
                        next_index = ev.index + 1
                    elif ev.index != next_index:
                        raise MetaError(
                            f"watch of {group!r} at {address}: index {ev.index} "
                            f"where {next_index} was due"
                        )
                    else:
                        next_index += 1
                    failures = 0
                    yield WatchEvent(
                        _KINDS[ev.kind],
                        ev.index,
                        ev.term,
                        ev.data,
                        orjson.loads(ev.result) if ev.result else None,
                        ev.error_kind,
                    )
                last = MetaUnavailable(f"meta node {address} ended the watch stream")
            except MetaError as exc:
                if not exc.retriable:
                    raise
                last = exc
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in RETRIABLE_CODES:
                    raise MetaError(
                        f"meta node {address}: {exc.code().name} {exc.details()}"
                    ) from None
                last = exc
            finally:
                call.cancel()
            failures += 1
            k += 1
            await asyncio.sleep(self.backoff)
        raise MetaUnavailable(
            f"watch of {group!r}: no meta node served it after {self.retries} attempts ({last})"
        )

    async def _call(self, group: str, rpc: Any, retry_timeout: bool = True) -> Any:
        last: BaseException | None = None
        for _ in range(self.retries):
            address = self._leaders.get(group)
            if address is None:
                address = self.addresses[self._next % len(self.addresses)]
            try:
                reply = await rpc(self._stub(address))
                if reply.HasField("error"):
                    _raise_reply_error(reply.error)
                return orjson.loads(reply.result)
            except NotLeader as exc:
                last = exc
                if exc.leader_address and exc.leader_address != address:
                    self._leaders[group] = exc.leader_address
                    continue
                self._forget(group, address)
            except MetaError as exc:
                if not exc.retriable or (isinstance(exc, MetaTimeout) and not retry_timeout):
                    raise
                last = exc
                self._forget(group, address)
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in RETRIABLE_CODES:
                    raise MetaError(
                        f"meta node {address}: {exc.code().name} {exc.details()}"
                    ) from None
                last = exc
                self._forget(group, address)
            await asyncio.sleep(self.backoff)
        raise MetaUnavailable(
            f"group {group!r}: no meta node answered after {self.retries} attempts ({last})"
        )

    def _forget(self, group: str, address: str) -> None:
        """Try another node next: this one is down or does not know a leader."""
        self._leaders.pop(group, None)
        if self.addresses[self._next % len(self.addresses)] == address:
            self._next += 1
