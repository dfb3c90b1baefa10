"""The HTTP listener on ``[http] port``: registers the route table of ``http/routes.py``
(REST API under ``/api/v1``, ``/health``, ``/ready``, ``/metrics``) on aiohttp.

Two middlewares apply to every request: the admin token (``Authorization: Bearer <token>``
when ``admin_token`` is set, except on the open routes) and the error shape: whatever
fails, unknown paths and methods included, is answered as JSON
``{"error": {"code": ..., "message": ...}}`` with its HTTP status. What each endpoint does
is in ``http/api/``; the OpenAPI document in ``http/openapi.py``.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from robustmq.errors import ApiError
from robustmq.http.api.common import Context, Route
from robustmq.http.routes import ROUTES
from robustmq.observability.metrics import registry_for

if TYPE_CHECKING:
    from robustmq.config import HttpConfig
    from robustmq.node import Node

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_OPEN_PATHS = frozenset(r.path for r in ROUTES if r.open)


def error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


def _handler(ctx: Context, route: Route) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        result: Any = await route.handler(ctx, request)
        if isinstance(result, web.StreamResponse):
            return result
        if route.status == 204:
            return web.Response(status=204)
        return web.json_response(result, status=route.status)

    return handle


def build_app(node: Node, config: HttpConfig) -> web.Application:
    ctx = Context(node, registry=registry_for(node))

    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        if config.admin_token and request.path not in _OPEN_PATHS:
            given = request.headers.get("Authorization", "")
            # Bytes: hmac.compare_digest refuses str holding non-ASCII with a TypeError.
            # aiohttp passes undecodable header bytes on as surrogates, hence surrogatepass.
            expected = f"Bearer {config.admin_token}".encode("utf-8", "surrogatepass")
            if not hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected):
                return error(401, "unauthorized", "send Authorization: Bearer <admin token>")
        return await handler(request)

    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as exc:
            return error(exc.status, exc.error_code, exc.message)
        except web.HTTPNotFound:
            return error(404, "not_found", f"no such endpoint: {request.method} {request.path}")
        except web.HTTPMethodNotAllowed as exc:
            allowed = ", ".join(sorted(exc.allowed_methods))
            response = error(
                405, "method_not_allowed", f"{request.method} not allowed; use {allowed}"
            )
            response.headers["Allow"] = allowed  # RFC 9110 §15.5.6
            return response
        except web.HTTPException as exc:
            return error(exc.status, exc.reason.lower().replace(" ", "_"), exc.text or exc.reason)
        except Exception:
            log.exception("http %s %s failed", request.method, request.path)
            return error(500, "internal_error", "the server failed; see its log")

    app = web.Application(middlewares=[errors, auth])
    for route in ROUTES:
        app.router.add_route(route.method, route.match, _handler(ctx, route))
    return app


async def start_http(node: Node, config: HttpConfig) -> tuple[web.AppRunner, tuple[str, int]]:
    runner = web.AppRunner(build_app(node, config), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, config.bind, config.port, reuse_address=True)
    await site.start()
    sock = site._server.sockets[0]  # type: ignore[union-attr]
    host, port = sock.getsockname()[:2]
    return runner, (host, port)
