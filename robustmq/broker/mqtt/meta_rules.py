"""The broker's cache of the users and rules that live in the Meta Service.

On a node that reaches a Meta Service with a persistent storage engine, the ``mqtt``
group holds the users (unless ``auth.password_file`` is set), the ACL rules (unless
``auth.acl_file`` is set), the topic rewrite rules and the auto-subscriptions
(``robustmq/meta/groups/mqtt.py``). ``MetaRules`` keeps a replica of those tables,
``RuleReplica``, fed by the group's watch stream from its first index (a snapshot event
replaces the replica), so that it is, at every index, exactly what the group held there.
At start a linearizable read is the barrier: once the replica has applied what this
node's meta role (or the meta nodes) had applied after that read, the cache is loaded
and put in force in the broker, and every later change is applied as it arrives, at
every node alike: users into the ``MemoryUserStore`` authentication reads, ACL rules
into the broker's ``Acl`` with every connected client re-authorized, rewrite rules and
auto-subscriptions into the broker's ``rewriter`` and ``auto_subscribe``. The config
file's ``[[mqtt.rewrite]]`` and ``auto_subscribe`` rules seed the group once, while it
holds no list of that kind; until the cache is loaded they are the rules in force. The
REST API changes rules through ``propose`` and ``replace`` (``robustmq/http/api``);
where rules live without a Meta Service (files, the config) is ``security.py``'s and
``server.py``'s business, and the wiring is in ``robustmq/node.py``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

from robustmq.broker.auth import scram
from robustmq.broker.auth.acl import Acl, Rule, parse_rule
from robustmq.broker.auth.users import MemoryUserStore, User, user_from_record
from robustmq.broker.mqtt.rewrite import TopicRewriter
from robustmq.broker.mqtt.server import auto_subscriptions
from robustmq.errors import ConfigError, MetaCommandError, MetaError, MetaUnavailable
from robustmq.meta.groups import encode_command
from robustmq.meta.groups.base import StateMachine
from robustmq.meta.groups.mqtt import RULE_OPS, RULE_TABLES
from robustmq.meta.registry import MetaAccess

if TYPE_CHECKING:
    from robustmq.broker.mqtt.server import MqttBroker
    from robustmq.config import AuthConfig, MqttConfig
    from robustmq.meta.client import MetaClient
    from robustmq.meta.host import MultiRaftHost

log = logging.getLogger("robustmq.broker.rules")

GROUP = "mqtt"
RETRY_INTERVAL = 0.5
"""Seconds between two attempts to reach the group (at start, or after its watch broke)."""
LOG_INTERVAL = 30.0
"""Seconds between two warnings that the group is still out of reach."""
CHANGE_TIMEOUT = 5.0
"""Seconds a change made here waits for this node's cache to show it."""
KINDS = {"acl": "acl", "rewrite": "rewrite", "autosub": "auto_subscribe"}
"""Rule list kinds: the op prefix (``<kind>.replace``) and the table holding the list."""
_TABLE_OF_OP = {op: KINDS.get(op.partition(".")[0], "users") for op in RULE_OPS}
# How ``encode_command`` starts every command: past it, a command that is none of ours is
# told by its first bytes, without parsing (a retained message's payload can be large).
_COMMAND_START = b'{"v":1,"op":"'
_RULE_OP_STARTS = tuple({op.partition(".")[0].encode() + b"." for op in RULE_OPS})


