"""``PUT /api/v1/cluster/config``: a new value for one hot-reloadable config key.

Which keys qualify is declared once, in ``robustmq/config.py`` (``option(hot=...)``, which
also says what a new value reaches); the value is checked there exactly as a config file's
would be. Applying a change swaps the frozen config objects the running parts read on
each use (the node's, the MQTT broker's, the Kafka broker's and its topic registry's, the
abuse limits' settings) and, for ``log.level``, sets the root logger's level. A change
lasts until the node restarts: the config file is not rewritten. Reading the config is
``GET /api/v1/cluster/config`` in ``cluster.py``.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from aiohttp import web

from robustmq.config import SECTIONS, check_key
from robustmq.errors import ApiBadRequest, ConfigError
from robustmq.http.api.common import STR, Context, Route, field_of, json_body, no_extra_fields, obj

log = logging.getLogger(__name__)


def hot_keys() -> dict[str, str]:
    """Every hot-reloadable key and what a new value of it reaches."""
    return {
        f"{section}.{f.name}": f.metadata["hot"]
        for section, cls in SECTIONS.items()
        for f in dataclasses.fields(cls)
        if f.metadata.get("hot")
    }


def _apply(ctx: Context, section: str, key: str, value: Any) -> None:
    node = ctx.node
    new = dataclasses.replace(getattr(node.config, section), **{key: value})
    node.config = dataclasses.replace(node.config, **{section: new})
    if section == "log":
        logging.getLogger().setLevel(value.upper())
    elif section == "mqtt" and node.mqtt is not None:
        node.mqtt.config = new
    elif section == "kafka" and node.kafka is not None:
        node.kafka.config = new
        node.kafka.topics.config = new
    elif section == "auth" and node.mqtt is not None:
        security = node.mqtt.security
        security.config = new
        security.limits.settings = dataclasses.replace(security.limits.settings, **{key: value})


async def set_config(ctx: Context, request: web.Request) -> Any:
    body = await json_body(request)
    no_extra_fields(body, ("key", "value"))
    dotted = field_of(body, "key", str)
    if "value" not in body:
        raise ApiBadRequest("value", "missing")
    try:
        section, key, value, reaches = check_key(dotted, body["value"])
    except ConfigError as exc:
        field = "key" if exc.allowed.startswith(("a section", "a known key")) else "value"
        raise ApiBadRequest(field, str(exc)) from None
    if not reaches:
        raise ApiBadRequest(
            "key", f"{dotted} is not hot-reloadable; restart with it set in the config file"
        )
    _apply(ctx, section, key, value)
    log.info("config %s set to %r through the HTTP API (until restart)", dotted, value)
    return {"key": dotted, "value": value, "applies_to": reaches}


_HOT = "; ".join(f"{k} ({v})" for k, v in hot_keys().items())
ROUTES = (
    Route(
        "PUT",
        "/api/v1/cluster/config",
        set_config,
        f"Set a hot-reloadable key until restart (the config file is not changed). Keys: {_HOT}",
        "cluster",
        obj({"key": STR, "value": {}, "applies_to": STR}, ["key", "value", "applies_to"]),
        body=obj(
            {
                "key": {"type": "string", "enum": list(hot_keys())},
                "value": {
                    "description": "the new value, typed or as text "
                    "(as in a ROBUSTMQ_* environment variable)"
                },
            },
            ["key", "value"],
        ),
        errors=(400,),
    ),
)
