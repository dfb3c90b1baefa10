"""Starts and stops the roles of one process.

A node runs any subset of the roles ``meta``, ``broker`` and ``engine``
(``[node] roles``). The broker role serves MQTT and Kafka, the engine role opens the
configured storage engine under the data directory, and the meta role starts first: with
a persistent engine the broker keeps persistent sessions and retained messages in its
``mqtt`` group (``SessionStore``, docs/durability.md). ``run`` is what
``robustmq-server start`` calls: it installs the event loop (uvloop when available),
opens the listeners, prints one line per listener and the data directory, and shuts down
gracefully on SIGINT/SIGTERM. Once started, a node registers itself in the cluster's node
registry and heartbeats (``robustmq/meta/registry.py``). With a persistent engine and a
Meta Service, the broker's users and rules live in the ``mqtt`` group too
(``robustmq/broker/mqtt/meta_rules.py``).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import resource
import signal
import sys
import time
import weakref
from typing import TYPE_CHECKING, Any

from aiohttp import web

from robustmq import __version__
from robustmq.bridge import Bridges
from robustmq.broker.kafka.offsets import MetaOffsets, OffsetStore
from robustmq.broker.kafka.server import KafkaBroker
from robustmq.broker.kafka.topics_store import MetaTopics, TopicStore
from robustmq.broker.mqtt.meta_rules import MetaRules
from robustmq.broker.mqtt.persistence import MetaSessionStore, NullStore, SessionStore
from robustmq.broker.mqtt.server import MqttBroker
from robustmq.config import Config, StorageConfig
from robustmq.http.server import start_http
from robustmq.meta.registry import MetaAccess, NodeInfo, NodeRegistry
from robustmq.storage import (
    EngineConfig,
    LevelDBConfig,
    MemoryConfig,
    SegmentConfig,
    StorageEngine,
    open_engine,
)

if TYPE_CHECKING:
    from robustmq.broker.mqtt.cluster_link import ClusterLink
    from robustmq.meta.client import MetaClient
    from robustmq.meta.service import MetaServer

log = logging.getLogger("robustmq")

RULES_LOAD_WAIT = 30.0
"""Seconds a single node's start waits for its users and rules (its one-member meta
group elects itself within a few seconds)."""


class Node:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.mqtt: MqttBroker | None = None
        self.kafka: KafkaBroker | None = None
        self.storage: StorageEngine | None = None
        self.bridges: Bridges | None = None
        self.rules: MetaRules | None = None  # users and rules from the Meta Service
        self.meta: MetaServer | None = None
        self.info: NodeInfo | None = None  # what the node registry holds about it
        self.registry: NodeRegistry | None = None
        self.link: ClusterLink | None = None  # publishes to and from the other brokers
        self._link_client: MetaClient | None = None
        self._registry_client: MetaClient | None = None
        self._session_client: MetaClient | None = None  # the session store's, in a cluster
        self.http: web.AppRunner | None = None
        self.listeners: list[tuple[str, str, int]] = []  # (name, host, port), once started
        self.ready = False  # every role started (what /ready reports)

    async def start(self) -> list[tuple[str, str, int]]:
        """Starts the roles; returns (listener, host, port) for every open listener."""
        listeners: list[tuple[str, str, int]] = []
        started_ms = int(time.time() * 1000)
        if "engine" in self.config.node.roles:
            self.storage = await open_engine(
                engine_config(self.config.storage, self.config.node.data_dir)
            )
        if "meta" in self.config.node.roles:
            # Before the broker: it loads its persistent sessions from the meta service.
            # Imported here: grpc and protobuf cost a tenth of a second.
            from robustmq.meta.service import start_meta_node

            cluster = self.config.cluster
            self.meta = await start_meta_node(
                self.config.node.id,
                cluster.peer_addresses(),
                cluster.bind,
                cluster.grpc_port,
                self.config.node.data_dir,
            )
            if self.meta.port:
                listeners.append(("grpc", cluster.bind, self.meta.port))
            if "broker" not in self.config.node.roles:
                # What brokers forward here (a retained message, a takeover) concerns
                # no client of this node: taken and dropped, not refused and resent.
                self.meta.forward_sink = _nothing_to_deliver
        if "broker" in self.config.node.roles:
            self.rules, rules_wait = self._meta_rules()
            self.mqtt = MqttBroker(
                self.config.mqtt,
                str(self.config.node.id),
                self.config.auth,
                self._session_store(),
                users=self.rules.users if self.rules is not None else None,
            )
            if self.rules is not None:
                await self.rules.start(self.mqtt, rules_wait)
            self.link = self._cluster_link(self.mqtt)
            listeners += await self.mqtt.start()
            if self.link is not None and self.meta is not None:
                self.meta.forward_sink = self.link.receive
                self.link.start()
            if self.config.kafka.port and self.storage is not None:
                self.kafka = KafkaBroker(
                    self.config.kafka,
                    self.storage,
                    self.config.node.id,
                    self.mqtt.security.users,
                    *self._kafka_stores(self.storage),
                )
                listeners += await self.kafka.start()
            elif self.config.kafka.port:
                log.warning("kafka listener not started: this node has no engine role")
            bridge = self.config.bridge
            if self.kafka is not None:
                self.bridges = Bridges(bridge, self.mqtt, self.kafka)
                await self.bridges.start()
            elif bridge.mqtt_to_kafka or bridge.kafka_to_mqtt:
                log.warning("bridges not started: this node runs no Kafka listener")
        if self.config.http.port:
            self.http, (host, port) = await start_http(self, self.config.http)
            listeners.append(("http", host, port))
        self.listeners = listeners
        self._start_registry(started_ms)
        self.ready = True
        return listeners

    def _start_registry(self, started_ms: int) -> None:
        """Registers this node in the cluster's node registry and heartbeats it
        (``robustmq/meta/registry.py``): through this node's own one-member group, or
        through ``MetaClient`` (leader redirect) to the cluster's meta nodes; nowhere when
        the node reaches no Meta Service."""
        node_id = self.config.node.id
        peers = self.config.cluster.peer_addresses()
        address = ""
        if self.meta is not None and self.meta.port:
            address = self.meta.host.addresses[node_id]
        self.info = NodeInfo(
            node_id=node_id,
            address=address,
            roles=tuple(self.config.node.roles),
            listeners=tuple(self.listeners),
            version=__version__,
            started_ms=started_ms,
        )
        others = [a for i, a in peers if i != node_id]
        meta: MetaAccess
        if self.meta is not None and not others:
            meta = self.meta.host
        elif others:
            from robustmq.meta.client import MetaClient

            # Short calls: a heartbeat that cannot get through is late, and the next one
            # is due in an interval anyway.
            self._registry_client = MetaClient(
                [address, *others] if address else others, timeout=2.0, retries=3
            )
            meta = self._registry_client
        else:
            return
        self.registry = NodeRegistry(self.info, meta)
        self.registry.start()

    def _meta_rules(self) -> tuple[MetaRules | None, float]:
        """The broker's cache of the users and rules in the Meta Service and how long the
        start waits for it to load: none with the memory engine or without a Meta
        Service (files and config only, in memory); the full load on a single node,
        none in a cluster, whose group may get a leader only once its nodes have started
        (docs/security.md)."""
        if self.config.storage.engine == "memory":
            return None, 0.0
        host = self.meta.host if self.meta is not None else None
        addresses = [a for i, a in self.config.cluster.peer_addresses() if i != self.config.node.id]
        auth, mqtt = self.config.auth, self.config.mqtt
        if host is not None and not addresses:
            return MetaRules(host, host, auth, mqtt), RULES_LOAD_WAIT
        if not addresses:
            return None, 0.0
        from robustmq.meta.client import MetaClient

        if host is not None and self.meta is not None and self.meta.port:
            addresses.insert(0, host.addresses[self.config.node.id])
        client = MetaClient(addresses)
        return MetaRules(client, host or client, auth, mqtt, own_client=client), 0.0

    def _session_store(self) -> SessionStore:
        """Where the broker keeps persistent sessions and retained messages: nowhere with
        the memory engine (docs/durability.md), else the mqtt group of this node's own
        one-member meta role, or of the cluster's meta nodes over gRPC (leader redirect,
        and a cache of the group fed by its watch stream: ``clustered``)."""
        if self.storage is None or self.config.storage.engine == "memory":
            return NullStore()
        node_id = self.config.node.id
        peers = self.config.cluster.peer_addresses()
        if self.meta is not None and len(peers) <= 1:
            return MetaSessionStore(self.meta.host, self.storage, node_id)
        if not peers:
            log.warning("sessions are not persisted: this node has no meta role and no peers")
            return NullStore()
        from robustmq.meta.client import MetaClient
        from robustmq.meta.groups import MqttStateMachine

        # This node's own meta role first: its watch stream is the nearest.
        addresses = sorted((address for _, address in peers), key=lambda a: a != self._own())
        self._session_client = MetaClient(addresses)
        return MetaSessionStore(
            self._session_client, self.storage, node_id, cache=MqttStateMachine()
        )

    def _own(self) -> str:
        """This node's meta address, or "" without a meta role."""
        if self.meta is None or not self.meta.port:
            return ""
        return self.meta.host.addresses.get(self.config.node.id, "")

    def _kafka_stores(self, storage: StorageEngine) -> tuple[OffsetStore | None, TopicStore | None]:
        """Where Kafka committed offsets and topics go: the offsets and cluster groups of
        this node's meta role; None (the storage engine: memory only with the memory
        engine) when there is no such role, and in a multi-node cluster."""
        if self.config.storage.engine == "memory" or self.meta is None:
            return None, None
        if len(self.config.cluster.peer_addresses()) > 1:
            log.warning(
                "kafka topics and committed offsets stay in the storage engine in a "
                "multi-node cluster"
            )
            return None, None
        return MetaOffsets(self.meta.host, storage), MetaTopics(self.meta.host, storage)

    def _cluster_link(self, mqtt: MqttBroker) -> ClusterLink | None:
        """The forwarding of publishes between the brokers of a cluster
        (``robustmq/broker/mqtt/cluster_link.py``): on a node with the meta role and
        peers, which follows the routes through its own replica and serves ``Forward`` on
        its gRPC listener. A broker without the meta role forwards nothing (logged)."""
        peers = self.config.cluster.peer_addresses()
        if len(peers) < 2:
            return None
        if self.meta is None:
            log.warning(
                "this broker has no meta role: publishes are not forwarded to or from the "
                "other nodes of the cluster"
            )
            return None
        import grpc

        from robustmq.broker.mqtt.cluster_link import ClusterLink
        from robustmq.meta.client import CHANNEL_OPTIONS, MetaClient

        host = self.meta.host
        self._link_client = MetaClient([a for _, a in peers], timeout=5.0, retries=3)
        link = ClusterLink(
            self.config.node.id,
            mqtt,
            self._link_client,
            watch=lambda: host.watch("cluster", 1),
            routes=lambda: host.groups["cluster"].sm.read("routes"),
            addresses=lambda: host.addresses,
            brokers=lambda: _maybe_brokers(host.addresses, host.groups["cluster"].sm.read("nodes")),
            channel=lambda address: grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS),
        )
        mqtt.router.link = link
        return link

    async def stop(self) -> None:
        self.ready = False
        if self.registry is not None:
            await self.registry.stop()
        if self._registry_client is not None:
            await self._registry_client.close()
        if self.bridges is not None:
            await self.bridges.stop()
        if self.http is not None:
            await self.http.cleanup()
        if self.kafka is not None:
            await self.kafka.stop()
        if self.link is not None:
            if self.meta is not None:
                self.meta.forward_sink = None
            await self.link.stop()
        if self._link_client is not None:
            await self._link_client.close()
        if self.mqtt is not None:
            await self.mqtt.stop()
        if self._session_client is not None:
            await self._session_client.close()
        if self.rules is not None:
            await self.rules.stop()
        if self.storage is not None:
            await self.storage.close()
        if self.meta is not None:
            await self.meta.stop()


