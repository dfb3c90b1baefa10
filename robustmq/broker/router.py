"""Routing: which sessions get a message, and the retained-message store.

The subscription index is the compiled topic trie; match results are cached per topic
until the next subscription change, so a topic published repeatedly costs one dict
look-up. Shared subscriptions (``$share/{group}/{filter}``) deliver each message to one
member chosen by the configured strategy. Retained messages are kept in a topic tree that
answers "which retained topics does this filter match" in time proportional to the
answer. Sessions are opaque here apart from ``client_id``, ``connection`` and ``deliver``.
In a cluster, ``link`` (``robustmq/broker/mqtt/cluster_link.py``) learns which filters
this node's sessions hold and every retained message set here, and messages other nodes
forward arrive through ``route_forwarded``.
"""

from __future__ import annotations

import logging
import random
import time
import zlib
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol

from robustmq._core import lane, trie
from robustmq.broker.mqtt.message import Message
from robustmq.broker.mqtt.persistence import NullStore, SessionStore
from robustmq.broker.mqtt.session import Delivery, Owed, Session, SubscriptionOptions
from robustmq.broker.mqtt.sys_topics import is_sys_topic
from robustmq.errors import MqttError

log = logging.getLogger(__name__)

_CACHE_LIMIT = 65536

# One session's share of a topic: (session, No Local, maximum QoS, Retain As Published).
Target = tuple[Session, bool, int, bool]


# The delivery plan of one topic: a list of Targets that counts the messages routed by
# it while cached (``messages``, read by ``GET /api/v1/mqtt/topics``). The selected QoS 0
# lane twin's type, so that the compiled lane counts in a C field.
if TYPE_CHECKING:
    from robustmq._core.lanes import Plan
else:
    Plan = lane.Plan


class InternalSubscriber(Protocol):
    """A subscriber inside the broker that is not a session (the MQTT → Kafka bridge): no
    connection, no packet ids, no flow control. It is handed decoded messages, a whole
    forwarding-lane run in one call, and must not block: the publisher's read waits."""

    def deliver_messages(self, messages: list[Message]) -> None: ...


class ClusterHook(Protocol):
    """What the router tells a cluster link: a filter a session of this node subscribed
    to or left (once per session and filter), a retained message set or cleared by a
    client of this node, a client connected here and what a session that moved owed its
    client (the broker tells those two); and it answers whether another node has a
    member of a shared group."""

    def subscribed(self, topic_filter: str) -> None: ...

    def unsubscribed(self, topic_filter: str) -> None: ...

    def retained(self, message: Message) -> None: ...

    def connected(self, client_id: str) -> None: ...

    def hand_over(
        self, client_id: str, node_id: int, owed: list[Owed], done: Callable[[], None]
    ) -> int: ...

    def shared_elsewhere(self, topic: str, group: str, topic_filter: str) -> bool: ...


