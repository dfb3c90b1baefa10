"""Starts and stops the roles of one process.

A node runs any subset of the roles ``meta``, ``broker`` and ``engine``
(``[node] roles``). Today the broker role serves MQTT (sessions in memory) and the engine
role opens the configured storage engine under the data directory; the broker starts
storing messages there with durable sessions, and the meta role comes with the Meta
Service. ``run`` is what ``robustmq-server start`` calls: it
installs the event loop (uvloop when available), opens the listeners, prints one line
per listener and the data directory, and shuts down gracefully on SIGINT/SIGTERM.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

from aiohttp import web

from robustmq.broker.mqtt.server import MqttBroker
from robustmq.config import Config, StorageConfig
from robustmq.http.server import start_http
from robustmq.storage import (
    EngineConfig,
    LevelDBConfig,
    MemoryConfig,
    SegmentConfig,
    StorageEngine,
    open_engine,
)

log = logging.getLogger("robustmq")


class Node:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.mqtt: MqttBroker | None = None
        self.storage: StorageEngine | None = None
        self.http: web.AppRunner | None = None
        self.ready = False  # every role started (what /ready reports)

    async def start(self) -> list[tuple[str, str, int]]:
        """Starts the roles; returns (listener, host, port) for every open listener."""
        listeners: list[tuple[str, str, int]] = []
        if "engine" in self.config.node.roles:
            self.storage = await open_engine(
                engine_config(self.config.storage, self.config.node.data_dir)
            )
        if "broker" in self.config.node.roles:
            self.mqtt = MqttBroker(self.config.mqtt, str(self.config.node.id))
            listeners += await self.mqtt.start()
        if self.config.http.port:
            self.http, (host, port) = await start_http(self, self.config.http)
            listeners.append(("http", host, port))
        self.ready = True
        return listeners

    async def stop(self) -> None:
        self.ready = False
        if self.http is not None:
            await self.http.cleanup()
        if self.mqtt is not None:
            await self.mqtt.stop()
        if self.storage is not None:
            await self.storage.close()


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


async def _serve(config: Config) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    node = Node(config)
    try:
        listeners = await node.start()
        for name, host, port in listeners:
            print(f"robustmq: {name} listening on {host}:{port}", flush=True)
        if node.storage is not None:
            print(f"robustmq: storage engine {config.storage.engine}", flush=True)
        print(f"robustmq: data directory {os.path.abspath(config.node.data_dir)}", flush=True)
        await stop.wait()
        log.info("shutting down")
    finally:
        await node.stop()


def run(config: Config) -> None:
    """Runs the node in the foreground until SIGINT or SIGTERM."""
    setup_logging(config.log.level, config.log.format)
    os.makedirs(config.node.data_dir, exist_ok=True)
    try:
        import uvloop
    except ImportError:
        asyncio.run(_serve(config))
    else:
        uvloop.run(_serve(config))
