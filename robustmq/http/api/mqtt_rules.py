"""``/api/v1/mqtt/acl``, ``/api/v1/mqtt/rewrite`` and ``/api/v1/mqtt/auto-subscribe``: the
rules the MQTT broker applies to clients, listed, added and removed at run time.

ACL rules live in ``auth.acl_file`` when one is set: a change rewrites that file
(``acl.edit_acl_file``: written beside it, synced, renamed), so a restart keeps it, and
then every connected client's authorizer is rebuilt from the new rules, its cached
decisions with it. Without an ACL file, on a node with a Meta Service and a persistent
engine (``ctx.node.rules``), the ACL rules, and there always the rewrite and
auto-subscribe rules, are lists in the ``mqtt`` group: a change here replaces the list
there (``MetaRules.replace``) and every node's cache applies it, re-authorizing its
clients. Otherwise rewrite and auto-subscribe changes last until the node restarts (the
config file is what a restart reads) and ACL rules cannot be managed (409). A rule is
addressed by its position, because order decides which rule applies; a position refers to
the rules this node holds, so when the ACL file was edited on disk since, or the group's
list was changed through another node meanwhile, the change is refused (409): list again.
The clients, sessions and users are in ``mqtt.py``.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

from aiohttp import web

from robustmq._core import trie
from robustmq.broker.auth.acl import (
    Acl,
    Rule,
    edit_acl_file,
    format_rule,
    load_acl_file,
    parse_rule,
)
from robustmq.broker.mqtt.meta_rules import MetaRules, reauthorize
from robustmq.broker.mqtt.rewrite import ACTIONS, TopicRewriter
from robustmq.broker.mqtt.server import MqttBroker, auto_subscriptions
from robustmq.errors import (
    AclFileChanged,
    ApiBadRequest,
    ApiConflict,
    ApiNotFound,
    ConfigError,
    MetaConflict,
    MetaError,
    MqttError,
    SecurityFileError,
)
from robustmq.http.api.common import (
    INT,
    NONEMPTY,
    PAGING,
    STR,
    Context,
    Param,
    Route,
    field_of,
    json_body,
    no_extra_fields,
    obj,
    page_of,
    paged,
)

_INDEX = Param(
    "index",
    "path",
    {"type": "integer", "minimum": 0},
    "the rule's position in the list, from 0",
    required=True,
)


def _index(request: web.Request, count: int) -> int:
    text = request.match_info["index"]
    # Not str.isdigit(): it holds for "²", which int() refuses.
    if not (text.isascii() and text.isdecimal()):
        raise ApiBadRequest("index", f"{text!r} is not a rule position (0, 1, ...)")
    index = int(text)
    if index >= count:
        raise ApiNotFound(f"there is no rule {index} (there are {count})")
    return index


def _position(body: dict[str, Any]) -> int | None:
    position = field_of(body, "position", (int, type(None)), None)
    if position is not None and position < 0:
        raise ApiBadRequest("position", f"{position} is negative")
    return position


# ------------------------------------------------------------------ ACL

_PERMISSIONS = ("allow", "deny")
_ACL_ACTIONS = ("publish", "subscribe", "all")
_ACL_FIELDS = ("permission", "who", "action", "topic", "max_qos", "retain", "position")
_RULE = obj(
    {
        "index": INT,
        "permission": {"type": "string", "enum": list(_PERMISSIONS)},
        "who": STR,
        "action": {"type": "string", "enum": list(_ACL_ACTIONS)},
        "topic": STR,
        "max_qos": INT,
        "retain": {"type": ["boolean", "null"]},
        "line": STR,
    },
    ["index", "permission", "who", "action", "topic", "max_qos", "line"],
)
_NEW_RULE = obj(
    {
        "permission": {"type": "string", "enum": list(_PERMISSIONS)},
        "who": {
            "type": "string",
            "minLength": 1,
            "description": "all, user:NAME, clientid:ID or ip:CIDR",
        },
        "action": {"type": "string", "enum": list(_ACL_ACTIONS)},
        "topic": {
            "type": "string",
            "minLength": 1,
            "description": "topic filter; may use %u, %c, ${username}, ${clientid}",
        },
        "max_qos": {"type": "integer", "enum": [0, 1, 2], "default": 2},
        "retain": {"type": ["boolean", "null"], "default": None},
        "position": {
            "type": ["integer", "null"],
            "minimum": 0,
            "description": "insert before this rule (default: at the end)",
        },
    },
    ["permission", "who", "action", "topic"],
)


def _acl(ctx: Context) -> tuple[Acl, str | MetaRules]:
    """The broker's ACL and what keeps its rules: the file, or the Meta Service (409
    when neither)."""
    security = ctx.mqtt.security
    path = security.config.acl_file
    rules = ctx.node.rules
    if not path and rules is not None and rules.manages_acl and security.acl is not None:
        try:
            rules.check_loaded()  # until then the rules in force are none of the group's
        except MetaError as exc:
            raise ApiConflict(str(exc)) from None
        return security.acl, rules
    if not path or security.acl is None:
        raise ApiConflict(
            "no auth.acl_file is configured and no Meta Service keeps ACL rules (storage "
            "engine memory, or no meta role and no peers): set one (it may start empty) to "
            "manage ACL rules"
        )
    return security.acl, path


def _rule_json(index: int, rule: Rule) -> dict[str, Any]:
    line = format_rule(rule)
    permission, who, action, topic = line.split()[:4]
    return {
        "index": index,
        "permission": permission,
        "who": who,
        "action": action,
        "topic": topic,
        "max_qos": rule.max_qos,
        "retain": rule.retain,
        "line": line,
    }


async def list_acl(ctx: Context, request: web.Request) -> Any:
    acl, _ = _acl(ctx)
    return paged(request, [_rule_json(i, r) for i, r in enumerate(acl.rules)])


def _no_space(name: str, value: str) -> str:
    if not value or any(ch.isspace() for ch in value):
        raise ApiBadRequest(name, f"{value!r} must be non-empty without spaces (one ACL line)")
    return value


def _acl_line(body: dict[str, Any]) -> str:
    """The ACL-file line a request asks for, each field checked on its own so that the
    error names it."""
    no_extra_fields(body, _ACL_FIELDS)
    permission = field_of(body, "permission", str)
    if permission not in _PERMISSIONS:
        raise ApiBadRequest("permission", f"{permission!r} is not allow or deny")
    action = field_of(body, "action", str)
    if action not in _ACL_ACTIONS:
        raise ApiBadRequest("action", f"{action!r} is not publish, subscribe or all")
    who = _no_space("who", field_of(body, "who", str))
    topic = _no_space("topic", field_of(body, "topic", str))
    max_qos = field_of(body, "max_qos", int, 2)
    if max_qos not in (0, 1, 2):
        raise ApiBadRequest("max_qos", f"{max_qos} is not 0, 1 or 2")
    retain = field_of(body, "retain", (bool, type(None)), None)
    line = f"{permission} {who} {action} {topic}"
    if max_qos != 2:
        line += f" qos<={max_qos}"
    if retain is not None:
        line += " retain=true" if retain else " retain=false"
    try:
        parse_rule(f"{permission} {who} {action} #")
    except ValueError as exc:
        raise ApiBadRequest("who", str(exc)) from None
    try:
        parse_rule(line)
    except ValueError as exc:
        raise ApiBadRequest("topic", str(exc)) from None
    return line


async def _replace(rules: MetaRules, kind: str, items: list[Any], revision: int) -> None:
    """``MetaRules.replace``, its failures as API errors. Callers hold ``ctx.acl_lock``
    (one change of a rule list at a time on a node), so that no change made here is
    computed from a list another one made here is replacing."""
    try:
        await rules.replace(kind, items, revision)
    except MetaConflict as exc:
        raise ApiConflict(str(exc)) from None
    except MetaError as exc:
        raise ApiConflict(f"{type(exc).__name__}: {exc}") from None


async def _edit_acl(ctx: Context, path: str, **edit: Any) -> list[Rule]:
    """``edit_acl_file`` in a worker thread, its failures as API errors; then every
    connected client is re-authorized against the rules read back."""
    try:
        rules = await asyncio.to_thread(edit_acl_file, path, **edit)
    except SecurityFileError as exc:
        raise ApiConflict(f"the ACL file does not load, so it was left alone: {exc}") from None
    except AclFileChanged:
        # The file's rules take effect, as after any change made here, so that listing
        # again shows the positions the next request may use.
        try:
            _apply_acl(ctx, await asyncio.to_thread(load_acl_file, path))
        except SecurityFileError as exc:
            raise ApiConflict(f"the ACL file changed on disk and does not load: {exc}") from None
        raise ApiConflict(
            f"the ACL file {path} changed on disk, so it was left alone; its rules are now "
            "in effect: list them again"
        ) from None
    except IndexError as exc:
        raise ApiNotFound(str(exc)) from None
    except OSError as exc:
        raise ApiConflict(f"cannot rewrite the ACL file {path}: {exc.strerror}") from None
    _apply_acl(ctx, rules)
    return rules


def _apply_acl(ctx: Context, rules: list[Rule]) -> None:
    acl = ctx.mqtt.security.acl
    assert acl is not None
    acl.rules = rules
    reauthorize(ctx.mqtt)


async def add_acl(ctx: Context, request: web.Request) -> Any:
    acl, path = _acl(ctx)
    body = await json_body(request)
    line = _acl_line(body)
    position = _position(body)
    async with ctx.acl_lock:
        if isinstance(path, MetaRules):
            lines, revision = path.rule_list("acl")
            index = len(lines) if position is None else min(position, len(lines))
            lines.insert(index, line)
            await _replace(path, "acl", lines, revision)
            return _rule_json(index, parse_rule(line))
        # A position counts the rules in memory, which the file must still hold.
        expected = None if position is None else list(acl.rules)
        rules = await _edit_acl(ctx, path, insert=line, before=position, expected=expected)
    last = len(rules) - 1
    index = last if position is None else min(position, last)
    return _rule_json(index, rules[index])


async def delete_acl(ctx: Context, request: web.Request) -> Any:
    acl, path = _acl(ctx)
    async with ctx.acl_lock:
        if isinstance(path, MetaRules):
            lines, revision = path.rule_list("acl")
            del lines[_index(request, len(lines))]
            await _replace(path, "acl", lines, revision)
            return None
        index = _index(request, len(acl.rules))
        await _edit_acl(ctx, path, remove=index, expected=list(acl.rules))
    return None


# ------------------------------------------------------------------ rewrite

_KEPT = " (kept in the Meta Service; with the memory engine only until the node restarts)"
_REWRITE = obj(
    {
        "action": {"type": "string", "enum": list(ACTIONS)},
        "source_topic": STR,
        "re": STR,
        "dest_topic": STR,
    },
    ["action", "source_topic", "re", "dest_topic"],
)
_REWRITE_ROW = obj({"index": INT, **_REWRITE["properties"]}, ["index", *_REWRITE["required"]])
_NEW_REWRITE = obj(
    {
        "action": {"type": "string", "enum": list(ACTIONS), "default": "all"},
        "source_topic": NONEMPTY,
        "re": STR,
        "dest_topic": {
            "type": "string",
            "minLength": 1,
            "description": "template: $1... for the expression's groups, ${clientid}, ${username}",
        },
        "position": _NEW_RULE["properties"]["position"],
    },
    ["source_topic", "re", "dest_topic"],
)


async def list_rewrite(ctx: Context, request: web.Request) -> Any:
    return paged(request, [{"index": i, **r} for i, r in enumerate(ctx.mqtt.rewriter.rules)])


def _rewrite_rule(body: dict[str, Any]) -> dict[str, str]:
    no_extra_fields(body, ("action", "source_topic", "re", "dest_topic", "position"))
    action = field_of(body, "action", str, "all")
    if action not in ACTIONS:
        raise ApiBadRequest("action", f"{action!r} is not one of " + ", ".join(ACTIONS))
    source = field_of(body, "source_topic", str)
    try:
        trie.validate_topic_filter(source)
    except MqttError as exc:
        raise ApiBadRequest("source_topic", f"{source!r}: {exc.message}") from None
    pattern = field_of(body, "re", str)
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ApiBadRequest("re", f"{pattern!r} is not a regular expression ({exc})") from None
    dest = field_of(body, "dest_topic", str)
    if not dest:
        raise ApiBadRequest("dest_topic", "empty")
    return {"action": action, "source_topic": source, "re": pattern, "dest_topic": dest}


def _set_rewrite(broker: MqttBroker, rules: list[dict[str, str]]) -> None:
    try:
        broker.rewriter = TopicRewriter(rules)
    except ConfigError as exc:  # the checks above cover each field: kept as a safety net
        raise ApiBadRequest("body", str(exc)) from None


async def add_rewrite(ctx: Context, request: web.Request) -> Any:
    body = await json_body(request)
    rule = _rewrite_rule(body)
    position = _position(body)
    meta = ctx.node.rules
    async with ctx.acl_lock:
        rules, revision = meta.rule_list("rewrite") if meta else (ctx.mqtt.rewriter.rules, 0)
        index = len(rules) if position is None else min(position, len(rules))
        rules.insert(index, rule)
        if meta is not None:
            await _replace(meta, "rewrite", rules, revision)
        else:
            _set_rewrite(ctx.mqtt, rules)
    return {"index": index, **rule}


async def delete_rewrite(ctx: Context, request: web.Request) -> Any:
    meta = ctx.node.rules
    async with ctx.acl_lock:
        rules, revision = meta.rule_list("rewrite") if meta else (ctx.mqtt.rewriter.rules, 0)
        del rules[_index(request, len(rules))]
        if meta is not None:
            await _replace(meta, "rewrite", rules, revision)
        else:
            _set_rewrite(ctx.mqtt, rules)
    return None


# ------------------------------------------------------------------ auto-subscribe

_AUTO = obj(
    {"index": INT, "topic": STR, "qos": {"type": "integer", "enum": [0, 1, 2]}},
    ["index", "topic", "qos"],
)
_NEW_AUTO = obj(
    {
        "topic": {
            "type": "string",
            "minLength": 1,
            "description": "topic filter; may use ${clientid} and ${username}",
        },
        "qos": {"type": "integer", "enum": [0, 1, 2], "default": 0},
        "position": _NEW_RULE["properties"]["position"],
    },
    ["topic"],
)


async def list_auto_subscribe(ctx: Context, request: web.Request) -> Any:
    items = [{"index": i, "topic": t, "qos": q} for i, (t, q) in enumerate(ctx.mqtt.auto_subscribe)]
    return paged(request, items)


async def add_auto_subscribe(ctx: Context, request: web.Request) -> Any:
    body = await json_body(request)
    no_extra_fields(body, ("topic", "qos", "position"))
    topic = field_of(body, "topic", str)
    qos = field_of(body, "qos", int, 0)
    if qos not in (0, 1, 2):
        raise ApiBadRequest("qos", f"{qos} is not 0, 1 or 2")
    position = _position(body)
    try:
        (entry,) = auto_subscriptions([{"topic": topic, "qos": qos}])
    except ConfigError as exc:
        raise ApiBadRequest(
            "topic", f"{topic!r} is not a valid topic filter ({exc.allowed})"
        ) from None
    meta = ctx.node.rules
    async with ctx.acl_lock:
        if meta is not None:
            items, revision = meta.rule_list("autosub")
            index = len(items) if position is None else min(position, len(items))
            items.insert(index, {"topic": topic, "qos": qos})
            await _replace(meta, "autosub", items, revision)
            return {"index": index, "topic": topic, "qos": qos}
        entries = ctx.mqtt.auto_subscribe
        index = len(entries) if position is None else min(position, len(entries))
        ctx.mqtt.auto_subscribe = [*entries[:index], entry, *entries[index:]]
    return {"index": index, "topic": topic, "qos": qos}


async def delete_auto_subscribe(ctx: Context, request: web.Request) -> Any:
    meta = ctx.node.rules
    async with ctx.acl_lock:
        if meta is not None:
            items, revision = meta.rule_list("autosub")
            del items[_index(request, len(items))]
            await _replace(meta, "autosub", items, revision)
            return None
        entries = list(ctx.mqtt.auto_subscribe)
        del entries[_index(request, len(entries))]
        ctx.mqtt.auto_subscribe = entries
    return None


# ------------------------------------------------------------------ the routes

_RULE_ERRORS = (400, 404, 409)
ROUTES = (
    Route(
        "GET",
        "/api/v1/mqtt/acl",
        list_acl,
        "ACL rules (of auth.acl_file, else of the Meta Service), in the order they are tried",
        "mqtt",
        page_of(_RULE),
        PAGING,
        errors=_RULE_ERRORS,
    ),
    Route(
        "POST",
        "/api/v1/mqtt/acl",
        add_acl,
        "Add an ACL rule (to auth.acl_file, else to the Meta Service); applied to "
        "connected clients at once",
        "mqtt",
        _RULE,
        body=_NEW_RULE,
        status=201,
        errors=_RULE_ERRORS,
    ),
    Route(
        "DELETE",
        "/api/v1/mqtt/acl/{index}",
        delete_acl,
        "Remove an ACL rule (from auth.acl_file, else from the Meta Service); applied to "
        "connected clients at once",
        "mqtt",
        {},
        (_INDEX,),
        status=204,
        errors=_RULE_ERRORS,
    ),
    Route(
        "GET",
        "/api/v1/mqtt/rewrite",
        list_rewrite,
        "Topic rewrite rules, in the order they are tried",
        "mqtt",
        page_of(_REWRITE_ROW),
        PAGING,
        errors=(400, 404),
    ),
    Route(
        "POST",
        "/api/v1/mqtt/rewrite",
        add_rewrite,
        "Add a topic rewrite rule" + _KEPT,
        "mqtt",
        _REWRITE_ROW,
        body=_NEW_REWRITE,
        status=201,
        errors=_RULE_ERRORS,
    ),
    Route(
        "DELETE",
        "/api/v1/mqtt/rewrite/{index}",
        delete_rewrite,
        "Remove a topic rewrite rule" + _KEPT,
        "mqtt",
        {},
        (_INDEX,),
        status=204,
        errors=_RULE_ERRORS,
    ),
    Route(
        "GET",
        "/api/v1/mqtt/auto-subscribe",
        list_auto_subscribe,
        "Subscriptions every client gets when it connects",
        "mqtt",
        page_of(_AUTO),
        PAGING,
        errors=(400, 404),
    ),
    Route(
        "POST",
        "/api/v1/mqtt/auto-subscribe",
        add_auto_subscribe,
        "Add an auto-subscription for clients connecting from now on" + _KEPT,
        "mqtt",
        _AUTO,
        body=_NEW_AUTO,
        status=201,
        errors=_RULE_ERRORS,
    ),
    Route(
        "DELETE",
        "/api/v1/mqtt/auto-subscribe/{index}",
        delete_auto_subscribe,
        "Remove an auto-subscription (existing subscriptions stay)" + _KEPT,
        "mqtt",
        {},
        (_INDEX,),
        status=204,
        errors=_RULE_ERRORS,
    ),
)
