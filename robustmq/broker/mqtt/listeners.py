"""The MQTT listeners: TCP, TLS, WebSocket and WebSocket/TLS.

Each listener hands bytes to an ``MqttConnection``; TCP and TLS do it through asyncio's
own transports, WebSocket through ``WebSocketTransport``, which carries MQTT packets in
binary frames on the configured path with the ``mqtt`` subprotocol (MQTT 5 §6). TLS
listeners start only when a certificate is configured. Where the event loop waits in an
epoll instance whose descriptor ``loop_epoll_fd`` finds, new connections keep it awake
for a moment (``lanes.AcceptPoll``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import select
import ssl
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from robustmq._core import lane
from robustmq.broker.mqtt.connection import MqttConnection
from robustmq.errors import ConfigError

if TYPE_CHECKING:
    from robustmq.broker.mqtt.server import MqttBroker
    from robustmq.config import MqttConfig

log = logging.getLogger(__name__)

# Frames waiting in a WebSocket's outbox that pause / resume its connection's output.
_HIGH_WATER = 1024
_LOW_WATER = 256
# How long a closing WebSocket connection may take to send what it still has queued.
_SEND_TIMEOUT = 5.0


def tls_context(config: MqttConfig) -> ssl.SSLContext:
    """The server-side TLS context of the TLS listeners, from the certificate settings."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(config.certfile, config.keyfile or None)
        if config.verify_client != "none":
            if not config.cafile:
                raise ConfigError("mqtt.cafile", "", "a CA file when verify_client is set")
            ctx.load_verify_locations(config.cafile)
            ctx.verify_mode = (
                ssl.CERT_REQUIRED if config.verify_client == "required" else ssl.CERT_OPTIONAL
            )
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            "mqtt.certfile", config.certfile, f"a readable PEM certificate ({exc})"
        ) from None
    return ctx


class WebSocketTransport(asyncio.Transport):
    """The slice of asyncio.Transport that MqttConnection uses, over one WebSocket."""

    def __init__(
        self, ws: web.WebSocketResponse, request: web.Request, conn: MqttConnection
    ) -> None:
        super().__init__()
        self._ws = ws
        self._conn = conn
        self._paused = False
        self._request = request
        self._outbox: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._closing = False
        self.reading = asyncio.Event()  # cleared while backpressure holds this client back
        self.reading.set()
        self._sender = asyncio.get_running_loop().create_task(self._send_loop())

    async def _send_loop(self) -> None:
        while True:
            data = await self._outbox.get()
            if data is None:
                break
            if self._paused and self._outbox.qsize() <= _LOW_WATER:
                self._paused = False
                self._conn.resume_writing()
            try:
                await self._ws.send_bytes(data)
            except (ConnectionError, RuntimeError):
                break
        await self._ws.close()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._closing:
            self._outbox.put_nowait(bytes(data))
            if not self._paused and self._outbox.qsize() > _HIGH_WATER:
                # Same flow control as a TCP transport: the connection stops sending QoS 0
                # and queues QoS 1/2 until the client reads.
                self._paused = True
                self._conn.pause_writing()

    def close(self) -> None:
        if not self._closing:
            self._closing = True
            self._outbox.put_nowait(None)

    def is_closing(self) -> bool:
        return self._closing

    async def sent(self, timeout: float) -> None:
        """Waits (bounded) until what was written before ``close()`` has gone out: the
        handler must not return earlier, or aiohttp drops a refusal's CONNACK."""
        try:
            await asyncio.wait_for(asyncio.shield(self._sender), timeout)
        except (asyncio.TimeoutError, ConnectionError, RuntimeError):
            self._sender.cancel()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return (
                self._request.transport.get_extra_info("peername")
                if self._request.transport
                else default
            )
        if name == "ssl_object" and self._request.transport is not None:
            return self._request.transport.get_extra_info("ssl_object", default)
        return default

    def pause_reading(self) -> None:
        self.reading.clear()

    def resume_reading(self) -> None:
        self.reading.set()


def listener_of(transport: asyncio.BaseTransport) -> str:
    """The kind of listener a connection came through: tcp, tls, ws or wss."""
    tls = transport.get_extra_info("ssl_object") is not None
    if isinstance(transport, WebSocketTransport):
        return "wss" if tls else "ws"
    return "tls" if tls else "tcp"


