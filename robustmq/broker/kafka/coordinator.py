"""The group coordinator: the classic consumer-group protocol (JoinGroup, SyncGroup,
Heartbeat, LeaveGroup, ListGroups, DescribeGroups, DeleteGroups), in memory on this node.

A group moves Empty -> PreparingRebalance -> CompletingRebalance -> Stable, as in Kafka's
GroupCoordinator. A rebalance starts when a member joins, rejoins, leaves or misses its
session timeout; it completes when every known member has sent JoinGroup again, or after
the largest rebalance timeout, dropping those that did not. The coordinator then bumps
the generation, picks the protocol every member supports that most members prefer, and
answers the leader with every member's metadata: the client-side assignor decides who
gets what, and SyncGroup carries its decision to the others. Heartbeats tell members of
a rebalance (REBALANCE_IN_PROGRESS); stale generations get ILLEGAL_GENERATION. Group
membership is not persisted (committed offsets are, in ``offsets.py``); static membership
(group.instance.id) is accepted but treated like a dynamic member. DeleteGroups removes a
group without members and its committed offsets (stored as -1, Kafka's "no offset", since
the engine has no call to remove one); a group with members gets NON_EMPTY_GROUP, one that
has neither state nor offsets GROUP_ID_NOT_FOUND.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from robustmq._core.kafka_codec import RequestHeader
from robustmq.errors import (
    KafkaError,
    KafkaGroupIdNotFound,
    KafkaIllegalGeneration,
    KafkaInconsistentGroupProtocol,
    KafkaInvalidGroupId,
    KafkaInvalidSessionTimeout,
    KafkaNonEmptyGroup,
    KafkaRebalanceInProgress,
    KafkaUnknownMemberId,
    MetaError,
    StorageError,
    kafka_error_code,
)

if TYPE_CHECKING:
    from robustmq.broker.kafka.server import KafkaBroker, KafkaConnection

log = logging.getLogger(__name__)

# Kafka's group.min.session.timeout.ms and group.max.session.timeout.ms defaults.
MIN_SESSION_TIMEOUT_MS = 6_000
MAX_SESSION_TIMEOUT_MS = 1_800_000
EXPIRY_INTERVAL = 0.5  # seconds between session-timeout sweeps

EMPTY = "Empty"
PREPARING_REBALANCE = "PreparingRebalance"
COMPLETING_REBALANCE = "CompletingRebalance"
STABLE = "Stable"
DEAD = "Dead"


@dataclass
class Member:
    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    session_timeout_ms: int
    rebalance_timeout_ms: int
    protocols: list[tuple[str, bytes]]
    assignment: bytes = b""
    last_seen: float = field(default_factory=time.monotonic)
    join: asyncio.Future[dict[str, Any]] | None = None
    sync: asyncio.Future[dict[str, Any]] | None = None

    def waiting(self) -> bool:
        return any(f is not None and not f.done() for f in (self.join, self.sync))


@dataclass
class Group:
    group_id: str
    state: str = EMPTY
    generation: int = 0
    protocol_type: str | None = None
    protocol_name: str | None = None
    leader: str | None = None
    members: dict[str, Member] = field(default_factory=dict)
    timer: asyncio.TimerHandle | None = None


def _error(exc: KafkaError, **extra: Any) -> dict[str, Any]:
    return {"error_code": exc.code, **extra}


class GroupCoordinator:
    def __init__(self, broker: KafkaBroker) -> None:
        self.broker = broker
        self.groups: dict[str, Group] = {}

    # --- requests ---------------------------------------------------------------------
    async def join(self, conn: KafkaConnection, header: RequestHeader, req: dict[str, Any]) -> Any:
        group_id = req["group_id"]
        member_id = req["member_id"]
        fail = {"generation_id": -1, "member_id": member_id, "leader": "", "members": []}
        if not group_id:
            return _error(KafkaInvalidGroupId("empty group id"), **fail)
        session = req["session_timeout_ms"]
        if not MIN_SESSION_TIMEOUT_MS <= session <= MAX_SESSION_TIMEOUT_MS:
            return _error(KafkaInvalidSessionTimeout(f"{session} ms"), **fail)
        protocols = [(p["name"], p["metadata"]) for p in req["protocols"]]
        group = self.groups.setdefault(group_id, Group(group_id))
        if not protocols or (
            group.members
            and (
                req["protocol_type"] != group.protocol_type
                or not self._candidates(group, {name for name, _ in protocols})
            )
        ):
            return _error(KafkaInconsistentGroupProtocol(group_id), **fail)
        if member_id and member_id not in group.members:
            return _error(KafkaUnknownMemberId(member_id), **fail)
        if not member_id:
            member_id = f"{header.client_id or 'consumer'}-{uuid.uuid4()}"
        rebalance = req["rebalance_timeout_ms"]
        member = group.members.get(member_id)
        if member is None:
            member = Member(
                member_id,
                req.get("group_instance_id"),
                header.client_id or "",
                "/" + conn.peer.rpartition(":")[0],
                session,
                rebalance if rebalance > 0 else session,
                protocols,
            )
            group.members[member_id] = member
            log.info("kafka group %s: member %s joined", group_id, member_id)
        else:
            member.protocols = protocols
        member.last_seen = time.monotonic()
        group.protocol_type = req["protocol_type"]
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        member.join = fut
        if group.state != PREPARING_REBALANCE:
            self._prepare_rebalance(group)
        self._maybe_complete_join(group)
        return await fut

    async def sync(self, conn: KafkaConnection, header: RequestHeader, req: dict[str, Any]) -> Any:
        group = self.groups.get(req["group_id"])
        member_id = req["member_id"]
        try:
            if group is None or member_id not in group.members:
                raise KafkaUnknownMemberId(member_id)
            if req["generation_id"] != group.generation:
                raise KafkaIllegalGeneration(f"generation {req['generation_id']}")
            if group.state == PREPARING_REBALANCE:
                raise KafkaRebalanceInProgress(group.group_id)
        except KafkaError as exc:
            return _error(exc, assignment=b"")
        member = group.members[member_id]
        member.last_seen = time.monotonic()
        if group.state == STABLE:
            return self._sync_answer(group, member)
        if member_id == group.leader:
            chosen = {a["member_id"]: a["assignment"] for a in req["assignments"]}
            for m in group.members.values():
                m.assignment = chosen.get(m.member_id, b"")
            group.state = STABLE
            log.info(
                "kafka group %s: generation %d stable with %d members",
                group.group_id,
                group.generation,
                len(group.members),
            )
            for m in group.members.values():
                if m.sync is not None and not m.sync.done():
                    m.sync.set_result(self._sync_answer(group, m))
                m.sync = None
            return self._sync_answer(group, member)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        member.sync = fut
        return await fut

    def heartbeat(self, req: dict[str, Any]) -> dict[str, Any]:
        group = self.groups.get(req["group_id"])
        member = group.members.get(req["member_id"]) if group is not None else None
        try:
            if group is None or member is None:
                raise KafkaUnknownMemberId(req["member_id"])
            member.last_seen = time.monotonic()
            if req["generation_id"] != group.generation:
                raise KafkaIllegalGeneration(f"generation {req['generation_id']}")
            if group.state == PREPARING_REBALANCE:
                raise KafkaRebalanceInProgress(group.group_id)
        except KafkaError as exc:
            return _error(exc)
        return {"error_code": 0}

    def leave(self, header: RequestHeader, req: dict[str, Any]) -> dict[str, Any]:
        group = self.groups.get(req["group_id"])
        if header.api_version < 3:
            leaving = [{"member_id": req["member_id"], "group_instance_id": None}]
        else:
            leaving = req["members"]
        results = []
        for m in leaving:
            known = group is not None and m["member_id"] in group.members
            code = 0 if known else KafkaUnknownMemberId.code
            results.append({**m, "error_code": code})
        gone = [
            m["member_id"] for m, r in zip(leaving, results, strict=True) if not r["error_code"]
        ]
        if group is not None and gone:
            self._remove(group, gone, "left the group")
        top = results[0]["error_code"] if header.api_version < 3 and results else 0
        return {"error_code": top, "members": results}

    def list_groups(self, req: dict[str, Any]) -> dict[str, Any]:
        wanted = {s.lower() for s in req.get("states_filter") or []}
        return {
            "error_code": 0,
            "groups": [
                {
                    "group_id": g.group_id,
                    "protocol_type": g.protocol_type or "",
                    "group_state": g.state,
                }
                for g in self.groups.values()
                if g.state != DEAD and (not wanted or g.state.lower() in wanted)
            ],
        }

    def describe_groups(self, req: dict[str, Any]) -> dict[str, Any]:
        out = []
        for group_id in req["groups"]:
            g = self.groups.get(group_id)
            if g is None:
                out.append({"error_code": 0, "group_id": group_id, "group_state": DEAD})
                continue
            stable = g.state == STABLE
            out.append(
                {
                    "error_code": 0,
                    "group_id": group_id,
                    "group_state": g.state,
                    "protocol_type": g.protocol_type or "",
                    "protocol_data": g.protocol_name or "",
                    "members": [
                        {
                            "member_id": m.member_id,
                            "group_instance_id": m.group_instance_id,
                            "client_id": m.client_id,
                            "client_host": m.client_host,
                            "member_metadata": dict(m.protocols).get(g.protocol_name or "", b"")
                            if stable
                            else b"",
                            "member_assignment": m.assignment if stable else b"",
                        }
                        for m in g.members.values()
                    ],
                }
            )
        return {"groups": out}

    def check_commit(self, group_id: str, member_id: str, generation: int) -> None:
        """Raise the error an OffsetCommit from this member and generation gets; commits
        with generation -1 (consumers outside a group) are always accepted."""
        if generation < 0:
            return
        group = self.groups.get(group_id)
        if group is None or member_id not in group.members:
            raise KafkaUnknownMemberId(member_id)
        if generation != group.generation:
            raise KafkaIllegalGeneration(f"generation {generation}")
        if group.state == COMPLETING_REBALANCE:
            raise KafkaRebalanceInProgress(group_id)

    # --- the state machine --------------------------------------------------------------
    def _candidates(self, group: Group, extra: set[str] | None = None) -> list[str]:
        """Protocols every member (and ``extra``, a joining member's) supports, in the
        order of the first member's preference."""
        members = list(group.members.values())
        if not members:
            return sorted(extra or ())
        common = {name for name, _ in members[0].protocols}
        for m in members[1:]:
            common &= {name for name, _ in m.protocols}
        if extra is not None:
            common &= extra
        return [name for name, _ in members[0].protocols if name in common]

    def _prepare_rebalance(self, group: Group) -> None:
        for m in group.members.values():
            if m.sync is not None and not m.sync.done():
                m.sync.set_result(_error(KafkaRebalanceInProgress(group.group_id), assignment=b""))
            m.sync = None
        group.state = PREPARING_REBALANCE
        if group.timer is not None:
            group.timer.cancel()
        timeout = max((m.rebalance_timeout_ms for m in group.members.values()), default=0)
        group.timer = asyncio.get_running_loop().call_later(
            timeout / 1000, self._complete_join, group
        )

    def _maybe_complete_join(self, group: Group) -> None:
        if group.state == PREPARING_REBALANCE and all(
            m.join is not None and not m.join.done() for m in group.members.values()
        ):
            self._complete_join(group)

    def _complete_join(self, group: Group) -> None:
        if group.timer is not None:
            group.timer.cancel()
            group.timer = None
        if group.state != PREPARING_REBALANCE:
            return
        late = [m.member_id for m in group.members.values() if m.join is None or m.join.done()]
        for member_id in late:
            log.info("kafka group %s: member %s did not rejoin in time", group.group_id, member_id)
            del group.members[member_id]
        group.generation += 1
        self.broker.stats["group_rebalances"] += 1
        if not group.members:
            group.state = EMPTY
            group.leader = group.protocol_name = group.protocol_type = None
            return
        candidates = self._candidates(group)
        votes = {name: 0 for name in candidates}
        for m in group.members.values():
            first = next(name for name, _ in m.protocols if name in votes)
            votes[first] += 1
        group.protocol_name = max(candidates, key=lambda name: votes[name])
        if group.leader not in group.members:
            group.leader = next(iter(group.members))
        group.state = COMPLETING_REBALANCE
        everyone = [
            {
                "member_id": m.member_id,
                "group_instance_id": m.group_instance_id,
                "metadata": dict(m.protocols)[group.protocol_name],
            }
            for m in group.members.values()
        ]
        log.info(
            "kafka group %s: generation %d, protocol %s, leader %s, %d members",
            group.group_id,
            group.generation,
            group.protocol_name,
            group.leader,
            len(group.members),
        )
        for m in group.members.values():
            m.last_seen = time.monotonic()
            if m.join is not None and not m.join.done():
                m.join.set_result(
                    {
                        "error_code": 0,
                        "generation_id": group.generation,
                        "protocol_type": group.protocol_type,
                        "protocol_name": group.protocol_name,
                        "leader": group.leader,
                        "member_id": m.member_id,
                        "members": everyone if m.member_id == group.leader else [],
                    }
                )
            m.join = None

    def _sync_answer(self, group: Group, member: Member) -> dict[str, Any]:
        return {
            "error_code": 0,
            "protocol_type": group.protocol_type,
            "protocol_name": group.protocol_name,
            "assignment": member.assignment,
        }

    def _remove(self, group: Group, member_ids: list[str], why: str) -> None:
        for member_id in member_ids:
            member = group.members.pop(member_id)
            log.info("kafka group %s: member %s %s", group.group_id, member_id, why)
            for fut in (member.join, member.sync):
                if fut is not None and not fut.done():
                    fut.set_result(_error(KafkaUnknownMemberId(member_id), assignment=b""))
        if group.members:
            if group.state != PREPARING_REBALANCE:
                self._prepare_rebalance(group)
            self._maybe_complete_join(group)
        else:
            if group.timer is not None:
                group.timer.cancel()
                group.timer = None
            if group.state != EMPTY:
                group.generation += 1
                self.broker.stats["group_rebalances"] += 1
            group.state = EMPTY
            group.leader = group.protocol_name = group.protocol_type = None

    async def delete(self, group_id: str) -> None:
        if not group_id:
            raise KafkaInvalidGroupId("empty group id")
        self._check_empty(group_id)
        committed = await self.broker.offsets.group_offsets(group_id)
        # A member may have joined (or created the group) while the offsets were read.
        group = self._check_empty(group_id)
        if group is None and not committed:
            raise KafkaGroupIdNotFound(f"group {group_id!r} does not exist")
        if group is not None:
            if group.timer is not None:
                group.timer.cancel()
            del self.groups[group_id]
        if committed:
            await self.broker.offsets.delete_group(group_id)
        log.info("kafka group %s: deleted", group_id)

    def _check_empty(self, group_id: str) -> Group | None:
        group = self.groups.get(group_id)
        if group is not None and group.members:
            raise KafkaNonEmptyGroup(f"group {group_id!r} has {len(group.members)} members")
        return group

    async def run_expiry(self) -> None:
        """Drop members whose session timed out (members blocked in JoinGroup or SyncGroup
        are waiting on the coordinator, not silent, so they are kept)."""
        while True:
            await asyncio.sleep(EXPIRY_INTERVAL)
            now = time.monotonic()
            for group in list(self.groups.values()):
                expired = [
                    m.member_id
                    for m in group.members.values()
                    if not m.waiting() and now - m.last_seen > m.session_timeout_ms / 1000
                ]
                if expired:
                    self._remove(group, expired, "missed its session timeout")

    def close(self) -> None:
        for group in self.groups.values():
            if group.timer is not None:
                group.timer.cancel()
            for m in group.members.values():
                for fut in (m.join, m.sync):
                    if fut is not None and not fut.done():
                        fut.cancel()


# --- handlers (the signature server.HANDLERS expects) ---------------------------------


async def handle_join_group(
    broker: KafkaBroker, conn: KafkaConnection, header: RequestHeader, req: dict[str, Any]
) -> dict[str, Any]:
    result: dict[str, Any] = await broker.groups.join(conn, header, req)
    return result


async def handle_sync_group(
    broker: KafkaBroker, conn: KafkaConnection, header: RequestHeader, req: dict[str, Any]
) -> dict[str, Any]:
    result: dict[str, Any] = await broker.groups.sync(conn, header, req)
    return result


async def handle_heartbeat(
    broker: KafkaBroker, conn: KafkaConnection, header: RequestHeader, req: dict[str, Any]
) -> dict[str, Any]:
    return broker.groups.heartbeat(req)


async def handle_leave_group(
    broker: KafkaBroker, conn: KafkaConnection, header: RequestHeader, req: dict[str, Any]
) -> dict[str, Any]:
    return broker.groups.leave(header, req)


async def handle_list_groups(
    broker: KafkaBroker, conn: KafkaConnection, header: RequestHeader, req: dict[str, Any]
) -> dict[str, Any]:
    return broker.groups.list_groups(req)


async def handle_describe_groups(
    broker: KafkaBroker, conn: KafkaConnection, header: RequestHeader, req: dict[str, Any]
) -> dict[str, Any]:
    return broker.groups.describe_groups(req)


async def handle_delete_groups(
    broker: KafkaBroker, conn: KafkaConnection, header: RequestHeader, req: dict[str, Any]
) -> dict[str, Any]:
    results = []
    for group_id in req["groups_names"]:
        try:
            await broker.groups.delete(group_id)
            code = 0
        except (KafkaError, StorageError, MetaError) as exc:
            code = kafka_error_code(exc)
        results.append({"group_id": group_id, "error_code": code})
    return {"results": results}
