"""``/api/v1/storage``: the shards of this node's storage engine, read-only.

A shard is an append-only log (a Kafka partition ``kafka/<topic>/<partition>``, an MQTT
offline queue, ...). Listing pages the sorted shard names first and asks the engine for
the bounds and size of the shards on the page only, so a node with a million shards
answers a page at the cost of a page. Kafka topics as such are in ``kafka.py``.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from robustmq.errors import ApiNotFound, ShardNotFound
from robustmq.http.api.common import (
    INT,
    NONEMPTY,
    PAGING,
    STR,
    Context,
    Param,
    Route,
    obj,
    page_of,
    paged,
)
from robustmq.storage import StorageEngine

_SHARD = obj(
    {
        "name": STR,
        "engine": STR,
        "records": INT,
        "bytes": INT,
        "start_offset": INT,
        "end_offset": INT,
        "config": {"type": "object"},
    },
    ["name", "engine", "records", "bytes", "start_offset", "end_offset"],
)


def _engine(ctx: Context) -> StorageEngine:
    if ctx.node.storage is None:
        raise ApiNotFound("this node has no storage engine (engine role not running)")
    return ctx.node.storage


async def _shard(ctx: Context, engine: StorageEngine, name: str) -> dict[str, Any]:
    """``ShardNotFound`` when it does not exist (any more)."""
    info = await engine.shard_info(name)
    return {
        "name": info.name,
        "engine": ctx.node.config.storage.engine,
        # Offsets are contiguous (engine.py): what lies between the bounds is retained.
        "records": info.latest_offset - info.earliest_offset,
        "bytes": info.size_bytes,
        "start_offset": info.earliest_offset,
        "end_offset": info.latest_offset,
        "config": info.config.to_dict(),
    }


async def list_shards(ctx: Context, request: web.Request) -> Any:
    engine = _engine(ctx)
    names = sorted(await engine.list_shards(request.query.get("prefix", "")))
    page = paged(request, names)
    shards = []
    for name in page["data"]:
        try:
            shards.append(await _shard(ctx, engine, name))
        except ShardNotFound:
            continue  # deleted since it was listed
    page["data"] = shards
    return page


async def get_shard(ctx: Context, request: web.Request) -> Any:
    name = request.match_info["shard"]
    try:
        return await _shard(ctx, _engine(ctx), name)
    except ShardNotFound:
        raise ApiNotFound(f"no shard {name!r}") from None


ROUTES = (
    Route(
        "GET",
        "/api/v1/storage/shards",
        list_shards,
        "Shards of the storage engine: records, bytes and offsets",
        "storage",
        page_of(_SHARD),
        (Param("prefix", "query", STR, "only shards whose name starts with this"), *PAGING),
        errors=(400, 404),
    ),
    Route(
        "GET",
        "/api/v1/storage/shards/{shard}",
        get_shard,
        "A shard of the storage engine",
        "storage",
        _SHARD,
        (
            Param(
                "shard",
                "path",
                NONEMPTY,
                "shard name, URL-encoded ('/' as %2F or as is)",
                True,
                slashes=True,
            ),
        ),
        errors=(404,),
    ),
)
