"""HTTP on ``[http] port``: ``/health`` (liveness), ``/ready`` (readiness) and
``/metrics`` (Prometheus). ``/health`` and ``/ready`` need no token; the rest, when
``admin_token`` is set, needs ``Authorization: Bearer <token>``. Errors are JSON
``{"error": {"code": ..., "message": ...}}``.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from robustmq.observability.metrics import exposition, registry_for

if TYPE_CHECKING:
    from robustmq.config import HttpConfig
    from robustmq.node import Node

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_OPEN_PATHS = frozenset({"/health", "/ready"})


def error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


def build_app(node: Node, config: HttpConfig) -> web.Application:
    registry = registry_for(node.mqtt)

    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        if config.admin_token and request.path not in _OPEN_PATHS:
            given = request.headers.get("Authorization", "")
            if not hmac.compare_digest(given, f"Bearer {config.admin_token}"):
                return error(401, "unauthorized", "send Authorization: Bearer <admin token>")
        return await handler(request)

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def ready(request: web.Request) -> web.Response:
        if not node.ready:
            return web.json_response({"status": "starting"}, status=503)
        return web.json_response({"status": "ready"})

    async def metrics(request: web.Request) -> web.Response:
        body = exposition(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def not_found(request: web.Request) -> web.Response:
        return error(404, "not_found", f"no such endpoint: {request.method} {request.path}")

    app = web.Application(middlewares=[auth])
    app.router.add_get("/health", health)
    app.router.add_get("/ready", ready)
    app.router.add_get("/metrics", metrics)
    app.router.add_route("*", "/{tail:.*}", not_found)
    return app


async def start_http(node: Node, config: HttpConfig) -> tuple[web.AppRunner, tuple[str, int]]:
    runner = web.AppRunner(build_app(node, config), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, config.bind, config.port, reuse_address=True)
    await site.start()
    sock = site._server.sockets[0]  # type: ignore[union-attr]
    host, port = sock.getsockname()[:2]
    return runner, (host, port)
