"""Where the broker's durable MQTT state goes: the ``SessionStore`` contract and its two
implementations.

The broker calls a ``SessionStore`` at the few points where durable state changes: a
persistent session (3.1.1 clean session 0, 5.0 session expiry > 0) is created, connects,
goes offline, changes a subscription or its will, or ends; a QoS 1/2 delivery to it
starts or completes; a QoS 2 exchange with it as publisher advances; a retained message is
set or cleared; a delayed publish is accepted or fires; and once, at start, to load what
survived. ``NullStore`` is today's in-memory broker (the ``memory`` engine): no IO at all.
``MetaSessionStore`` keeps sessions, subscriptions and retained messages in the Meta
Service ``mqtt`` group (DESIGN.md, "Metadata"), and the rest in the storage engine. In a
multi-node cluster (``clustered``) every broker shares the group: each keeps a cache of it
fed by the group's watch stream, loads from it, once caught up with the leader, only the
sessions whose record names its node (their queues are in its engine), and learns from
it when another node takes one of them (docs/durability.md, "In a cluster"). Every
call only queues the change: a background task writes queued changes together, so a
packet handler never waits for a Raft commit or a disk write (docs/durability.md). Clean
sessions with no expiry never come here. While a write that an acknowledgement promises
is under way (``appending``), the broker holds back its writes, so a SUBACK, UNSUBACK,
PUBACK, PUBREC, PUBREL or PUBCOMP leaves only once the state it stands for is committed
or in the engine; a persistent session's CONNECT is the one change answered before it is
written (its CONNACK does not wait).

On-disk format, version 2 (``JOURNAL_VERSION``, stored at key ``mqtt/journal-version``;
a store refuses to load a newer one; version 1 had only delivery records, which version
2 reads as they are):

* shard ``mqtt/queue/<client id>``, the session's journal, one record per QoS 1/2
  delivery not yet acknowledged (online in flight or queued), oldest first: key = topic
  (UTF-8), value = payload, headers ``qos`` and ``retain`` (ASCII digits), optional
  ``properties`` (JSON: bytes as ``{"base64": ...}``, user properties as pairs),
  ``sub_ids`` (JSON list), ``pid`` (the packet identifier it was sent with, when it
  was sent at once) and ``origin`` (below). Marker records (no key, empty value) refer
  to earlier deliveries by offset: header ``sent`` = ``<offset>:<packet id>:<count>``
  (``count`` queued deliveries at consecutive offsets from ``offset`` went out with
  consecutive packet ids from ``packet id``, 65535 wrapping to 1) and ``released`` =
  ``<offset>`` (its PUBREC arrived and the PUBREL went out, so a restart resends the
  PUBREL, not the PUBLISH), ASCII digits.
  A restart resends what was sent with its original packet id (MQTT 3.1.1 §4.4). The
  shard is trimmed (``delete_before``) up to its oldest delivery not done.
* key ``mqtt/session/<client id>``: JSON ``{"owner", "offline_since"}`` (wall-clock
  seconds, null while connected), what the ``mqtt`` group's session record lacks.
* key ``mqtt/will/<client id>``: JSON ``{"id", "topic", "payload" (base64), "qos",
  "retain", "properties"}``: the will of a connected persistent session, or its delayed
  will pending after the connection went (MQTT 5 §3.1.3.2.2).
* key ``mqtt/qos2/<client id>``: JSON ``{"n", "ids"}``: the session's inbound QoS 2
  packet ids awaiting PUBREL, as of its ``n``-th QoS 2 PUBLISH received.
* key ``mqtt/delayed/<due ms, 16 digits>-<sequence>``: JSON ``{"topic", "payload",
  "qos", "retain", "properties", "sender"}``: a ``$delayed/...`` publish not yet fired.

Records in several places cannot be written atomically, so a delivery record names what
produced it in its ``origin`` header, and loading reconciles: ``q:<n>:<packet id>:<client
id>`` (the ``n``-th QoS 2 PUBLISH of that publisher: if its ``mqtt/qos2`` record does not
count it yet, the crash came before the PUBREC, so the publisher will resend it, and its
deliveries are voided by a marker record, header ``void`` = ``<offset>``, written before
the broker serves), ``d:<key>`` (a delayed publish that fired: its record is gone even if
its delete was lost) and ``w:<id>`` (a will that was published). The second write of
each pair always follows the first, in the same writer round. A ``mqtt/qos2`` record
outlives its session (with no ids), so that a publisher's count never goes back.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import logging
import os
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, cast

import orjson

from robustmq.broker.mqtt.message import Message
from robustmq.broker.mqtt.session import Delivery, Owed, Session, SubscriptionOptions
from robustmq.errors import (
    Corrupted,
    MetaCommandError,
    MetaError,
    MetaUnavailable,
    StorageError,
)
from robustmq.storage.engine import Record, ShardConfig

if TYPE_CHECKING:
    from robustmq.storage import StorageEngine

log = logging.getLogger(__name__)

GROUP = "mqtt"
JOURNAL_VERSION = 2
_VERSION_KEY = b"mqtt/journal-version"
_STATE_PREFIX = b"mqtt/session/"
_WILL_PREFIX = b"mqtt/will/"
_QOS2_PREFIX = b"mqtt/qos2/"
_DELAYED_PREFIX = b"mqtt/delayed/"
# After a failed retriable proposal, wait this long before the next batch.
_RETRY_DELAY = 0.2
QUEUE_PREFIX = "mqtt/queue/"
# Trims of acknowledged entries are applied at most this often (seconds): a trim may cost
# an fsync, and a late trim only means a repeat, with DUP, after a crash.
_TRIM_DELAY = 1.0
# Small segments: acknowledged messages free their disk a segment at a time.
_QUEUE_SHARD = ShardConfig(segment_bytes=4 << 20, segment_ms=None)
# In a cluster: the first and the longest wait (seconds) before asking the mqtt group
# again for its leader, or before resuming a broken watch stream.
_BACKOFF = 0.2
_BACKOFF_MAX = 5.0
_QUIET_ATTEMPTS = 4  # attempts logged at INFO before the wait is logged as a warning
# A key of the sessions table read only for its linearizability (its value is unused).
_BARRIER_KEY = "sessions/$load"


class MetaProposer(Protocol):
    """What both ``MultiRaftHost`` (in process) and ``MetaClient`` (over gRPC) offer."""

    async def propose(self, group: str, command: bytes) -> Any: ...

    async def read(self, group: str, key: str) -> Any: ...


class MetaWatcher(MetaProposer, Protocol):
    """What a clustered store also needs of ``MetaClient``: the meta nodes, their view
    of each group, and a group's watch stream."""

    addresses: list[str]

    def watch(self, group: str, from_index: int = 1) -> AsyncIterator[Any]: ...

    async def status(self, address: str) -> tuple[int, list[Any]]: ...