async def _nothing_to_deliver(frame: bytes) -> None:
    return None


def _maybe_brokers(addresses: dict[int, str], nodes: dict[str, Any]) -> set[int]:
    """The nodes that may run a broker: every member, but those the node registry lists
    without the broker role (a node not registered yet may be one)."""
    return {
        node_id
        for node_id in addresses
        if "broker" in nodes.get(str(node_id), {"roles": ["broker"]})["roles"]
    }


def engine_config(storage: StorageConfig, data_dir: str) -> EngineConfig:
    """The storage engine's own config from the ``[storage]`` section."""
    if storage.engine == "memory":
        return MemoryConfig()
    path = os.path.join(data_dir, storage.engine)
    if storage.engine == "leveldb":
        return LevelDBConfig(path=path, fsync=storage.fsync)  # type: ignore[arg-type]
    return SegmentConfig(path=path, fsync=storage.fsync)  # type: ignore[arg-type]


def setup_logging(level: str, fmt: str) -> None:
    if fmt == "json":
        pattern = (
            '{"ts":"%(asctime)s","level":"%(levelname)s","logger":"%(name)s","msg":"%(message)s"}'
        )
    else:
        pattern = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=level.upper(), format=pattern, stream=sys.stderr)


class _FdTransports(weakref.WeakValueDictionary[int, Any]):
    """uvloop's registry of transports by file descriptor, filing plain weak references.

    uvloop keeps every transport in a ``weakref.WeakValueDictionary`` (its loop's
    ``_transports``), only to refuse ``add_reader``/``add_writer`` on a descriptor a live
    transport uses. That dictionary files each value as a ``KeyedRef``, made by Python
    code, whose callback runs more Python code when the transport goes: about 1.5 us of
    an accepted connection's 20-odd in a connection storm. Here an entry is a plain weak
    reference (C); a closed transport's entry stays until its descriptor is reused, and
    reads as absent meanwhile (``WeakValueDictionary`` reads a dead reference so)."""

    data: dict[int, weakref.ref[Any]]  # WeakValueDictionary's own, undeclared in typeshed

    def __setitem__(self, key: int, value: Any) -> None:
        self.data[key] = weakref.ref(value)


