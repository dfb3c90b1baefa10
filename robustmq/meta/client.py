"""``MetaClient``: the only way a broker talks to the Meta Service (over gRPC).

It knows the meta nodes' addresses, remembers each group's leader, follows ``NotLeader``
redirects, and retries what is retriable (an unreachable node, no leader yet, a timeout)
up to ``retries`` times with a short backoff before raising ``MetaUnavailable``. The group
commands are idempotent puts and deletes (``robustmq/meta/groups``), which is what makes
retrying a proposal whose outcome is unknown safe. The server side is ``meta/service.py``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import grpc
import orjson

from robustmq import errors
from robustmq.errors import ConfigError, MetaError, MetaUnavailable, NotLeader
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
            )
            for g in reply.groups
        ]
        return reply.node_id, groups

    async def _call(self, group: str, rpc: Any) -> Any:
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
                if not exc.retriable:
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