class RuleReplica(StateMachine):
    """The rule tables of the ``mqtt`` group, applying the group's own rule commands (a
    command the group refused is refused here the same way; other commands are not
    this replica's)."""

    NAME = GROUP
    TABLES = RULE_TABLES
    OPS = RULE_OPS

    def apply_event(self, kind: str, data: bytes) -> set[str]:
        """One watch event applied; the tables it changed."""
        if kind == "snapshot":
            tables = orjson.loads(data).get("tables", {})
            self.tables = {t: tables.get(t, {}) for t in self.TABLES}
            return set(self.TABLES)
        if kind != "entry" or not data:
            return set()
        if data.startswith(_COMMAND_START) and not data.startswith(
            _RULE_OP_STARTS, len(_COMMAND_START)
        ):
            return set()
        op = orjson.loads(data).get("op")
        table = _TABLE_OF_OP.get(op) if isinstance(op, str) else None
        if table is None:
            return set()
        try:
            self.apply(data)
        except MetaCommandError:
            return set()
        return {table}

    def rule_list(self, table: str) -> tuple[list[Any], int] | None:
        """(rules, revision) of a rule list; None while the group holds none."""
        record = self.tables[table].get("rules")
        return None if record is None else (record["rules"], record["revision"])


class MetaRules:
    """The cache of one broker. ``meta`` takes proposals (the local host on a single
    node, a ``MetaClient`` with leader redirect in a cluster); ``follow`` serves the
    watch stream and the start's read (this node's own host when it runs the meta role,
    which serves both as a follower too)."""

    def __init__(
        self,
        meta: MetaAccess,
        follow: MultiRaftHost | MetaClient,
        auth: AuthConfig,
        mqtt: MqttConfig,
        own_client: MetaClient | None = None,
    ) -> None:
        self.meta = meta
        self.follow = follow
        self.own_client = own_client  # closed at stop
        # Without a password file the users are the group's; without an ACL file, so
        # are the ACL rules (docs/security.md).
        self.users = None if auth.password_file else MemoryUserStore(loaded=False)
        self.manages_acl = not auth.acl_file
        self.acl_default_allow = auth.acl_default == "allow"
        self.seeds: dict[str, list[Any]] = {
            "rewrite": TopicRewriter(mqtt.rewrite).rules,
            "autosub": [{"topic": t, "qos": q} for t, q in auto_subscriptions(mqtt.auto_subscribe)],
        }
        self.replica = RuleReplica()
        self.index = 0  # the last index of the group the replica has applied
        self.loaded = asyncio.Event()
        self.broker: MqttBroker | None = None
        self._changed = asyncio.Event()  # set, and replaced, at every batch applied
        self._tasks: list[asyncio.Task[None]] = []

    # ------------------------------------------------------------------ lifecycle

    async def start(self, broker: MqttBroker, wait: float) -> None:
        """Follows the group for ``broker``; waits up to ``wait`` seconds for the cache
        to be loaded (0: loads in the background)."""
        self.broker = broker
        if self.manages_acl and broker.security.acl is None:
            broker.security.acl = Acl([], self.acl_default_allow, broker.stats)
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._follow()), loop.create_task(self._load())]
        if wait <= 0:
            return
        try:
            await asyncio.wait_for(self.loaded.wait(), wait)
        except TimeoutError:
            log.warning(
                "users and rules not loaded from the Meta Service within %.0f s; loading "
                "goes on in the background (until then clients with credentials are "
                "answered 'server unavailable')",
                wait,
            )

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self.own_client is not None:
            await self.own_client.close()

    # ------------------------------------------------------------------ following

    async def _follow(self) -> None:
        """Applies the group's watch stream to the replica, resuming after the last
        index applied whenever the stream breaks."""
        from robustmq.meta.host import MultiRaftHost

        last_warning = 0.0
        loop = asyncio.get_running_loop()
        while True:
            try:
                if isinstance(self.follow, MultiRaftHost):
                    watch = self.follow.watch(GROUP, self.index + 1)
                    try:
                        while True:
                            events = await watch.next_events()
                            self._apply([(e.kind, e.index, e.data) for e in events])
                    finally:
                        watch.close()
                else:
                    async for event in self.follow.watch(GROUP, self.index + 1):
                        self._apply([(event.kind, event.index, event.command)])
            except MetaError as exc:
                if loop.time() - last_warning > LOG_INTERVAL:
                    last_warning = loop.time()
                    log.warning("watch of the mqtt group broke (%s); resuming", exc)
            await asyncio.sleep(RETRY_INTERVAL)

    def _apply(self, events: list[tuple[str, int, bytes]]) -> None:
        dirty: set[str] = set()
        for kind, index, data in events:
            try:
                dirty |= self.replica.apply_event(kind, data)
            except (orjson.JSONDecodeError, AttributeError):
                log.error("mqtt group entry %d is not a JSON command: skipped", index)
            self.index = index
        if dirty and self.loaded.is_set():
            self._put_in_force(dirty)
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def _until(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            await self._changed.wait()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Whether ``predicate`` (over the cache) held within ``timeout`` seconds."""
        try:
            await asyncio.wait_for(self._until(predicate), timeout)
        except TimeoutError:
            return False
        return True

    async def _load(self) -> None:
        """The barrier read, then the cache put in force once the replica has caught up
        with it, then the config file's rules seeded."""
        loop = asyncio.get_running_loop()
        first_try = last_warning = loop.time()
        while True:
            try:
                # Through the watch's own source, whose applied index is then known.
                await self.follow.read(GROUP, "acl")
                target = await self._applied()
                break
            except MetaError as exc:
                if loop.time() - last_warning > LOG_INTERVAL:
                    last_warning = loop.time()
                    log.warning(
                        "users and rules: the Meta Service does not answer yet after %.0f s "
                        "(%s); retrying",
                        loop.time() - first_try,
                        exc,
                    )
            await asyncio.sleep(RETRY_INTERVAL)
        await self._until(lambda: self.index >= target)
        self._put_in_force(set(RULE_TABLES))
        self.loaded.set()
        log.info(
            "users and rules loaded from the Meta Service at index %d (%d users, %d ACL rules)",
            self.index,
            len(self.replica.tables["users"]),
            len((self.replica.rule_list("acl") or ([], 0))[0]),
        )
        await self._seed()

    async def _applied(self) -> int:
        """What the replica must reach to include the barrier read: this node's applied
        index, or the highest a meta node reports."""
        from robustmq.meta.host import MultiRaftHost

        if isinstance(self.follow, MultiRaftHost):
            return next(g["applied"] for g in self.follow.status() if g["group"] == GROUP)
        applied = []
        for address in self.follow.addresses:
            try:
                _, groups = await self.follow.status(address)
            except MetaError:
                continue
            applied += [g.applied for g in groups if g.group == GROUP]
        if not applied:
            raise MetaUnavailable("no meta node reported the mqtt group's applied index")
        return max(applied)

    async def _seed(self) -> None:
        for kind, rules in self.seeds.items():
            if not rules:
                continue
            if self.replica.rule_list(KINDS[kind]) is not None:
                log.info(
                    "%s rules come from the Meta Service; the config file's are not read",
                    kind,
                )
                continue
            try:
                result = await self.meta.propose(
                    GROUP, encode_command(f"{kind}.replace", rules=rules, seed=True)
                )
            except MetaError as exc:
                log.warning("%s rules of the config file not seeded (%s)", kind, exc)
                continue
            if result["applied"]:
                log.info(
                    "seeded the Meta Service with the config file's %d %s rules", len(rules), kind
                )

    # ------------------------------------------------------------------ in force

    def _put_in_force(self, tables: set[str]) -> None:
        broker = self.broker
        assert broker is not None
        if "users" in tables and self.users is not None:
            self._users_in_force(broker)
        if "acl" in tables and self.manages_acl:
            listed = self.replica.rule_list("acl")
            rules = _parsed(listed[0] if listed else [])
            if rules is not None and broker.security.acl is not None:
                broker.security.acl.rules = rules
                reauthorize(broker)
        listed = self.replica.rule_list("rewrite")
        if "rewrite" in tables and listed is not None:
            try:
                broker.rewriter = TopicRewriter(listed[0])
            except ConfigError as exc:
                log.error("rewrite rules of the Meta Service refused, the old ones stay: %s", exc)
        listed = self.replica.rule_list("auto_subscribe")
        if "auto_subscribe" in tables and listed is not None:
            try:
                broker.auto_subscribe = auto_subscriptions(listed[0])
            except ConfigError as exc:
                log.error("auto-subscriptions of the Meta Service refused, the old stay: %s", exc)

    def _users_in_force(self, broker: MqttBroker) -> None:
        store = self.users
        assert store is not None
        records = self.replica.tables["users"]
        for user in store.users():
            if user.username not in records:
                store.remove(user.username)
        for name, record in records.items():
            known = store.get(name)
            if known is not None and _same(known, record):
                continue
            try:
                store.put(user_from_record(record))
            except ValueError as exc:
                log.error("user %r of the Meta Service is not usable: %s", name, exc)
        store.loaded = True
        security = broker.security
        security.refresh_authn()
        broker.auth_methods.pop(scram.METHOD, None)
        broker.auth_methods.update(security.enhanced_auth_methods())

    # ------------------------------------------------------------------ changes

    def check_loaded(self) -> None:
        if not self.loaded.is_set():
            raise MetaUnavailable("the users and rules are not loaded from the Meta Service yet")

    def rule_list(self, kind: str) -> tuple[list[Any], int]:
        """(rules, revision) a change of ``kind`` starts from: the group's, or while it
        holds none the config file's (revision 0)."""
        listed = self.replica.rule_list(KINDS[kind])
        if listed is not None:
            return list(listed[0]), listed[1]
        return list(self.seeds.get(kind, [])), 0

    async def replace(self, kind: str, rules: list[Any], revision: int) -> None:
        """The rule list of ``kind`` replaced by ``rules`` if it is still at ``revision``
        (``MetaConflict`` otherwise); returns once this node applies it."""
        self.check_loaded()
        result = await self.meta.propose(
            GROUP, encode_command(f"{kind}.replace", rules=rules, revision=revision)
        )
        table = KINDS[kind]
        await self.wait_for(
            lambda: (self.replica.rule_list(table) or ((), 0))[1] >= result["revision"],
            CHANGE_TIMEOUT,
        )

    async def set_user(self, record: dict[str, str], create: bool) -> None:
        """``user.set`` of ``record`` (``users.user_record``): a new user when ``create``
        (``MetaConflict`` if it exists), else an existing one's new password."""
        self.check_loaded()
        await self.meta.propose(GROUP, encode_command("user.set", **record, create=create))
        store = self.users
        assert store is not None
        name = record["username"]
        await self.wait_for(
            lambda: (u := store.get(name)) is not None and _same(u, record), CHANGE_TIMEOUT
        )

    async def delete_user(self, username: str) -> bool:
        """``user.delete``; whether the user existed."""
        self.check_loaded()
        result = await self.meta.propose(GROUP, encode_command("user.delete", username=username))
        store = self.users
        assert store is not None
        await self.wait_for(lambda: store.get(username) is None, CHANGE_TIMEOUT)
        return bool(result["deleted"])


def _same(user: User, record: dict[str, str]) -> bool:
    scram_text = user.scram.format() if user.scram is not None else ""
    return user.password_record == record.get("password_hash") and scram_text == record.get(
        "scram", ""
    )


def _parsed(lines: list[str]) -> list[Rule] | None:
    """The ACL rules of ``lines``; None (logged) when one does not parse."""
    try:
        return [parse_rule(line, i + 1) for i, line in enumerate(lines)]
    except ValueError as exc:
        log.error("ACL rules of the Meta Service refused, the old ones stay: %s", exc)
        return None


def reauthorize(broker: MqttBroker) -> None:
    """Every connected client's authorizer rebuilt from the current rules (superusers
    have none), so a change applies to the next PUBLISH or SUBSCRIBE of each."""
    acl = broker.security.acl
    assert acl is not None
    for conn in broker.connections:
        if conn.connected and not conn.closing and not conn.superuser:
            conn.authorizer = acl.authorizer_for(
                conn.client_id, conn.username, conn.ip, conn.claims
            )
