"""Where the broker's durable MQTT state goes: the ``SessionStore`` contract and its two
implementations.

The broker calls a ``SessionStore`` at the few points where durable state changes: a
persistent session (3.1.1 clean session 0, 5.0 session expiry > 0) is created, connects,
goes offline, changes a subscription or ends; a retained message is set or cleared; and
once, at start, to load what survived. ``NullStore`` is today's in-memory broker (the
``memory`` engine): no IO at all. ``MetaSessionStore`` keeps sessions, subscriptions and
retained messages in the Meta Service ``mqtt`` group (DESIGN.md, "Metadata") and, because
that group's session record holds neither the owning user nor when the session went
offline, a small per-session state record in the storage engine's key-value space. Every
call only queues the change: a background task proposes queued changes together, so a
SUBSCRIBE never waits for a Raft commit, and the durability window is the time until the
next batch commits (docs/durability.md). Clean sessions with no expiry never come here.
A persistent session's queued QoS 1/2 deliveries go to a storage-engine shard
``mqtt/queue/<client id>`` (the ``QueueJournal`` half), trimmed as they are acknowledged;
while such appends are under way the broker holds back its writes, so a publisher's
PUBACK/PUBREC leaves only once the message is in the engine.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from robustmq.broker.mqtt.message import Message
from robustmq.broker.mqtt.session import Delivery, Session, SubscriptionOptions
from robustmq.errors import MetaError, StorageError
from robustmq.storage.engine import Record, ShardConfig

if TYPE_CHECKING:
    from robustmq.storage import StorageEngine

log = logging.getLogger(__name__)

GROUP = "mqtt"
# The key-value record of a session's state the mqtt group does not hold.
_STATE_PREFIX = b"mqtt/session/"
# After a failed retriable proposal, wait this long before the next batch.
_RETRY_DELAY = 0.2
QUEUE_PREFIX = "mqtt/queue/"
# Trims of acknowledged entries are applied at most this often (seconds): a trim may cost
# an fsync, and a late trim only means a repeat, with DUP, after a crash.
_TRIM_DELAY = 1.0
# Small segments: acknowledged messages free their disk a segment at a time.
_QUEUE_SHARD = ShardConfig(segment_bytes=4 << 20, segment_ms=None)


class MetaProposer(Protocol):
    """What both ``MultiRaftHost`` (in process) and ``MetaClient`` (over gRPC) offer."""

    async def propose(self, group: str, command: bytes) -> Any: ...

    async def read(self, group: str, key: str) -> Any: ...


@dataclass(slots=True)
class StoredSession:
    """A persistent session as loaded at start; ``offline_since`` is wall-clock seconds,
    or None when the session was connected when the broker stopped."""

    client_id: str
    owner: str | None
    expiry_interval: int
    offline_since: float | None
    subscriptions: dict[str, SubscriptionOptions] = field(default_factory=dict)
    # QoS 1/2 deliveries queued and not acknowledged, oldest first.
    queued: list[Delivery] = field(default_factory=list)


class QueueJournal(Protocol):
    """Where a session writes its queued QoS 1/2 deliveries until they are done."""

    def message_queued(self, session: Session, delivery: Delivery) -> None: ...

    def message_done(self, session: Session, delivery: Delivery) -> None:
        """Acknowledged, expired or dropped: it need not survive a restart any more."""


class SessionStore(Protocol):
    # True while queued deliveries are being written: the broker holds back its writes
    # (PUBACKs among them) until ``after_appends`` calls back.
    appending: bool

    def journal(self) -> QueueJournal | None:
        """The journal for persistent sessions' queues; None when queues are not kept."""

    def after_appends(self, callback: Callable[[], None]) -> None:
        """Calls ``callback`` once every delivery queued so far is written."""

    def session_set(self, client_id: str, owner: str | None, expiry_interval: int) -> None:
        """A persistent session was created, or its expiry interval changed; it is online."""

    def session_online(self, client_id: str, owner: str | None, online: bool) -> None:
        """A persistent session got (``online``) or lost its connection."""

    def session_deleted(self, client_id: str) -> None:
        """A persistent session ended (clean start, expiry, or expiry set to 0)."""

    def subscription_set(
        self, client_id: str, topic_filter: str, options: SubscriptionOptions
    ) -> None: ...

    def subscription_deleted(self, client_id: str, topic_filter: str) -> None: ...

    def retained_set(self, message: Message) -> None:
        """A retained message was stored (an empty payload clears it: ``retained_deleted``)."""

    def retained_deleted(self, topic: str) -> None: ...

    async def load(self) -> tuple[list[StoredSession], list[Message]]:
        """What survived: persistent sessions and retained messages."""

    async def close(self) -> None:
        """Writes out every queued change, then stops."""