class GroupCache(Protocol):
    """A replica of the ``mqtt`` group's state machine, fed with its applied entries."""

    tables: dict[str, dict[str, Any]]

    def apply(self, command: bytes) -> Any: ...

    def restore(self, data: bytes) -> None: ...


class StoredWill(NamedTuple):
    """A will as loaded at start; it has the attributes of a CONNECT's will."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    properties: dict[str, Any] | None


@dataclass(slots=True)
class StoredSession:
    """A persistent session as loaded at start; ``offline_since`` is wall-clock seconds,
    or None when the session was connected when the broker stopped."""

    client_id: str
    owner: str | None
    expiry_interval: int
    offline_since: float | None
    subscriptions: dict[str, SubscriptionOptions] = field(default_factory=dict)
    # QoS 1/2 deliveries not acknowledged, oldest first; the packet id each was sent
    # with (0: never sent); the indexes of the QoS 2 ones whose PUBREL went out.
    queued: list[Delivery] = field(default_factory=list)
    packet_ids: list[int] = field(default_factory=list)
    released: set[int] = field(default_factory=set)
    # Inbound QoS 2 packet ids awaiting PUBREL.
    qos2_inbound: list[int] = field(default_factory=list)
    will: StoredWill | None = None


class DelayedEntry(NamedTuple):
    """A delayed publish as loaded at start: due at ``due`` (wall-clock seconds)."""

    key: str
    due: float
    message: Message


class QueueJournal(Protocol):
    """Where a persistent session writes its QoS 1/2 state until it is done."""

    def message_queued(self, session: Session, delivery: Delivery, packet_id: int = 0) -> None:
        """A QoS 1/2 delivery to ``session`` begins: sent with ``packet_id``, or queued (0)."""

    def message_sent(self, session: Session, delivery: Delivery, packet_id: int) -> None:
        """A queued delivery went out with ``packet_id``."""

    def message_done(self, session: Session, delivery: Delivery) -> None:
        """Acknowledged, expired or dropped: it need not survive a restart any more."""

    def message_released(self, session: Session, delivery: Delivery) -> None:
        """Its PUBREC arrived and a PUBREL goes out: a restart resends the PUBREL."""

    def qos2_publish(self, session: Session, packet_id: int, publish: Callable[[], int]) -> int:
        """Routes a QoS 2 PUBLISH ``session`` sent (``publish`` returns its PUBREC code);
        its packet id is stored, with the deliveries it queued, before the PUBREC."""

    def qos2_released(self, session: Session) -> None:
        """A PUBREL removed an inbound packet id; stored before the PUBCOMP."""


class SessionStore(Protocol):
    # True while writes that acknowledgements promise are under way: the broker holds
    # back its writes (PUBACKs among them) until ``after_appends`` calls back.
    appending: bool
    # The mqtt group is shared with the other brokers of a cluster: ``load`` waits for
    # the group's leader (the broker serves meanwhile), and sessions move between nodes.
    clustered: bool

    def follow(self, moved: Callable[[str, int | None], None]) -> None:
        """Calls ``moved(client_id, node_id)`` when node ``node_id`` of the cluster takes
        a persistent session this node holds (``node_id`` None: another node ended it)."""

    def session_elsewhere(self, client_id: str) -> StoredSession | None:
        """The persistent session ``client_id`` as another node holds it (owner, expiry,
        subscriptions; that node hands its queue over once it sees the move), from the
        cache; None if there is none."""

    def session_node(self, client_id: str) -> int | None:
        """The node the group's record of ``client_id``'s persistent session names, from
        the cache; None if there is none."""

    def handing_over(self, client_id: str) -> Callable[[], None]:
        """Starts a handover of what this node owed ``client_id``'s session: its stored
        queue stays (a crash hands it over again at the next start) until the returned
        callback says none of it waits any more, or the session is back here."""

    def session_moved(self, client_id: str, node_id: int | None, handed: int) -> None:
        """Node ``node_id`` took ``client_id``'s session (None: ended it): this node's copy
        goes (the group's record stays), but a stored queue ``handing_over`` keeps;
        ``handed`` messages it owed the client are on their way to that node."""

    def owed_elsewhere(self) -> list[tuple[str, int, list[Owed], Callable[[], None]]]:
        """Sessions that moved to another node while this node was down (found by
        ``load``): (client id, the node that holds the session, what this node still
        owed the client, in order, the ``handing_over`` callback); each handed out
        once."""

    def journal(self) -> QueueJournal | None:
        """The journal of persistent sessions; None when their state is not kept."""

    def after_appends(self, callback: Callable[[], None]) -> None:
        """Calls ``callback`` once everything an acknowledgement waits for is written."""

    def session_set(self, client_id: str, owner: str | None, expiry_interval: int) -> None:
        """A persistent session was created, or its expiry interval changed; it is online."""

    def session_online(self, client_id: str, owner: str | None, online: bool) -> None:
        """A persistent session got (``online``) or lost its connection."""

    def session_will(self, client_id: str, will: Any) -> None:
        """The will of a persistent session (a CONNECT's will, or None): the connected
        client's, or the delayed one pending after its connection went."""

    def will_published(self, client_id: str) -> contextlib.AbstractContextManager[None]:
        """Around publishing ``client_id``'s will: afterwards it is not stored any more."""

    def session_deleted(self, client_id: str) -> None:
        """A persistent session ended (clean start, expiry, or expiry set to 0)."""

    def subscription_set(
        self, client_id: str, topic_filter: str, options: SubscriptionOptions
    ) -> None: ...

    def subscription_deleted(self, client_id: str, topic_filter: str) -> None: ...

    def retained_set(self, message: Message) -> None:
        """A retained message was stored (an empty payload clears it: ``retained_deleted``)."""

    def retained_deleted(self, topic: str) -> None: ...

    def delayed_set(self, due: float, message: Message) -> str | None:
        """A delayed publish of ``message`` due at ``due`` (wall clock) was accepted;
        returns its key (None: not stored)."""

    def delayed_published(self, key: str | None) -> contextlib.AbstractContextManager[None]:
        """Around publishing a delayed message: afterwards it is not stored any more."""

    async def load(self) -> tuple[list[StoredSession], list[Message]]:
        """What survived: persistent sessions and retained messages."""

    async def load_delayed(self) -> list[DelayedEntry]:
        """Delayed publishes not fired yet (after ``load``)."""

    async def close(self) -> None:
        """Writes out every queued change, then stops."""


class NullStore:
    """The in-memory broker: nothing is stored, nothing survives a restart."""

    appending = False
    clustered = False

    def follow(self, moved: Callable[[str, int | None], None]) -> None:
        pass

    def session_elsewhere(self, client_id: str) -> StoredSession | None:
        return None

    def session_node(self, client_id: str) -> int | None:
        return None

    def handing_over(self, client_id: str) -> Callable[[], None]:
        return _nothing

    def session_moved(self, client_id: str, node_id: int | None, handed: int) -> None:
        pass

    def owed_elsewhere(self) -> list[tuple[str, int, list[Owed], Callable[[], None]]]:
        return []

    def journal(self) -> QueueJournal | None:
        return None

    def after_appends(self, callback: Callable[[], None]) -> None:
        callback()

    def session_set(self, client_id: str, owner: str | None, expiry_interval: int) -> None:
        pass

    def session_online(self, client_id: str, owner: str | None, online: bool) -> None:
        pass

    def session_will(self, client_id: str, will: Any) -> None:
        pass

    def will_published(self, client_id: str) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

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

    def delayed_set(self, due: float, message: Message) -> str | None:
        return None

    def delayed_published(self, key: str | None) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    async def load(self) -> tuple[list[StoredSession], list[Message]]:
        return [], []

    async def load_delayed(self) -> list[DelayedEntry]:
        return []

    async def close(self) -> None:
        pass


def _nothing() -> None:
    pass


def _owed(stored: StoredSession) -> list[Owed]:
    """What a stored queue still owes its client, in order, each delivery with the packet
    id it was sent with (0: never sent) and whether its PUBREL went out; but those whose
    packet id a later delivery was sent with (acknowledged: as ``MqttBroker`` restores a
    queue)."""
    last = {packet_id: i for i, packet_id in enumerate(stored.packet_ids) if packet_id}
    return [
        (delivery, packet_id, i in stored.released)
        for i, (delivery, packet_id) in enumerate(
            zip(stored.queued, stored.packet_ids, strict=True)
        )
        if not packet_id or last[packet_id] == i
    ]


def _command(op: str, **fields: Any) -> bytes:
    # The same encoding as robustmq.meta.groups.encode_command, without importing the
    # meta package (grpc, protobuf) into the broker.
    return orjson.dumps({"v": 1, "op": op, **fields})


def _queue_shard(client_id: str) -> str:
    return QUEUE_PREFIX + client_id


def _queue_record(delivery: Delivery, packet_id: int, origin: bytes | None) -> Record:
    message = delivery.message
    headers: list[tuple[str, bytes]] = [
        ("qos", b"%d" % delivery.qos),
        ("retain", b"1" if delivery.retain else b"0"),
    ]
    if message.properties:
        headers.append(("properties", orjson.dumps(_json_properties(message.properties))))
    if delivery.sub_ids:
        headers.append(("sub_ids", orjson.dumps(delivery.sub_ids)))
    if packet_id:
        headers.append(("pid", b"%d" % packet_id))
    if origin is not None:
        headers.append(("origin", origin))
    return Record(message.payload, message.topic.encode(), tuple(headers))


def _marker_record(marker: tuple[str, bytes]) -> Record:
    return Record(b"", None, (marker,))


class _Stored:
    """A session's deliveries in its shard and not done: id(delivery) -> (delivery,
    offset), and their order, oldest first. The order is cleaned lazily from the front
    (done ones are usually the oldest), so finding the oldest costs O(1) amortized where
    a dict's first key costs the number of keys deleted before it."""

    __slots__ = ("entries", "order")

    def __init__(self) -> None:
        self.entries: dict[int, tuple[Delivery, int]] = {}
        self.order: deque[Delivery] = deque()

    def add(self, delivery: Delivery, offset: int) -> None:
        self.entries[id(delivery)] = (delivery, offset)
        self.order.append(delivery)

    def is_oldest(self, delivery: Delivery) -> bool:
        return self.first_offset() is not None and self.order[0] is delivery

    def compact(self) -> None:
        self.order = deque(delivery for delivery, _ in self.entries.values())

    def first_offset(self) -> int | None:
        order, entries = self.order, self.entries
        while order:
            entry = entries.get(id(order[0]))
            if entry is not None and entry[0] is order[0]:
                return entry[1]
            order.popleft()
        return None


class _SentRun:
    """A ``sent`` marker being built: deliveries drained one after another share one."""

    __slots__ = ("count", "offset", "packet_id")

    def __init__(self, offset: int, packet_id: int) -> None:
        self.offset = offset
        self.packet_id = packet_id
        self.count = 1

    def extend(self, offset: int, packet_id: int) -> bool:
        """Takes the next delivery if it follows on both counts."""
        if offset != self.offset + self.count:
            return False
        if packet_id != (self.packet_id + self.count - 1) % 65535 + 1:
            return False
        self.count += 1
        return True

    def record(self) -> Record:
        return _marker_record(("sent", b"%d:%d:%d" % (self.offset, self.packet_id, self.count)))


def _subscriptions(record: dict[str, Any]) -> dict[str, SubscriptionOptions]:
    """The subscriptions of a session record of the ``mqtt`` group."""
    subscriptions = {}
    for topic_filter, sub in record["subscriptions"].items():
        options = sub.get("options", {})
        subscriptions[topic_filter] = SubscriptionOptions(
            sub["qos"],
            bool(options.get("no_local", False)),
            bool(options.get("retain_as_published", False)),
            int(options.get("subscription_id", 0)),
        )
    return subscriptions


def _queued_delivery(key: bytes | None, value: bytes, fields: dict[str, bytes]) -> Delivery:
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


def _message_json(topic: str, payload: bytes, qos: int, retain: bool, props: Any) -> dict[str, Any]:
    return {
        "topic": topic,
        "payload": base64.b64encode(payload).decode(),
        "qos": qos,
        "retain": retain,
        "properties": _json_properties(props),
    }


class MetaSessionStore:
    """Sessions, subscriptions and retained messages in the ``mqtt`` group; journals,
    session state, wills, QoS 2 packet ids and delayed publishes in ``engine``. With a
    ``cache`` of the group (a cluster), ``meta`` must be a ``MetaWatcher``."""

    def __init__(
        self,
        meta: MetaProposer,
        engine: StorageEngine,
        node_id: int,
        *,
        cache: GroupCache | None = None,
    ) -> None:
        self.meta = meta
        self.engine = engine
        self.node_id = node_id
        self.clustered = cache is not None
        self._cache = cache
        self._applied = 0  # the index of the group's last entry in the cache
        self._target: int | None = None  # the index the cache must reach to load
        self._caught_up = asyncio.Event()
        self._loaded = False
        self._follower: asyncio.Task[None] | None = None
        self._moved: Callable[[str, int | None], None] | None = None
        # Persistent sessions this node holds, and per client id the tag of this node's
        # latest session.set not yet seen in the watch stream: until it is, another
        # node's change to that session is older than this node's claim.
        self._local: set[str] = set()
        self._claims: dict[str, str] = {}
        self._new_delayed: set[bytes] = set()  # keys stored before the load ended
        # Sessions another node took or ended, and messages handed over to a session's new
        # node (``owed_elsewhere``: those of sessions that moved while this node was down).
        self.moved_away = 0
        self.handed_over = 0
        self._owed_elsewhere: list[tuple[str, int, list[Owed], Callable[[], None]]] = []
        # Sessions whose queue here stays until what it owed is on their new node: the
        # token of the latest handover.
        self._handing: dict[str, object] = {}
        # Changes waiting for the writer, by what they change (a session, a retained
        # topic): changes to one key are written in order, different keys concurrently.
        self._pending: OrderedDict[str, list[bytes]] = OrderedDict()
        # Engine key-value writes (None: delete), applied after the round's appends.
        self._puts: dict[bytes, bytes | None] = {}
        # Per client id, in order: ("append", [delivery or marker, ...]) and ("drop",); a
        # marker is a header (name, value) of a marker record, or a _SentRun.
        self._shard_ops: dict[str, list[tuple[Any, ...]]] = {}
        # Per client id: id(delivery) -> (delivery, offset) of what is stored and not
        # done, oldest first; what the shard holds before the first is trimmed.
        self._stored: dict[str, _Stored] = {}
        self._end: dict[str, int] = {}  # per client id: the offset after its last append
        self._unstored: dict[int, Delivery] = {}  # queued, append not finished
        self._done_early: set[int] = set()  # done before their append finished
        self._origin: bytes | None = None  # tags the deliveries queued meanwhile
        self._origins: dict[int, bytes] = {}  # id(delivery) -> origin, until appended
        self._packet_ids: dict[int, int] = {}  # id(delivery) -> packet id, until appended
        self._encoded: set[int] = set()  # id(delivery): its record is being appended
        # Markers for deliveries whose record was being appended: id(delivery) -> the
        # packet id it was sent with; id(delivery) of those released.
        self._sent_late: dict[int, int] = {}
        self._released_late: set[int] = set()
        self._shards: set[str] = set()  # queue shards known to exist
        self._after: list[Callable[[], None]] = []
        self._hold = False  # a write an acknowledgement waits for was queued
        self._trim_to: dict[str, int] = {}  # per client id: delete its queue before this
        self._trim_handle: asyncio.TimerHandle | None = None
        self._trims_due = False
        # Inbound QoS 2: per publisher, how many QoS 2 PUBLISHes it sent, and the
        # sessions whose packet ids changed since the last round.
        self._qos2_seq: dict[str, int] = {}
        self._qos2_dirty: dict[str, Session] = {}
        self._wills: dict[str, bytes] = {}  # client id -> the origin tag of its stored will
        self._loaded_delayed: list[DelayedEntry] = []
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

    def _queue_held(self, key: str, command: bytes) -> None:
        """A change the client's acknowledgement (SUBACK, UNSUBACK, a retained PUBLISH's
        PUBACK) promises: the broker's writes wait for its commit."""
        self._pending.setdefault(key, []).append(command)
        self._held()

    def _kick(self) -> None:
        self._idle.clear()
        self._wake.set()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._writer(), name="mqtt-session-store"
            )

    def _held(self) -> None:
        """Something an acknowledgement promises was queued: hold writes until written."""
        self._hold = True
        self.appending = True
        self._kick()

    def session_set(self, client_id: str, owner: str | None, expiry_interval: int) -> None:
        fields: dict[str, Any] = {
            "client_id": client_id,
            "expiry_interval": expiry_interval,
            "node_id": self.node_id,
            "owner": owner,
        }
        if self.clustered:
            fields["claim"] = self._claims[client_id] = os.urandom(8).hex()
            self._local.add(client_id)
            # Back before a handover of its old queue ended: the old queue goes before
            # anything is appended (what is still on its way comes back from the other
            # node, which hands it to the node holding the session).
            if self._handing.pop(client_id, None) is not None:
                self._drop_queue(client_id)
        self._queue("s/" + client_id, _command("session.set", **fields))
        self.session_online(client_id, owner, True)

    def session_online(self, client_id: str, owner: str | None, online: bool) -> None:
        self._puts[_STATE_PREFIX + client_id.encode()] = orjson.dumps(
            {"owner": owner, "offline_since": None if online else time.time()}
        )
        self._kick()

    def session_will(self, client_id: str, will: Any) -> None:
        key = _WILL_PREFIX + client_id.encode()
        if will is None:
            if self._wills.pop(client_id, None) is not None:
                self._puts[key] = None
                self._kick()
            return
        will_id = os.urandom(8).hex()
        self._wills[client_id] = b"w:" + will_id.encode()
        record = _message_json(will.topic, will.payload, will.qos, will.retain, will.properties)
        self._puts[key] = orjson.dumps({"id": will_id, **record})
        self._kick()

    @contextlib.contextmanager
    def will_published(self, client_id: str) -> Iterator[None]:
        origin = self._wills.get(client_id)
        if origin is None:
            yield
            return
        self._origin = origin
        try:
            yield
        finally:
            self._origin = None
            self.session_will(client_id, None)

    def session_deleted(self, client_id: str) -> None:
        # node_id: other nodes of a cluster tell this node's deletes from their own.
        self._queue(
            "s/" + client_id,
            _command("session.delete", client_id=client_id, node_id=self.node_id),
        )
        self._claims.pop(client_id, None)
        self._local.discard(client_id)
        self._drop_local(client_id)

    def session_moved(self, client_id: str, node_id: int | None, handed: int) -> None:
        # Changes of this node's not written yet would change the other node's session.
        self._pending.pop("s/" + client_id, None)
        self._claims.pop(client_id, None)
        self._local.discard(client_id)
        self._drop_local(client_id, queue=client_id not in self._handing)
        self.moved_away += 1
        self.handed_over += handed
        if node_id is None:
            log.info("session %r ended on another node", client_id)
        else:
            log.info(
                "session %r moved to node %d: %d messages it was owed here handed over",
                client_id,
                node_id,
                handed,
            )

    def handing_over(self, client_id: str) -> Callable[[], None]:
        token = self._handing[client_id] = object()
        return functools.partial(self._handed, client_id, token)

    def _handed(self, client_id: str, token: object) -> None:
        if self._handing.get(client_id) is token:  # not back here, nor handed over again
            del self._handing[client_id]
            self._drop_queue(client_id)

    def _drop_local(self, client_id: str, queue: bool = True) -> None:
        """Removes what this node's engine holds of a session (but its queue, unless
        ``queue``)."""
        encoded = client_id.encode()
        self._puts[_STATE_PREFIX + encoded] = None
        self._puts[_WILL_PREFIX + encoded] = None
        self._wills.pop(client_id, None)
        seq = self._qos2_seq.get(client_id)
        if seq is not None:  # the count stays: deliveries tagged with it may outlive it
            self._puts[_QOS2_PREFIX + encoded] = orjson.dumps({"n": seq, "ids": []})
        self._qos2_dirty.pop(client_id, None)
        if queue:
            self._drop_queue(client_id)
        self._kick()

    def _drop_queue(self, client_id: str) -> None:
        self._trim_to.pop(client_id, None)  # offsets of a queue about to go
        self._shard_ops.setdefault(client_id, []).append(("drop",))
        self._kick()

    # ------------------------------------------------------------------ journals

    def journal(self) -> QueueJournal | None:
        return self

    def after_appends(self, callback: Callable[[], None]) -> None:
        if self.appending:
            self._after.append(callback)
        else:
            callback()

    def _shard_append(self, client_id: str, item: Delivery | tuple[str, bytes] | _SentRun) -> None:
        ops = self._shard_ops.setdefault(client_id, [])
        if ops and ops[-1][0] == "append":
            ops[-1][1].append(item)
        else:
            ops.append(("append", [item]))
        self._held()

    def message_queued(self, session: Session, delivery: Delivery, packet_id: int = 0) -> None:
        key = id(delivery)
        self._unstored[key] = delivery
        if packet_id:
            self._packet_ids[key] = packet_id
        if self._origin is not None:
            self._origins[key] = self._origin
        self._shard_append(session.client_id, delivery)

    def message_sent(self, session: Session, delivery: Delivery, packet_id: int) -> None:
        key = id(delivery)
        if key in self._unstored:
            if key in self._encoded:  # a marker follows once the record has its offset
                self._sent_late[key] = packet_id
            else:  # its record is not written yet: it takes the id
                self._packet_ids[key] = packet_id
            return
        entry = self._stored_entry(session.client_id, key)
        if entry is not None:
            self._mark_sent(session.client_id, entry[1], packet_id)

    def _mark_sent(self, client_id: str, offset: int, packet_id: int) -> None:
        ops = self._shard_ops.get(client_id)
        if ops and ops[-1][0] == "append":
            last = ops[-1][1][-1]
            if isinstance(last, _SentRun) and last.extend(offset, packet_id):
                return  # a queue drained in order costs one marker
        self._shard_append(client_id, _SentRun(offset, packet_id))

    def message_done(self, session: Session, delivery: Delivery) -> None:
        key = id(delivery)
        if key in self._unstored:
            self._done_early.add(key)
            return
        stored = self._stored.get(session.client_id)
        if stored is None or key not in stored.entries:
            return
        oldest = stored.is_oldest(delivery)
        del stored.entries[key]
        if oldest:
            self._trim(session.client_id)
        elif len(stored.order) > 2 * len(stored.entries) + 64:
            stored.compact()  # an old delivery not done holds the front

    def _stored_entry(self, client_id: str, key: int) -> tuple[Delivery, int] | None:
        stored = self._stored.get(client_id)
        return None if stored is None else stored.entries.get(key)

    def message_released(self, session: Session, delivery: Delivery) -> None:
        key = id(delivery)
        if key in self._unstored:  # sent by a timer before its record was written
            self._released_late.add(key)
            return
        entry = self._stored_entry(session.client_id, key)
        if entry is not None:  # else its append failed: nothing to mark
            self._shard_append(session.client_id, ("released", b"%d" % entry[1]))

    def qos2_publish(self, session: Session, packet_id: int, publish: Callable[[], int]) -> int:
        client_id = session.client_id
        seq = self._qos2_seq.get(client_id, 0) + 1
        self._qos2_seq[client_id] = seq
        self._origin = b"q:%d:%d:%s" % (seq, packet_id, client_id.encode())
        try:
            code = publish()
        finally:
            self._origin = None
        self._qos2_dirty[client_id] = session
        self._held()
        return code

    def qos2_released(self, session: Session) -> None:
        self._qos2_dirty[session.client_id] = session
        self._held()

    def _qos2_records(self) -> dict[bytes, bytes | None]:
        """The ``mqtt/qos2`` records of the sessions changed, as of now."""
        dirty, self._qos2_dirty = self._qos2_dirty, {}
        records: dict[bytes, bytes | None] = {}
        for client_id, session in dirty.items():
            ids = list(session.qos2_inbound)
            records[_QOS2_PREFIX + client_id.encode()] = orjson.dumps(
                {"n": self._qos2_seq.get(client_id, 0), "ids": ids}
            )
        return records

    def _trim(self, client_id: str) -> None:
        """Trims the shard up to its oldest delivery not done."""
        stored = self._stored.get(client_id)
        first = stored.first_offset() if stored is not None else None
        if first is None:
            first = self._end.get(client_id)
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
                    for item in op[1]:
                        key = id(item)
                        self._unstored.pop(key, None)
                        self._done_early.discard(key)
                        self._origins.pop(key, None)
                        self._packet_ids.pop(key, None)
                        self._encoded.discard(key)
                        self._sent_late.pop(key, None)
                        self._released_late.discard(key)

    async def _append(
        self, client_id: str, shard: str, items: list[Delivery | tuple[str, bytes] | _SentRun]
    ) -> None:
        if shard not in self._shards:
            if shard not in await self.engine.list_shards(shard):
                await self.engine.create_shard(shard, _QUEUE_SHARD)
            self._shards.add(shard)
        origins, packet_ids = self._origins, self._packet_ids
        records = []
        for item in items:
            if isinstance(item, Delivery):
                key = id(item)
                self._encoded.add(key)
                records.append(_queue_record(item, packet_ids.pop(key, 0), origins.pop(key, None)))
            elif isinstance(item, _SentRun):
                records.append(item.record())
            else:
                records.append(_marker_record(item))
        offsets = await self.engine.append(shard, records)
        stored = self._stored.get(client_id)
        if stored is None:
            stored = self._stored[client_id] = _Stored()
        early = False
        for item, offset in zip(items, offsets, strict=True):
            if not isinstance(item, Delivery):
                continue
            key = id(item)
            self._unstored.pop(key, None)
            self._encoded.discard(key)
            late = self._sent_late.pop(key, None)
            if key in self._done_early:
                self._done_early.discard(key)
                self._released_late.discard(key)
                early = True
                continue
            stored.add(item, offset)
            if late is not None:
                self._mark_sent(client_id, offset, late)
            if key in self._released_late:
                self._released_late.discard(key)
                self._shard_append(client_id, ("released", b"%d" % offset))
        self._end[client_id] = offsets.stop
        if early:
            self._trim(client_id)

    def subscription_set(
        self, client_id: str, topic_filter: str, options: SubscriptionOptions
    ) -> None:
        self._queue_held(
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
        self._queue_held(
            "s/" + client_id,
            _command("subscription.delete", client_id=client_id, filter=topic_filter),
        )

    def retained_set(self, message: Message) -> None:
        self._queue_held(
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
        self._queue_held("r/" + topic, _command("retained.delete", topic=topic))

    # ------------------------------------------------------------------ delayed publishes

    def delayed_set(self, due: float, message: Message) -> str | None:
        # Unique across restarts; sorts by when it is due.
        key = f"{int(due * 1000):016d}-{os.urandom(4).hex()}"
        record = _message_json(
            message.topic, message.payload, message.qos, message.retain, message.properties
        )
        record["sender"] = message.sender
        self._puts[_DELAYED_PREFIX + key.encode()] = orjson.dumps(record)
        if self.clustered and not self._loaded:  # scheduled already: the load skips it
            self._new_delayed.add(_DELAYED_PREFIX + key.encode())
        self._held()
        return key

    @contextlib.contextmanager
    def delayed_published(self, key: str | None) -> Iterator[None]:
        if key is None:
            yield
            return
        self._origin = b"d:" + key.encode()
        try:
            yield
        finally:
            self._origin = None
            self._puts[_DELAYED_PREFIX + key.encode()] = None
            self._kick()

    # ------------------------------------------------------------------ the writer

    async def _writer(self) -> None:
        """Writes what is queued, one batch at a time: every key's changes start
        together, so the Raft host commits them in one group commit; engine key-value
        writes follow the batch's appends (the file header says why)."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            pending, self._pending = self._pending, OrderedDict()
            shard_ops, self._shard_ops = self._shard_ops, {}
            puts, self._puts = self._puts, {}
            puts.update(self._qos2_records())
            holding, self._hold = self._hold, False
            trims: dict[str, int] = {}
            if self._trims_due or self._closing:
                self._trims_due = False
                # A queue changing in this batch is trimmed in a later one: its drop and
                # its appends run concurrently with the trims.
                trims = {c: o for c, o in self._trim_to.items() if c not in shard_ops}
                for client_id in trims:
                    del self._trim_to[client_id]
            try:
                _, retry, _ = await asyncio.gather(
                    self._write_engine(shard_ops, puts),
                    self._propose_all(pending),
                    self._apply_trims(trims),
                )
            except Exception:
                # The writer must outlive any failure: the broker's writes wait on it.
                log.exception("session store: a batch of changes was not written")
                retry = [[] for _ in pending]
            if holding and not self._hold:
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
            elif not (self._pending or self._puts or self._shard_ops or self._qos2_dirty):
                self._idle.set()

    async def _write_engine(
        self, shard_ops: dict[str, list[tuple[Any, ...]]], puts: dict[bytes, bytes | None]
    ) -> None:
        await asyncio.gather(
            *(self._run_shard_ops(client_id, ops) for client_id, ops in shard_ops.items())
        )
        try:
            for key, value in puts.items():
                if value is None:
                    await self.engine.delete(key)
                else:
                    await self.engine.put(key, value)
        except StorageError as exc:
            log.warning("session store: key-value records not written: %s", exc)

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

    # ------------------------------------------------------------------ lifecycle

    async def _scan_json(self, prefix: bytes) -> dict[str, Any]:
        return {
            key[len(prefix) :].decode(): orjson.loads(value)
            for key, value in await self.engine.scan(prefix)
        }

    async def _check_version(self) -> None:
        stored = await self.engine.get(_VERSION_KEY)
        if stored is not None and int(stored) > JOURNAL_VERSION:
            raise Corrupted(
                f"MQTT journal format version {int(stored)} is newer than this broker's "
                f"({JOURNAL_VERSION}); upgrade the broker",
                _VERSION_KEY.decode(),
            )
        if stored is None or int(stored) < JOURNAL_VERSION:
            await self.engine.put(_VERSION_KEY, b"%d" % JOURNAL_VERSION)

    async def load(self) -> tuple[list[StoredSession], list[Message]]:
        await self._check_version()
        elsewhere: dict[str, int] = {}  # client id -> the node its record names
        if self._cache is None:
            records = await self.meta.read(GROUP, "sessions") or {}
            retained_records = await self.meta.read(GROUP, "retained") or {}
        else:
            await self._catch_up()
            records = {}
            for client_id, record in self._cache.tables["sessions"].items():
                if record["node_id"] == self.node_id:
                    records[client_id] = record
                else:
                    elsewhere[client_id] = record["node_id"]
            retained_records = dict(self._cache.tables["retained"])
        states = await self._scan_json(_STATE_PREFIX)
        wills = await self._scan_json(_WILL_PREFIX)
        qos2 = await self._scan_json(_QOS2_PREFIX)
        queues = set(await self.engine.list_shards(QUEUE_PREFIX))
        origins: set[bytes] = set()
        sessions = []
        for client_id, record in records.items():
            state = states.get(client_id, {})
            stored = StoredSession(
                client_id,
                state.get("owner"),
                record["expiry_interval"],
                state.get("offline_since"),
            )
            stored.subscriptions = _subscriptions(record)
            shard = _queue_shard(client_id)
            if shard in queues:
                queues.discard(shard)
                self._shards.add(shard)
                await self._load_queue(stored, shard, origins, qos2)
            will = wills.get(client_id)
            if will is not None:
                stored.will = StoredWill(
                    will["topic"],
                    base64.b64decode(will["payload"]),
                    will["qos"],
                    will["retain"],
                    _mqtt_properties(will.get("properties") or {}),
                )
                self._wills[client_id] = b"w:" + will["id"].encode()
            sessions.append(stored)
        for shard in queues:  # a session that ended while its queue was being written
            client_id = shard[len(QUEUE_PREFIX) :]
            if client_id in elsewhere:
                stranded = StoredSession(client_id, None, 0, None)
                await self._load_queue(stranded, shard, origins, qos2)
                self._stored.pop(client_id, None)
                self._end.pop(client_id, None)
                owed = _owed(stranded)
                self.moved_away += 1
                if owed:  # the shard stays until they are there (``handing_over``)
                    self.handed_over += len(owed)
                    self._shards.add(shard)
                    done = self.handing_over(client_id)
                    self._owed_elsewhere.append((client_id, elsewhere[client_id], owed, done))
                    log.info(
                        "session %r moved to node %d while this node was down: %d messages "
                        "it was owed here go there",
                        client_id,
                        elsewhere[client_id],
                        len(owed),
                    )
                    continue
            await self.engine.delete_shard(shard)
        for client_id in elsewhere.keys() & (states.keys() | wills.keys()):
            self._drop_local(client_id, queue=client_id not in self._handing)
        self._restore_qos2(sessions, qos2)
        for stored in sessions:
            tag = self._wills.get(stored.client_id)
            if tag is not None and tag in origins:  # published; its delete was lost
                stored.will = None
                self.session_will(stored.client_id, None)
        await self._read_delayed(origins)
        retained = [
            Message(
                topic,
                base64.b64decode(record["payload"]),
                record["qos"],
                True,
                _mqtt_properties(record.get("properties") or {}),
            )
            for topic, record in retained_records.items()
        ]
        if self._cache is not None:
            sessions = self._still_here(sessions)
        return sessions, retained

    def owed_elsewhere(self) -> list[tuple[str, int, list[Owed], Callable[[], None]]]:
        owed, self._owed_elsewhere = self._owed_elsewhere, []
        return owed

    # ------------------------------------------------------------------ in a cluster

    def follow(self, moved: Callable[[str, int | None], None]) -> None:
        self._moved = moved

    def session_node(self, client_id: str) -> int | None:
        if self._cache is None:
            return None
        record = self._cache.tables["sessions"].get(client_id)
        return None if record is None else cast(int, record["node_id"])

    def session_elsewhere(self, client_id: str) -> StoredSession | None:
        if self._cache is None or not self._loaded:
            return None
        record = self._cache.tables["sessions"].get(client_id)
        if record is None or record["node_id"] == self.node_id:
            return None
        stored = StoredSession(client_id, record.get("owner"), record["expiry_interval"], None)
        stored.subscriptions = _subscriptions(record)
        return stored

    async def _catch_up(self) -> None:
        """Starts following the group's watch stream and waits until the cache holds
        every change acknowledged before now; retries, with a log line, until the group
        has a leader."""
        if self._follower is None:
            self._follower = asyncio.get_running_loop().create_task(
                self._follow(), name="mqtt-session-cache"
            )
        delay, attempt = _BACKOFF, 0
        while True:
            attempt += 1
            try:
                self._target = await self._leader_commit()
                break
            except MetaError as exc:
                if not exc.retriable:
                    raise
                # A forming cluster elects within seconds: only a longer wait is news.
                log.log(
                    logging.INFO if attempt < _QUIET_ATTEMPTS else logging.WARNING,
                    "sessions not loaded yet: the mqtt group has no leader (attempt %d: %s); "
                    "retrying in %.1f s",
                    attempt,
                    str(exc).splitlines()[0],
                    delay,
                )
            await asyncio.sleep(delay)
            delay = min(2 * delay, _BACKOFF_MAX)
        if self._applied < self._target:
            self._caught_up.clear()
            await self._caught_up.wait()
        log.info("sessions: the mqtt group's cache caught up at index %d", self._applied)

    async def _leader_commit(self) -> int:
        """The commit index of the group's leader after a linearizable read: a leader
        serves one only once it has committed an entry of its term, so every change
        acknowledged before the read is at or below it (Raft thesis §6.4). A leader
        elected between the read and the status may not know its commit index yet:
        that window of one election is not covered."""
        watcher = cast(MetaWatcher, self.meta)
        await watcher.read(GROUP, _BARRIER_KEY)
        best: tuple[int, int] | None = None  # (term, commit)
        for address in watcher.addresses:
            try:
                _, groups = await watcher.status(address)
            except MetaError:
                continue  # a node down: another one leads
            for group in groups:
                if group.group == GROUP and group.role == "leader":
                    if best is None or group.term > best[0]:
                        best = (group.term, group.commit)
        if best is None:
            raise MetaUnavailable(f"no node leads group {GROUP!r}")
        return best[1]

    async def _follow(self) -> None:
        """Keeps the cache current from the group's watch stream for as long as the
        store runs, resuming after the last entry applied when the stream breaks."""
        watcher = cast(MetaWatcher, self.meta)
        delay = _BACKOFF
        while True:
            try:
                async for event in watcher.watch(GROUP, self._applied + 1):
                    self._on_event(event)
                    delay = _BACKOFF
            except MetaError as exc:
                log.warning(
                    "session store: the mqtt group's watch stream broke after index %d (%s); "
                    "resuming in %.1f s",
                    self._applied,
                    exc,
                    delay,
                )
            await asyncio.sleep(delay)
            delay = min(2 * delay, _BACKOFF_MAX)

    def _on_event(self, event: Any) -> None:
        cache = self._cache
        assert cache is not None
        if event.kind == "snapshot":
            cache.restore(event.command)
            if self._loaded:  # the entries it stands for were not seen one by one
                self._check_local()
        elif event.kind == "entry" and event.command and not event.error_kind:
            try:
                cache.apply(event.command)
            except MetaCommandError:
                pass  # refused by the group as well: every replica applies it alike
            else:
                if self._loaded:
                    self._check_entry(orjson.loads(event.command))
        self._applied = event.index
        if self._target is not None and self._applied >= self._target:
            self._caught_up.set()

    def _check_entry(self, command: dict[str, Any]) -> None:
        """Another node's session.set or session.delete of a session this node holds
        means the session moved there (or ended there): ``moved``."""
        op = command.get("op")
        if op != "session.set" and op != "session.delete":
            return
        client_id = command.get("client_id")
        if not isinstance(client_id, str) or client_id not in self._local:
            return
        if command.get("node_id") == self.node_id:
            if op == "session.set" and self._claims.get(client_id) == command.get("claim"):
                del self._claims[client_id]  # this node's latest claim is in the group
            return
        if client_id not in self._claims and self._moved is not None:
            node_id = command.get("node_id") if op == "session.set" else None
            self._moved(client_id, node_id if isinstance(node_id, int) else None)

    def _check_local(self) -> None:
        assert self._cache is not None
        sessions = self._cache.tables["sessions"]
        for client_id in list(self._local):
            record = sessions.get(client_id)
            if client_id in self._claims or self._moved is None:
                continue
            if record is None:
                self._moved(client_id, None)
            elif record["node_id"] != self.node_id:
                self._moved(client_id, record["node_id"])

    def _still_here(self, sessions: list[StoredSession]) -> list[StoredSession]:
        """The loaded sessions whose record still names this node: another node may have
        taken one while the queues were read (its entry came in meanwhile). From here on,
        with no wait until the broker has them, changes reach ``moved``."""
        assert self._cache is not None
        records = self._cache.tables["sessions"]
        kept = []
        for stored in sessions:
            record = records.get(stored.client_id)
            if record is not None and record["node_id"] == self.node_id:
                kept.append(stored)
            else:
                self._drop_local(stored.client_id)
        self._local.update(stored.client_id for stored in kept)
        self._loaded = True
        self._new_delayed.clear()
        return kept

    async def _load_queue(
        self, stored: StoredSession, shard: str, origins: set[bytes], qos2: dict[str, Any]
    ) -> None:
        offset = await self.engine.earliest_offset(shard)
        end = await self.engine.latest_offset(shard)
        loaded: list[tuple[int, Delivery, int]] = []  # (offset, delivery, packet id)
        released: set[int] = set()
        sent: dict[int, int] = {}  # offset -> packet id
        voided: set[int] = set()
        unacknowledged: list[int] = []
        while offset < end:
            for record in await self.engine.read(shard, offset):
                offset = record.offset + 1
                fields = dict(record.headers)
                if record.key is None:  # a marker
                    if "released" in fields:
                        released.add(int(fields["released"]))
                    elif "sent" in fields:
                        first, packet_id, count = map(int, fields["sent"].split(b":"))
                        for k in range(count):
                            sent[first + k] = (packet_id + k - 1) % 65535 + 1
                    elif "void" in fields:
                        voided.add(int(fields["void"]))
                    continue
                origin = fields.get("origin")
                if origin is not None:
                    origins.add(origin)
                    if origin.startswith(b"q:") and self._qos2_unacknowledged(origin, qos2):
                        unacknowledged.append(record.offset)
                delivery = _queued_delivery(record.key, record.value, fields)
                loaded.append((record.offset, delivery, int(fields.get("pid", 0))))
        new_voids = [at for at in unacknowledged if at not in voided]
        if new_voids:
            # Written before the broker serves: a later record for the publisher must not
            # make these count as acknowledged.
            written = await self.engine.append(
                shard, [_marker_record(("void", b"%d" % at)) for at in new_voids]
            )
            end = written.stop
            log.info(
                "session %s: %d stored deliveries of QoS 2 PUBLISHes never acknowledged "
                "voided (their publishers resend them)",
                stored.client_id,
                len(new_voids),
            )
        voided.update(new_voids)
        entries = _Stored()
        for at, delivery, packet_id in loaded:
            if at in voided:
                continue
            if at in released:
                stored.released.add(len(stored.queued))
            stored.queued.append(delivery)
            stored.packet_ids.append(sent.get(at, packet_id))
            entries.add(delivery, at)
        self._stored[stored.client_id] = entries
        self._end[stored.client_id] = end

    def _qos2_unacknowledged(self, origin: bytes, qos2: dict[str, Any]) -> bool:
        """Whether the QoS 2 PUBLISH a delivery came from was never acknowledged: its
        deliveries were stored, its packet id record was not (the crash came between
        the two, and the PUBREC waited for both). Its publisher resends it; the
        deliveries are voided so that the resend reaches every subscriber once."""
        _, seq_text, _, client = origin.split(b":", 3)
        client_id, seq = client.decode(), int(seq_text)
        self._qos2_seq[client_id] = max(seq, self._qos2_seq.get(client_id, 0))
        return seq > qos2.get(client_id, {}).get("n", 0)

    def _restore_qos2(self, sessions: list[StoredSession], records: dict[str, Any]) -> None:
        """Inbound packet ids awaiting PUBREL; how many QoS 2 PUBLISHes each publisher
        sent (kept after its session ends, so that the count never goes back)."""
        for client_id, record in records.items():
            self._qos2_seq[client_id] = max(record["n"], self._qos2_seq.get(client_id, 0))
        for stored in sessions:
            record = records.get(stored.client_id)
            stored.qos2_inbound = sorted(record["ids"]) if record else []

    async def _read_delayed(self, origins: set[bytes]) -> None:
        self._loaded_delayed = []
        for key, value in await self.engine.scan(_DELAYED_PREFIX):
            if key in self._new_delayed:
                continue
            name = key[len(_DELAYED_PREFIX) :].decode()
            if b"d:" + name.encode() in origins:  # fired; its delete was lost
                self._puts[key] = None
                self._kick()
                continue
            record = orjson.loads(value)
            message = Message(
                record["topic"],
                base64.b64decode(record["payload"]),
                record["qos"],
                record["retain"],
                _mqtt_properties(record.get("properties") or {}),
                record.get("sender", ""),
            )
            self._loaded_delayed.append(DelayedEntry(name, int(name.split("-")[0]) / 1000, message))

    async def load_delayed(self) -> list[DelayedEntry]:
        entries, self._loaded_delayed = self._loaded_delayed, []
        return entries

    async def close(self) -> None:
        self._closing = True
        if self._follower is not None:
            self._follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follower
            self._follower = None
        if self._trim_handle is not None:
            self._trim_handle.cancel()
            self._trim_handle = None
        if self._trim_to:
            self._kick()
        if self._task is None:
            return
        await self._idle.wait()
        self._task.cancel()
        self._task = None
