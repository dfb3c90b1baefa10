"""The route table of the HTTP listener: every endpoint, in one tuple.

``http/server.py`` registers exactly these routes and ``http/openapi.py`` documents
exactly these, so the OpenAPI document served at ``/api/v1/openapi.json`` cannot drift
from what the server answers. The operational endpoints (``/health``, ``/ready``,
``/metrics``, the document itself) live here; the resources in ``http/api/``.
"""

from __future__ import annotations

import functools
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from robustmq.http.api import cluster, cluster_config, kafka, mqtt, mqtt_rules, storage
from robustmq.http.api.common import STR, Context, Route, obj
from robustmq.http.openapi import document
from robustmq.observability.metrics import exposition


async def health(ctx: Context, request: web.Request) -> Any:
    return {"status": "ok"}


async def ready(ctx: Context, request: web.Request) -> Any:
    if not ctx.node.ready:
        return web.json_response({"status": "starting"}, status=503)
    return {"status": "ready"}


async def metrics(ctx: Context, request: web.Request) -> Any:
    assert ctx.registry is not None
    body = exposition(ctx.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


@functools.cache
def _document() -> dict[str, Any]:
    return document(ROUTES)


async def openapi(ctx: Context, request: web.Request) -> Any:
    return _document()


_STATUS = obj({"status": STR}, ["status"])
ROUTES: tuple[Route, ...] = (
    Route("GET", "/health", health, "Liveness", "operations", _STATUS, open=True),
    Route(
        "GET",
        "/ready",
        ready,
        "Readiness: 503 until every role has started",
        "operations",
        _STATUS,
        errors=(503,),
        open=True,
    ),
    Route(
        "GET",
        "/metrics",
        metrics,
        "Prometheus metrics (text exposition format)",
        "operations",
        STR,
        content_type="text/plain",
    ),
    Route(
        "GET",
        "/api/v1/openapi.json",
        openapi,
        "This OpenAPI document",
        "operations",
        {"type": "object"},
    ),
    *cluster.ROUTES,
    *cluster_config.ROUTES,
    *mqtt.ROUTES,
    *mqtt_rules.ROUTES,
    *kafka.ROUTES,
    *storage.ROUTES,
)