class NullStore:
    """The in-memory broker: nothing is stored, nothing survives a restart."""

    appending = False

    def journal(self) -> QueueJournal | None:
        return None

    def after_appends(self, callback: Callable[[], None]) -> None:
        callback()

    def session_set(self, client_id: str, owner: str | None, expiry_interval: int) -> None:
        pass

    def session_online(self, client_id: str, owner: str | None, online: bool) -> None:
        pass

    def session_deleted(self, client_id: str) -> None:
        pass

    def subscription_set(
        self, client_id: str, topic_filter: str, options: SubscriptionOptions
    ) -> None:
        pass

    def subscription_deleted(self, client_id: str, topic_filter: str) -> None:
        pass

    def retained_set(self, message: Message) -> None:
        pass

    def retained_deleted(self, topic: str) -> None:
        pass

    async def load(self) -> tuple[list[StoredSession], list[Message]]:
        return [], []

    async def close(self) -> None:
        pass


def _command(op: str, **fields: Any) -> bytes:
    # The same encoding as robustmq.meta.groups.encode_command, without importing the
    # meta package (grpc, protobuf) into the broker.
    return orjson.dumps({"v": 1, "op": op, **fields})


def _queue_shard(client_id: str) -> str:
    return QUEUE_PREFIX + client_id


def _queue_record(delivery: Delivery) -> Record:
    message = delivery.message
    headers: list[tuple[str, bytes]] = [
        ("qos", b"%d" % delivery.qos),
        ("retain", b"1" if delivery.retain else b"0"),
    ]
    if message.properties:
        headers.append(("properties", orjson.dumps(_json_properties(message.properties))))
    if delivery.sub_ids:
        headers.append(("sub_ids", orjson.dumps(delivery.sub_ids)))
    return Record(message.payload, message.topic.encode(), tuple(headers))


def _queued_delivery(key: bytes | None, value: bytes, headers: Any) -> Delivery:
    fields = dict(headers)
    properties = (
        _mqtt_properties(orjson.loads(fields["properties"])) if "properties" in fields else None
    )
    message = Message((key or b"").decode(), value, int(fields["qos"]), False, properties)
    sub_ids = tuple(orjson.loads(fields["sub_ids"])) if "sub_ids" in fields else ()
    return Delivery(message, int(fields["qos"]), fields["retain"] == b"1", sub_ids)


def _json_properties(properties: dict[str, Any] | None) -> dict[str, Any]:
    """MQTT properties as JSON: bytes (correlation data) as base64, user properties as
    pairs."""
    out: dict[str, Any] = {}
    for name, value in (properties or {}).items():
        if isinstance(value, bytes):
            out[name] = {"base64": base64.b64encode(value).decode()}
        elif name == "user_property":
            out[name] = [list(pair) for pair in value]
        else:
            out[name] = value
    return out