def _websocket_app(broker: MqttBroker) -> web.Application:
    async def handle(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(protocols=("mqtt",), max_msg_size=broker.config.max_packet_size)
        if not ws.can_prepare(request).ok:
            return web.Response(status=400, text="MQTT over WebSocket: send a WebSocket upgrade\n")
        await ws.prepare(request)
        conn = MqttConnection(broker)
        transport = WebSocketTransport(ws, request, conn)
        conn.connection_made(transport)
        try:
            async for msg in ws:
                if msg.type == WSMsgType.BINARY:
                    conn.data_received(msg.data)
                elif msg.type == WSMsgType.TEXT:
                    # MQTT 5 §6: a text frame ends the connection.
                    log.info(
                        "client %r (%s): text WebSocket frame; closing", conn.client_id, conn.peer
                    )
                    break
                if conn.closing:
                    break
                await transport.reading.wait()
        finally:
            transport.close()
            conn.connection_lost(None)
            await transport.sent(_SEND_TIMEOUT)
        return ws

    app = web.Application()
    app.router.add_get(broker.config.ws_path, handle)
    return app


async def loop_epoll_fd(loop: asyncio.AbstractEventLoop) -> int | None:
    """The descriptor of the epoll instance ``loop`` waits in; None where there is no
    single one to find (not Linux, or a loop that waits otherwise).

    It is found by what it reports: the read end of a pipe, registered with the loop and
    made readable, is ready in exactly that one of the process's epoll instances. uvloop
    (libuv) and the standard library's selector loop both register descriptors
    level-triggered and file their events under the descriptor, so looking at the
    instance takes nothing from the loop."""
    if not os.path.isdir("/proc/self/fd"):
        return None
    r, w = os.pipe()
    seen = loop.create_future()

    def readable() -> None:
        if not seen.done():
            seen.set_result(None)

    try:
        loop.add_reader(r, readable)
    except NotImplementedError:  # a loop without readers (Windows' proactor)
        os.close(r)
        os.close(w)
        return None
    found: list[int] = []
    try:
        os.write(w, b"\0")
        await asyncio.wait_for(seen, 5.0)  # the loop has polled with the pipe in its set
        for name in os.listdir("/proc/self/fd"):
            try:
                if os.readlink(f"/proc/self/fd/{name}") != "anon_inode:[eventpoll]":
                    continue
                ep = select.epoll.fromfd(os.dup(int(name)))
            except OSError:
                continue  # gone meanwhile (the listing's own descriptor, say)
            with ep:
                if any(fd == r for fd, _ in ep.poll(0)):
                    found.append(int(name))
    except (OSError, asyncio.TimeoutError):
        return None
    finally:
        loop.remove_reader(r)
        os.close(r)
        os.close(w)
    return found[0] if len(found) == 1 else None


async def start_listeners(broker: MqttBroker) -> tuple[list[Any], list[tuple[str, str, int]]]:
    """Opens every configured listener; returns (servers to close, (name, host, port))."""
    cfg = broker.config
    loop = asyncio.get_running_loop()
    servers: list[Any] = []
    opened: list[tuple[str, str, int]] = []
    ctx = tls_context(cfg) if cfg.certfile else None
    if broker.lane_context.accept_poll is None:
        fd = await loop_epoll_fd(loop)
        if fd is not None:
            broker.lane_context.accept_poll = lane.AcceptPoll(
                fd, lane.ACCEPT_POLL_NS, loop.call_soon
            )
    for name, port, tls in (("mqtt", cfg.port, None), ("mqtts", cfg.tls_port, ctx)):
        if port and (name == "mqtt" or tls is not None):
            server = await loop.create_server(
                functools.partial(MqttConnection, broker),  # no Python frame per accept
                cfg.bind,
                port,
                ssl=tls,
                reuse_address=True,
                reuse_port=cfg.reuse_port,
                backlog=1024,
            )
            servers.append(server)
            opened.append((name, *server.sockets[0].getsockname()[:2]))
    for name, port, tls in (("ws", cfg.ws_port, None), ("wss", cfg.wss_port, ctx)):
        if port and (name == "ws" or tls is not None):
            runner = web.AppRunner(_websocket_app(broker), access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, cfg.bind, port, ssl_context=tls, reuse_address=True)
            await site.start()
            servers.append(runner)
            sock = site._server.sockets[0]  # type: ignore[union-attr]
            opened.append((name, *sock.getsockname()[:2]))
    return servers, opened