def lighten_transport_registry(loop: asyncio.AbstractEventLoop) -> bool:
    """Makes uvloop's transport registry ``_FdTransports``; False (nothing changed) when
    ``loop`` is not uvloop's or holds no single empty ``WeakValueDictionary`` (another
    version of uvloop, or done already)."""
    if not type(loop).__module__.startswith("uvloop"):
        return False
    found = [o for o in gc.get_referents(loop) if type(o) is weakref.WeakValueDictionary]
    if len(found) != 1 or found[0]:  # only an empty one: nothing filed under the old class
        return False
    found[0].__class__ = _FdTransports
    return True


async def _serve(config: Config) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    lighten_transport_registry(loop)
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    node = Node(config)
    try:
        listeners = await node.start()
        # What start built lives as long as the process: keep it out of the cyclic
        # collector's full passes (about 10 ms over the ~50,000 objects of a started
        # node, a stall every client would see as latency).
        gc.freeze()
        for name, host, port in listeners:
            print(f"robustmq: {name} listening on {host}:{port}", flush=True)
        if node.storage is not None:
            print(f"robustmq: storage engine {config.storage.engine}", flush=True)
        print(f"robustmq: data directory {os.path.abspath(config.node.data_dir)}", flush=True)
        await stop.wait()
        log.info("shutting down")
    finally:
        await node.stop()


def raise_open_files_limit(wanted: int) -> int:
    """Lifts the open-files limit toward ``wanted`` connections plus room for files: every
    client is a file descriptor, and the default soft limit (often 1,024) would refuse
    clients long before ``mqtt.max_connections``. Returns the limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted + 1024
    if soft >= target:
        return soft
    for limit in (target, hard):  # raising the hard limit needs privileges; try first
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, max(limit, hard)))
        except (ValueError, OSError):
            continue
        soft = limit
        break
    if soft < target:
        # A warning only where it bites: a large limit below a huge default is normal.
        log.log(
            logging.WARNING if soft < 65536 else logging.INFO,
            "open-files limit is %d: at most about %d clients can connect "
            "(raise it with `ulimit -n`, or LimitNOFILE= under systemd)",
            soft,
            max(soft - 1024, 0),
        )
    return soft


def run(config: Config) -> None:
    """Runs the node in the foreground until SIGINT or SIGTERM."""
    setup_logging(config.log.level, config.log.format)
    os.makedirs(config.node.data_dir, exist_ok=True)
    raise_open_files_limit(config.mqtt.max_connections)
    try:
        import uvloop
    except ImportError:
        asyncio.run(_serve(config))
    else:
        uvloop.run(_serve(config))
