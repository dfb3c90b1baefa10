"""What every REST API module shares: the ``Route`` record the route table is made of, the
request context handlers receive, paging (``?page=&limit=``) and reading validated input.

A route carries its handler and everything the OpenAPI document says about it (summary,
parameters, body and response schemas), so the document is built from the same table the
server registers and cannot drift from it. The resource modules (``cluster.py``,
``mqtt.py``, ``kafka.py``) hold the handlers; registration is in ``http/server.py`` and the
document in ``http/openapi.py``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from robustmq.errors import ApiBadRequest, ApiNotFound

if TYPE_CHECKING:
    from robustmq.broker.kafka.server import KafkaBroker
    from robustmq.broker.mqtt.server import MqttBroker
    from robustmq.node import Node

MAX_LIMIT = 10_000
MAX_PAGE = 1 << 31
DEFAULT_LIMIT = 100


@dataclass
class Context:
    """What handlers reach: the node, when the API started, and locks serialising
    changes to the password file and to the ACL file."""

    node: Node
    registry: CollectorRegistry | None = None  # what /metrics exports
    started_at: float = field(default_factory=time.time)
    users_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    acl_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def mqtt(self) -> MqttBroker:
        if self.node.mqtt is None:
            raise ApiNotFound("this node has no MQTT broker (broker role not running)")
        return self.node.mqtt

    @property
    def kafka(self) -> KafkaBroker:
        if self.node.kafka is None:
            raise ApiNotFound("this node has no Kafka listener (kafka.port = 0 or no engine)")
        return self.node.kafka


Handler = Callable[[Context, web.Request], Awaitable[Any]]


@dataclass(frozen=True)
class Param:
    name: str
    where: str  # "path" or "query"
    schema: dict[str, Any]
    description: str
    required: bool = False
    slashes: bool = False  # a path parameter that may contain '/' (a topic, a CIDR)


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # OpenAPI form: /api/v1/mqtt/clients/{clientid}
    handler: Handler
    summary: str
    tag: str
    response: dict[str, Any]  # JSON schema of the success body
    params: tuple[Param, ...] = ()
    body: dict[str, Any] | None = None  # JSON schema of the request body
    status: int = 200
    errors: tuple[int, ...] = ()  # statuses besides 401 this route may answer
    content_type: str = "application/json"
    open: bool = False  # needs no admin token

    @property
    def match(self) -> str:
        """The path as aiohttp matches it."""
        path = self.path
        for p in self.params:
            if p.slashes:
                path = path.replace("{" + p.name + "}", "{" + p.name + ":.+}")
        return path


def obj(properties: dict[str, Any], required: Sequence[str] = ()) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    return schema


STR = {"type": "string"}
NONEMPTY = {"type": "string", "minLength": 1}
INT = {"type": "integer"}
BOOL = {"type": "boolean"}
NUM = {"type": "number"}


def page_of(item: dict[str, Any]) -> dict[str, Any]:
    """The schema of a paged list of ``item``."""
    meta = obj({"page": INT, "limit": INT, "count": INT}, ["page", "limit", "count"])
    return obj({"data": {"type": "array", "items": item}, "meta": meta}, ["data", "meta"])


PAGING = (
    Param(
        "page",
        "query",
        {"type": "integer", "minimum": 1, "maximum": MAX_PAGE},
        "page number, from 1",
    ),
    Param(
        "limit",
        "query",
        {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
        f"items per page (default {DEFAULT_LIMIT})",
    ),
)


def _int_query(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    text = request.query.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise ApiBadRequest(name, f"{text!r} is not an integer") from None
    if not low <= value <= high:
        raise ApiBadRequest(name, f"{value} is out of range {low} to {high}")
    return value


def paged(request: web.Request, items: Sequence[Any]) -> dict[str, Any]:
    """``items`` cut to the page asked for, with ``meta.count`` the total."""
    page = _int_query(request, "page", 1, 1, MAX_PAGE)
    limit = _int_query(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    start = (page - 1) * limit
    return {
        "data": list(items[start : start + limit]),
        "meta": {"page": page, "limit": limit, "count": len(items)},
    }


async def json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.read() or b"null")
    except (ValueError, UnicodeDecodeError):
        raise ApiBadRequest("body", "not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiBadRequest("body", "expected a JSON object")
    return body


def field_of(
    body: dict[str, Any], name: str, kind: type | tuple[type, ...], default: Any = ...
) -> Any:
    """``body[name]`` checked to be of ``kind`` (bool is never an int here)."""
    if name not in body:
        if default is ...:
            raise ApiBadRequest(name, "missing")
        return default
    value = body[name]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        wanted = " or ".join(k.__name__ for k in kinds)
        raise ApiBadRequest(name, f"expected {wanted}, got {type(value).__name__}")
    return value


def no_extra_fields(body: dict[str, Any], allowed: Sequence[str]) -> None:
    extra = sorted(set(body) - set(allowed))
    if extra:
        raise ApiBadRequest(extra[0], "unknown field (allowed: " + ", ".join(allowed) + ")")