def _mqtt_properties(properties: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in properties.items():
        if isinstance(value, dict) and "base64" in value:
            out[name] = base64.b64decode(value["base64"])
        elif name == "user_property":
            out[name] = [tuple(pair) for pair in value]
        else:
            out[name] = value
    return out


class MetaSessionStore:
    """Sessions, subscriptions and retained messages in the ``mqtt`` group; each
    session's owner and offline time in ``engine``'s key-value space."""

    def __init__(self, meta: MetaProposer, engine: StorageEngine, node_id: int) -> None:
        self.meta = meta
        self.engine = engine
        self.node_id = node_id
        # Changes waiting for the writer, by what they change (a session, a retained
        # topic): changes to one key are written in order, different keys concurrently.
        self._pending: OrderedDict[str, list[bytes]] = OrderedDict()
        self._states: dict[str, bytes | None] = {}  # client id -> state record, None: delete
        # Per client id, in order: ("append", [delivery, ...]) and ("drop",).
        self._shard_ops: dict[str, list[tuple[Any, ...]]] = {}
        # Per client id: id(delivery) -> (delivery, offset) of what is stored and not
        # done, oldest first; what the shard holds before the first is trimmed.
        self._stored: dict[str, dict[int, tuple[Delivery, int]]] = {}
        self._end: dict[str, int] = {}  # per client id: the offset after its last append
        self._unstored: dict[int, Delivery] = {}  # queued, append not finished
        self._done_early: set[int] = set()  # done before their append finished
        self._shards: set[str] = set()  # queue shards known to exist
        self._after: list[Callable[[], None]] = []
        self._trim_to: dict[str, int] = {}  # per client id: delete its queue before this
        self._trim_handle: asyncio.TimerHandle | None = None
        self._trims_due = False
        self.appending = False
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._closing = False
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ changes

    def _queue(self, key: str, command: bytes) -> None:
        self._pending.setdefault(key, []).append(command)
        self._kick()

    def _kick(self) -> None:
        self._idle.clear()
        self._wake.set()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._writer(), name="mqtt-session-store"
            )

    def session_set(self, client_id: str, owner: str | None, expiry_interval: int) -> None:
        self._queue(
            "s/" + client_id,
            _command(
                "session.set",
                client_id=client_id,
                expiry_interval=expiry_interval,
                node_id=self.node_id,
            ),
        )
        self.session_online(client_id, owner, True)

    def session_online(self, client_id: str, owner: str | None, online: bool) -> None:
        self._states[client_id] = orjson.dumps(
            {"owner": owner, "offline_since": None if online else time.time()}
        )
        self._kick()

    def session_deleted(self, client_id: str) -> None:
        self._queue("s/" + client_id, _command("session.delete", client_id=client_id))
        self._states[client_id] = None
        self._trim_to.pop(client_id, None)  # offsets of a queue about to go
        self._shard_ops.setdefault(client_id, []).append(("drop",))
        self._kick()

    # ------------------------------------------------------------------ queues

    def journal(self) -> QueueJournal | None:
        return self

    def after_appends(self, callback: Callable[[], None]) -> None:
        if self.appending:
            self._after.append(callback)
        else:
            callback()

    def message_queued(self, session: Session, delivery: Delivery) -> None:
        ops = self._shard_ops.setdefault(session.client_id, [])
        if ops and ops[-1][0] == "append":
            ops[-1][1].append(delivery)
        else:
            ops.append(("append", [delivery]))
        self._unstored[id(delivery)] = delivery
        self.appending = True
        self._kick()

    def message_done(self, session: Session, delivery: Delivery) -> None:
        key = id(delivery)
        if key in self._unstored:
            self._done_early.add(key)
            return
        stored = self._stored.get(session.client_id)
        if not stored or key not in stored:
            return
        oldest = next(iter(stored)) == key
        del stored[key]
        if oldest:
            self._trim(session.client_id)

    def _trim(self, client_id: str) -> None:
        """Trims the shard up to its oldest delivery not done."""
        stored = self._stored.get(client_id)
        first = next(iter(stored.values()))[1] if stored else self._end.get(client_id)
        if first is not None:
            self._trim_to[client_id] = first
            self._schedule_trims()

    def _schedule_trims(self) -> None:
        if self._trim_handle is None and not self._closing:
            self._trim_handle = asyncio.get_running_loop().call_later(_TRIM_DELAY, self._trim_due)

    def _trim_due(self) -> None:
        self._trim_handle = None
        self._trims_due = True
        self._kick()

    async def _apply_trims(self, trims: dict[str, int]) -> None:
        for client_id, offset in trims.items():
            shard = _queue_shard(client_id)
            if shard in self._shards:
                try:
                    await self.engine.delete_before(shard, offset)
                except StorageError as exc:
                    log.warning("session store: trim of %s failed: %s", shard, exc)

    async def _run_shard_ops(self, client_id: str, ops: list[tuple[Any, ...]]) -> None:
        shard = _queue_shard(client_id)
        for op in ops:
            try:
                if op[0] == "append":
                    await self._append(client_id, shard, op[1])
                else:
                    self._stored.pop(client_id, None)
                    self._end.pop(client_id, None)
                    if shard in self._shards:
                        self._shards.discard(shard)
                        await self.engine.delete_shard(shard)
            except StorageError as exc:
                log.warning("session store: %s of %s failed: %s", op[0], shard, exc)
                if op[0] == "append":
                    for delivery in op[1]:
                        self._unstored.pop(id(delivery), None)
                        self._done_early.discard(id(delivery))

    async def _append(self, client_id: str, shard: str, deliveries: list[Delivery]) -> None:
        if shard not in self._shards:
            if shard not in await self.engine.list_shards(shard):
                await self.engine.create_shard(shard, _QUEUE_SHARD)
            self._shards.add(shard)
        offsets = await self.engine.append(shard, [_queue_record(d) for d in deliveries])
        stored = self._stored.setdefault(client_id, {})
        early = False
        for delivery, offset in zip(deliveries, offsets, strict=True):
            key = id(delivery)
            self._unstored.pop(key, None)
            if key in self._done_early:
                self._done_early.discard(key)
                early = True
            else:
                stored[key] = (delivery, offset)
        self._end[client_id] = offsets.stop
        if early:
            self._trim(client_id)

    def subscription_set(
        self, client_id: str, topic_filter: str, options: SubscriptionOptions
    ) -> None:
        self._queue(
            "s/" + client_id,
            _command(
                "subscription.set",
                client_id=client_id,
                filter=topic_filter,
                qos=options.qos,
                options={
                    "no_local": options.no_local,
                    "retain_as_published": options.retain_as_published,
                    "subscription_id": options.subscription_id,
                },
            ),
        )

    def subscription_deleted(self, client_id: str, topic_filter: str) -> None:
        self._queue(
            "s/" + client_id,
            _command("subscription.delete", client_id=client_id, filter=topic_filter),
        )

    def retained_set(self, message: Message) -> None:
        self._queue(
            "r/" + message.topic,
            _command(
                "retained.set",
                topic=message.topic,
                payload=base64.b64encode(message.payload).decode(),
                qos=message.qos,
                properties=_json_properties(message.properties),
            ),
        )

    def retained_deleted(self, topic: str) -> None:
        self._queue("r/" + topic, _command("retained.delete", topic=topic))

    # ------------------------------------------------------------------ the writer

    async def _writer(self) -> None:
        """Proposes what is queued, one batch at a time: every key's changes start
        together, so the Raft host commits them in one group commit."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            pending, self._pending = self._pending, OrderedDict()
            states, self._states = self._states, {}
            shard_ops, self._shard_ops = self._shard_ops, {}
            trims: dict[str, int] = {}
            if self._trims_due or self._closing:
                self._trims_due = False
                # A queue changing in this batch is trimmed in a later one: its drop and
                # its appends run concurrently with the trims.
                trims = {c: o for c, o in self._trim_to.items() if c not in shard_ops}
                for client_id in trims:
                    del self._trim_to[client_id]
            try:
                _, _, retry, _ = await asyncio.gather(
                    asyncio.gather(
                        *(
                            self._run_shard_ops(client_id, ops)
                            for client_id, ops in shard_ops.items()
                        )
                    ),
                    self._write_states(states),
                    self._propose_all(pending),
                    self._apply_trims(trims),
                )
            except Exception:
                # The writer must outlive any failure: the broker's writes wait on it.
                log.exception("session store: a batch of changes was not written")
                retry = [[] for _ in pending]
            if self.appending and not any(
                op[0] == "append" for ops in self._shard_ops.values() for op in ops
            ):
                self.appending = False
                after, self._after = self._after, []
                for callback in after:
                    callback()
            failed = [(key, rest) for key, rest in zip(pending, retry, strict=True) if rest]
            if failed:
                # Put them back ahead of what arrived meanwhile: one key's order holds.
                for key, rest in reversed(failed):
                    self._pending[key] = rest + self._pending.get(key, [])
                    self._pending.move_to_end(key, last=False)
                if self._closing:
                    log.warning("session store: %d changes not written at shutdown", len(failed))
                    self._pending.clear()
                else:
                    await asyncio.sleep(_RETRY_DELAY)
                    self._wake.set()
            if self._trim_to:
                self._schedule_trims()  # those left for a later batch
            if self._trim_to and self._closing:
                self._wake.set()
            elif not self._pending and not self._states and not self._shard_ops:
                self._idle.set()

    async def _propose_all(self, pending: OrderedDict[str, list[bytes]]) -> list[list[bytes]]:
        return await asyncio.gather(
            *(self._propose_in_order(key, commands) for key, commands in pending.items())
        )

    async def _propose_in_order(self, key: str, commands: list[bytes]) -> list[bytes]:
        """Proposes ``commands`` one after another; returns those to retry."""
        for i, command in enumerate(commands):
            try:
                await self.meta.propose(GROUP, command)
            except MetaError as exc:
                if exc.retriable:
                    log.warning("session store: %s; retrying", exc)
                    return commands[i:]
                # A command the group refuses (a subscription of a session that a failed
                # earlier change never created) cannot succeed later either.
                log.warning("session store: %s refused: %s", key, exc)
        return []

    async def _write_states(self, states: dict[str, bytes | None]) -> None:
        try:
            for client_id, record in states.items():
                key = _STATE_PREFIX + client_id.encode()
                if record is None:
                    await self.engine.delete(key)
                else:
                    await self.engine.put(key, record)
        except StorageError as exc:
            log.warning("session store: session state not written: %s", exc)

    # ------------------------------------------------------------------ lifecycle

    async def load(self) -> tuple[list[StoredSession], list[Message]]:
        records = await self.meta.read(GROUP, "sessions") or {}
        states = {
            key[len(_STATE_PREFIX) :].decode(): orjson.loads(value)
            for key, value in await self.engine.scan(_STATE_PREFIX)
        }
        queues = set(await self.engine.list_shards(QUEUE_PREFIX))
        sessions = []
        for client_id, record in records.items():
            state = states.get(client_id, {})
            stored = StoredSession(
                client_id,
                state.get("owner"),
                record["expiry_interval"],
                state.get("offline_since"),
            )
            for topic_filter, sub in record["subscriptions"].items():
                options = sub.get("options", {})
                stored.subscriptions[topic_filter] = SubscriptionOptions(
                    sub["qos"],
                    bool(options.get("no_local", False)),
                    bool(options.get("retain_as_published", False)),
                    int(options.get("subscription_id", 0)),
                )
            shard = _queue_shard(client_id)
            if shard in queues:
                queues.discard(shard)
                self._shards.add(shard)
                await self._load_queue(stored, shard)
            sessions.append(stored)
        for shard in queues:  # a session that ended while its queue was being written
            await self.engine.delete_shard(shard)
        retained = [
            Message(
                topic,
                base64.b64decode(record["payload"]),
                record["qos"],
                True,
                _mqtt_properties(record.get("properties") or {}),
            )
            for topic, record in (await self.meta.read(GROUP, "retained") or {}).items()
        ]
        return sessions, retained

    async def _load_queue(self, stored: StoredSession, shard: str) -> None:
        offset = await self.engine.earliest_offset(shard)
        end = await self.engine.latest_offset(shard)
        entries: dict[int, tuple[Delivery, int]] = {}
        while offset < end:
            for record in await self.engine.read(shard, offset):
                delivery = _queued_delivery(record.key, record.value, record.headers)
                stored.queued.append(delivery)
                entries[id(delivery)] = (delivery, record.offset)
                offset = record.offset + 1
        self._stored[stored.client_id] = entries
        self._end[stored.client_id] = end

    async def close(self) -> None:
        self._closing = True
        if self._trim_handle is not None:
            self._trim_handle.cancel()
            self._trim_handle = None
        if self._task is None:
            return
        if self._trim_to:
            self._kick()
        await self._idle.wait()
        self._task.cancel()
        self._task = None