class Router:
    def __init__(
        self,
        shared_strategy: str = "round_robin",
        max_retained: int = 1_000_000,
        max_retained_payload: int = 1_048_576,
    ) -> None:
        self.subscriptions = trie.SubscriptionTrie()
        self.retained = trie.TopicTree()
        self.shared_strategy = shared_strategy
        self.max_retained = max_retained
        self.max_retained_payload = max_retained_payload
        self.retained_rejected = 0
        # Where clients' retained messages are kept across restarts (the broker sets it).
        self.store: SessionStore = NullStore()
        self._system_retained: set[str] = set()
        self._cache: dict[str, tuple[list[Any], list[Any]]] = {}
        # The delivery plans per topic, for the trie generation and the max_topic_levels
        # they were made with; the QoS 0 lane reads it too (see lanes.py).
        self.plan_cache = lane.PlanCache()
        self._plans: dict[str, Plan | None] = self.plan_cache.plans
        self._turn: dict[tuple[str, str], int] = {}
        # Internal subscribers (``subscribe_internal``) in a trie of their own: the
        # session plans stay as they are, and a broker without any pays one int test.
        self.internal = trie.SubscriptionTrie()
        self.internal_subscriptions = 0
        self._internal_cache: dict[str, list[InternalSubscriber]] = {}
        self._internal_generation = -1
        self.link: ClusterHook | None = None
        self._sticky: dict[tuple[str, str], Session] = {}

    # ------------------------------------------------------------------ subscriptions

    def subscribe(self, session: Session, topic_filter: str, options: SubscriptionOptions) -> bool:
        """Adds or replaces a subscription; True if it is new."""
        new = self.subscriptions.add(topic_filter, session, options)
        if new and self.link is not None:
            self.link.subscribed(topic_filter)
        return new

    def unsubscribe(self, session: Session, topic_filter: str) -> bool:
        shared = trie.parse_shared(topic_filter)
        if shared is not None:
            if self._sticky.get(shared) is session:
                del self._sticky[shared]  # don't keep an ended session alive
            # A member left: the round starts over (and a group that is gone leaves no key).
            self._turn.pop(shared, None)
        removed = self.subscriptions.remove(topic_filter, session)
        if removed and self.link is not None:
            self.link.unsubscribed(topic_filter)
        return removed

    def subscribe_internal(self, subscriber: InternalSubscriber, topic_filter: str) -> None:
        """Hands ``subscriber`` every message published on a topic ``topic_filter``
        matches, whatever the publisher's QoS, as it arrives (retained ones are not
        replayed). ``$share`` filters are not for internal subscribers."""
        if self.internal.add(topic_filter, subscriber, None):
            self.internal_subscriptions += 1

    def unsubscribe_internal(self, subscriber: InternalSubscriber, topic_filter: str) -> None:
        if self.internal.remove(topic_filter, subscriber):
            self.internal_subscriptions -= 1

    def internal_for(self, topic: str) -> list[InternalSubscriber]:
        """The internal subscribers of ``topic`` (cached per topic until they change)."""
        if self.internal.generation != self._internal_generation:
            self._internal_cache.clear()
            self._internal_generation = self.internal.generation
        found = self._internal_cache.get(topic)
        if found is None:
            if len(self._internal_cache) >= _CACHE_LIMIT:
                self._internal_cache.clear()
            found = self._internal_cache[topic] = list(
                dict.fromkeys(s for s, _ in self.internal.match(topic)[0])
            )
        return found

    def route_run(self, topic: str, publishes: Iterable[Any], sender: str) -> None:
        """The internal subscribers' share of a forwarding-lane run (PUBLISH packets on
        ``topic`` from ``sender``): one list of messages, one call per subscriber."""
        subscribers = self.internal_for(topic)
        if subscribers:
            messages = [Message(p.topic, p.payload, p.qos, False, None, sender) for p in publishes]
            for subscriber in subscribers:
                subscriber.deliver_messages(messages)

    def _match(self, topic: str) -> tuple[list[Any], list[Any]]:
        if self.subscriptions.generation != self.plan_cache.generation:
            self._new_generation()
        found = self._cache.get(topic)
        if found is None:
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            found = self._cache[topic] = self.subscriptions.match(topic)
        return found

    def _new_generation(self) -> None:
        self._cache.clear()
        self._plans.clear()
        self.plan_cache.generation = self.subscriptions.generation

    def forwarding(self, topic: str, max_levels: int) -> Plan | None:
        """The delivery plan for ``topic`` (see ``_plan``), validating the topic name
        the first time it is seen: the forwarding lane decodes only a run's first packet.
        A changed ``max_levels`` (a hot config change) empties the cache, so every topic
        is checked against the new limit."""
        if self.subscriptions.generation != self.plan_cache.generation:
            self._new_generation()
        if max_levels != self.plan_cache.levels:
            self._plans.clear()
            self.plan_cache.levels = max_levels
        try:
            return self._plans[topic]  # one call for a topic seen before
        except KeyError:
            pass
        try:
            trie.validate_topic_name(topic, max_levels)
        except MqttError:
            self._plans[topic] = None
            return None
        return self._plan(topic)

    def _plan(self, topic: str) -> Plan | None:
        """Each session subscribed to ``topic`` once, with what its subscriptions ask:
        (session, No Local, maximum QoS, Retain As Published). None when messages on the
        topic need ``_collect`` one by one: shared subscriptions, subscription identifiers,
        overlapping subscriptions that disagree on No Local, and ``$`` topics."""
        try:
            return self._plans[topic]
        except KeyError:
            pass
        if len(self._plans) >= _CACHE_LIMIT:
            self._plans.clear()
        plan: Plan | None = None
        if not topic.startswith("$"):
            normal, shared = self._match(topic)
            if not shared and not any(options.subscription_id for _, options in normal):
                merged: dict[Session, Target] = {}
                for session, options in normal:
                    before = merged.get(session)
                    if before is None:
                        merged[session] = (
                            session,
                            options.no_local,
                            options.qos,
                            options.retain_as_published,
                        )
                    elif before[1] != options.no_local:
                        break
                    else:  # overlapping subscriptions: one delivery, highest QoS (§3.3.4)
                        merged[session] = (
                            session,
                            options.no_local,
                            max(before[2], options.qos),
                            before[3] or options.retain_as_published,
                        )
                else:
                    plan = Plan(merged.values())
        self._plans[topic] = plan
        return plan

    def plans(self) -> list[tuple[str, Plan]]:
        """The topics with a cached delivery plan, and their plans."""
        if self.subscriptions.generation != self.plan_cache.generation:
            self._new_generation()
        return [(topic, plan) for topic, plan in self._plans.items() if plan is not None]

    def route(self, message: Message) -> int:
        """Delivers ``message`` to every matching session, and to the internal
        subscribers; returns how many sessions got it."""
        if self.internal_subscriptions:
            for subscriber in self.internal_for(message.topic):
                subscriber.deliver_messages([message])
        if self.subscriptions.generation != self.plan_cache.generation:
            self._new_generation()
        plan = self._plan(message.topic)
        if plan is not None:
            plan.messages += 1
            sender, qos, retain = message.sender, message.qos, message.retain
            delivered = 0
            for session, no_local, max_qos, retain_as_published in plan:
                if no_local and session.client_id == sender:
                    continue
                session.deliver(
                    Delivery(
                        message,
                        qos if qos < max_qos else max_qos,
                        retain and retain_as_published,
                        (),
                    )
                )
                delivered += 1
            return delivered
        normal, shared = self._match(message.topic)
        if not normal and not shared:
            return 0
        targets: dict[Session, Delivery] = {}
        for session, options in normal:
            self._collect(targets, session, options, message, None)
        link = self.link
        for group, topic_filter, members in shared:
            if (
                link is not None
                and not _connected_member(members)
                and link.shared_elsewhere(message.topic, group, topic_filter)
            ):
                continue  # no member here is connected: the link forwards it to one
            member = self._pick(group, topic_filter, members, message, None)
            if member is not None:
                self._collect(targets, member, members[member], message, (group, topic_filter))
        for session, delivery in targets.items():
            session.deliver(delivery)
        return len(targets)

    def route_forwarded(
        self, message: Message, shared: frozenset[tuple[str, str]], from_node: int
    ) -> int:
        """Delivers a message node ``from_node`` forwarded: to every matching session
        (but one whose client moved to that node, which delivered it there), and to one
        member of each shared subscription group in ``shared`` (the groups the
        publisher's node chose this node for); never to internal subscribers, since the
        publisher's node already handed it to its own (and nothing is forwarded twice)."""
        normal, groups = self._match(message.topic)
        targets: dict[Session, Delivery] = {}
        for session, options in normal:
            if session.moved_to != from_node:
                self._collect(targets, session, options, message, None)
        for group, topic_filter, members in groups:
            if (group, topic_filter) in shared:
                member = self._pick(group, topic_filter, members, message, None)
                if member is not None:
                    key = (group, topic_filter)
                    self._collect(targets, member, members[member], message, key)
        for session, delivery in targets.items():
            session.deliver(delivery)
        return len(targets)

    def shared_online_here(self, topic: str) -> set[tuple[str, str]]:
        """The shared subscription groups matching ``topic`` with a member connected to
        this node (which takes the group's messages published here)."""
        return {
            (group, topic_filter)
            for group, topic_filter, members in self._match(topic)[1]
            if _connected_member(members)
        }

    def redistribute(self, delivery: Delivery, leaving: Session) -> bool:
        """Gives a shared-subscription delivery that ``leaving`` did not acknowledge to
        another member of its group; False when no other member exists."""
        assert delivery.shared is not None
        group, topic_filter = delivery.shared
        members = None
        for g, f, found in self._match(delivery.message.topic)[1]:
            if (g, f) == delivery.shared:
                members = found
                break
        if not members:
            return False
        session = self._pick(group, topic_filter, members, delivery.message, leaving)
        if session is None:
            return False
        session.deliver(delivery._replace(qos=min(delivery.message.qos, members[session].qos)))
        return True

    @staticmethod
    def _collect(
        targets: dict[Session, Delivery],
        session: Session,
        options: SubscriptionOptions,
        message: Message,
        shared: tuple[str, str] | None,
    ) -> None:
        # MQTT 5 §3.8.3.1: No Local does not apply to shared subscriptions.
        if options.no_local and shared is None and session.client_id == message.sender:
            return
        qos = min(message.qos, options.qos)
        retain = message.retain and options.retain_as_published
        sub_ids: tuple[int, ...] = (options.subscription_id,) if options.subscription_id else ()
        before = targets.get(session)
        if before is not None:
            # Overlapping subscriptions: one delivery, highest QoS, all identifiers (§3.3.4).
            qos = max(qos, before.qos)
            retain = retain or before.retain
            sub_ids = before.sub_ids + sub_ids
            shared = None
        targets[session] = Delivery(message, qos, retain, sub_ids, shared)

    def _pick(
        self,
        group: str,
        topic_filter: str,
        members: dict[Session, Any],
        message: Message,
        leaving: Session | None,
    ) -> Session | None:
        online = [s for s in members if s.connection is not None and s is not leaving]
        candidates = online or [s for s in members if s is not leaving]
        if not candidates:
            return None
        key = (group, topic_filter)
        strategy = self.shared_strategy
        if strategy == "random":
            return random.choice(candidates)
        if strategy == "hash_clientid":
            return candidates[zlib.crc32(message.sender.encode()) % len(candidates)]
        if strategy == "sticky":
            chosen = self._sticky.get(key)
            if chosen not in candidates:
                chosen = self._sticky[key] = random.choice(candidates)
            return chosen
        turn = self._turn.get(key, 0)
        self._turn[key] = turn + 1
        return candidates[turn % len(candidates)]

    # ------------------------------------------------------------------ retained

    def clear_retained(self, topic: str, local: bool = True) -> bool:
        """Removes a topic's retained message, also from the durable store (unless another
        node cleared it: ``local`` False); False if it had none."""
        if not self.retained.delete(topic):
            return False
        if local:
            self.store.retained_deleted(topic)
        return True

    def retain(self, message: Message, local: bool = True) -> None:
        """Stores, replaces or (empty payload) clears the retained message of a topic.

        The limits are for clients' messages: the broker's own ``$SYS`` statistics are
        kept apart from the count. A message set by a client of this node (``local``) is
        made durable and told to the cluster link; one another node set (and made
        durable) only replaces this node's copy.
        """
        if is_sys_topic(message.topic):
            self._system_retained.add(message.topic)
            self.retained.set(message.topic, message)
            return
        if local and self.link is not None:
            self.link.retained(message)
        if not message.payload:
            self.clear_retained(message.topic, local)
            return
        stored = len(self.retained) - len(self._system_retained)
        if len(message.payload) > self.max_retained_payload or (
            stored >= self.max_retained and self.retained.get(message.topic) is None
        ):
            self.retained_rejected += 1
            log.warning(
                "retained message on %r not stored: limit reached (%d messages, %d bytes each)",
                message.topic,
                self.max_retained,
                self.max_retained_payload,
            )
            return
        self.retained.set(message.topic, message)
        if local:
            self.store.retained_set(message)

    def retained_for(self, topic_filter: str) -> list[Message]:
        """Retained messages matching a filter, expired ones dropped."""
        now = time.monotonic()
        found = []
        for topic, message in self.retained.match(topic_filter):
            if message.expired(now):
                self.clear_retained(topic)
            else:
                found.append(message)
        return found


def _connected_member(members: dict[Session, Any]) -> bool:
    """Whether a shared group has a member connected to this node: it takes the group's
    messages published here; else the cluster link sends them to a node with one."""
    return any(member.connection is not None for member in members)
