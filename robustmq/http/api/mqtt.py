"""``/api/v1/mqtt``: clients, sessions, subscriptions, retained messages, publishing,
users and the blacklist of this node's MQTT broker.

Handlers read the broker's own structures (``sessions``, ``connections``, the router's
subscription trie and retained tree, ``security``) on the event loop and change them
through the broker's methods: kicking a client is an MQTT 5 DISCONNECT with reason
0x98 Administrative action, publishing goes through ``publish_internal``. Users live in
the security module's user store and, so that they survive a restart, in
``auth.password_file`` when one is set, else in the Meta Service's ``mqtt`` group (written
there, and applied by every node's cache, ``broker/mqtt/meta_rules.py``); with neither (the
memory engine, no Meta Service) they cannot be managed (409). Hashing a password and
rewriting the file run in a worker thread, never on the loop. Cluster and Kafka resources
are in ``cluster.py`` and ``kafka.py``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import time
from typing import Any

from aiohttp import web

from robustmq._core import trie
from robustmq._core.mqtt_spec import ReasonCode
from robustmq.broker.auth.limits import BLACKLIST_KINDS
from robustmq.broker.auth.users import (
    MemoryUserStore,
    User,
    load_password_file,
    new_user,
    remove_user,
    set_password,
    user_record,
)
from robustmq.broker.mqtt.message import Message
from robustmq.broker.mqtt.meta_rules import MetaRules
from robustmq.broker.mqtt.session import Session
from robustmq.errors import (
    ApiBadRequest,
    ApiConflict,
    ApiNotFound,
    MetaConflict,
    MetaError,
    MqttError,
)
from robustmq.http.api.common import (
    BOOL,
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

_NOT_FOUND = (404,)

# ------------------------------------------------------------------ clients and sessions

_CLIENT = obj(
    {
        "clientid": STR,
        "username": {"type": ["string", "null"]},
        "peer": STR,
        "protocol_version": INT,
        "keep_alive": INT,
        "session_expiry_interval": INT,
        "subscriptions": INT,
        "inflight": INT,
        "queued": INT,
    },
    ["clientid", "peer", "protocol_version"],
)
_SESSION = obj(
    {
        "clientid": STR,
        "connected": BOOL,
        "expiry_interval": INT,
        "subscriptions": INT,
        "inflight": INT,
        "queued": INT,
        "max_queued": INT,
        "dropped": INT,
    },
    ["clientid", "connected"],
)
_CLIENTID = Param("clientid", "path", NONEMPTY, "MQTT client identifier", required=True)


def _session_counts(session: Session) -> dict[str, int]:
    return {
        "subscriptions": len(session.subscriptions),
        "inflight": len(session.inflight),
        "queued": len(session.queue) if session.queue else 0,
    }


def _client(ctx: Context, clientid: str) -> dict[str, Any] | None:
    session = ctx.mqtt.sessions.get(clientid)
    conn = session.connection if session is not None else None
    if session is None or conn is None or not conn.connected or conn.closing:
        return None
    return {
        "clientid": clientid,
        "username": conn.username,
        "peer": conn.peer,
        "protocol_version": conn.version,
        "keep_alive": conn.keep_alive,
        "session_expiry_interval": session.expiry_interval,
        **_session_counts(session),
    }


async def list_clients(ctx: Context, request: web.Request) -> Any:
    wanted_id = request.query.get("clientid")
    wanted_user = request.query.get("username")
    ids = [wanted_id] if wanted_id is not None else sorted(ctx.mqtt.sessions)
    clients = [c for c in (_client(ctx, i) for i in ids) if c is not None]
    if wanted_user is not None:
        clients = [c for c in clients if c["username"] == wanted_user]
    return paged(request, clients)


async def get_client(ctx: Context, request: web.Request) -> Any:
    clientid = request.match_info["clientid"]
    client = _client(ctx, clientid)
    if client is None:
        raise ApiNotFound(f"client {clientid!r} is not connected")
    return client


async def kick_client(ctx: Context, request: web.Request) -> Any:
    clientid = request.match_info["clientid"]
    session = ctx.mqtt.sessions.get(clientid)
    conn = session.connection if session is not None else None
    if conn is None or not conn.connected or conn.closing:
        raise ApiNotFound(f"client {clientid!r} is not connected")
    conn.disconnect(ReasonCode.ADMINISTRATIVE_ACTION)  # its session stays, as configured
    return None


def _session(session: Session) -> dict[str, Any]:
    conn = session.connection
    return {
        "clientid": session.client_id,
        "connected": conn is not None and conn.connected and not conn.closing,
        "expiry_interval": session.expiry_interval,
        **_session_counts(session),
        "max_queued": session.max_queued,
        "dropped": session.dropped,
    }


async def list_sessions(ctx: Context, request: web.Request) -> Any:
    sessions = ctx.mqtt.sessions
    wanted = request.query.get("clientid")
    ids = sorted(sessions) if wanted is None else [wanted] if wanted in sessions else []
    return paged(request, [_session(sessions[i]) for i in ids])


def _find_session(ctx: Context, request: web.Request) -> Session:
    clientid = request.match_info["clientid"]
    session = ctx.mqtt.sessions.get(clientid)
    if session is None:
        raise ApiNotFound(f"no session for client {clientid!r}")
    return session


async def get_session(ctx: Context, request: web.Request) -> Any:
    return _session(_find_session(ctx, request))


async def delete_session(ctx: Context, request: web.Request) -> Any:
    """Ends the session now: its client (if connected) is disconnected, its subscriptions
    and queued messages go, a pending will is published."""
    broker = ctx.mqtt
    session = _find_session(ctx, request)
    session.expiry_interval = 0  # so the disconnect below does not keep it
    if session.connection is not None:
        session.connection.disconnect(ReasonCode.ADMINISTRATIVE_ACTION)
    broker.end_session(session)
    return None


# ------------------------------------------------------------------ subscriptions

_SUBSCRIPTION = obj(
    {
        "clientid": STR,
        "topic": STR,
        "qos": INT,
        "no_local": BOOL,
        "retain_as_published": BOOL,
        "subscription_id": INT,
    },
    ["clientid", "topic", "qos"],
)


def _subscriptions(session: Session) -> list[dict[str, Any]]:
    return [
        {
            "clientid": session.client_id,
            "topic": topic_filter,
            "qos": o.qos,
            "no_local": o.no_local,
            "retain_as_published": o.retain_as_published,
            "subscription_id": o.subscription_id,
        }
        for topic_filter, o in sorted(session.subscriptions.items())
    ]


async def list_subscriptions(ctx: Context, request: web.Request) -> Any:
    sessions = ctx.mqtt.sessions
    wanted_id = request.query.get("clientid")
    wanted_topic = request.query.get("topic")
    ids = sorted(sessions) if wanted_id is None else [wanted_id] if wanted_id in sessions else []
    found = [s for i in ids for s in _subscriptions(sessions[i])]
    if wanted_topic is not None:
        found = [s for s in found if s["topic"] == wanted_topic]
    return paged(request, found)


async def client_subscriptions(ctx: Context, request: web.Request) -> Any:
    return _subscriptions(_find_session(ctx, request))


# ------------------------------------------------------------------ topics

_TOPIC_ROW = obj(
    {
        "topic": STR,
        "subscribers": {"type": ["integer", "null"]},
        "retained": BOOL,
        "messages_in": {"type": ["integer", "null"]},
        "messages_out": {"type": ["integer", "null"]},
    },
    ["topic", "subscribers", "retained", "messages_in", "messages_out"],
)


async def list_topics(ctx: Context, request: web.Request) -> Any:
    """Topics published to that have subscribers (their delivery plan is cached in the
    router) and topics with a retained message. A plan and its count start when the topic
    is first routed and end at the next subscription change anywhere (the router then
    drops its plans) or when the plan cache is full; topics whose messages need routing
    one by one (shared subscriptions, subscription identifiers, ``$`` topics) have no plan,
    so their counts are null."""
    router = ctx.mqtt.router
    wanted = request.query.get("match")
    matcher = None
    if wanted is not None:
        try:
            trie.validate_topic_filter(wanted, ctx.mqtt.config.max_topic_levels)
        except MqttError as exc:
            raise ApiBadRequest("match", f"{wanted!r}: {exc.message}") from None
        matcher = trie.SubscriptionTrie()
        matcher.add(wanted, None, None)
    rows: dict[str, dict[str, Any]] = {}
    for topic, plan in router.plans():
        if plan:
            rows[topic] = {
                "topic": topic,
                "subscribers": len(plan),
                "retained": False,
                "messages_in": plan.messages,
                "messages_out": plan.messages * len(plan),
            }
    for topic, _ in _live_retained(ctx):
        row = rows.setdefault(
            topic,
            {
                "topic": topic,
                "subscribers": None,
                "retained": False,
                "messages_in": None,
                "messages_out": None,
            },
        )
        row["retained"] = True
    found = [rows[t] for t in sorted(rows) if matcher is None or matcher.match(t)[0]]
    return paged(request, found)


# ------------------------------------------------------------------ retained, publish

_MESSAGE = obj(
    {
        "topic": STR,
        "payload": STR,
        "payload_encoding": {"type": "string", "enum": ["plain", "base64"]},
        "qos": INT,
        "size": INT,
    },
    ["topic", "payload", "payload_encoding", "qos", "size"],
)
_TOPIC = Param(
    "topic", "path", NONEMPTY, "topic name, URL-encoded ('/' as %2F or as is)", True, slashes=True
)


def _message(topic: str, message: Message) -> dict[str, Any]:
    try:
        payload, encoding = message.payload.decode("utf-8"), "plain"
    except UnicodeDecodeError:
        payload, encoding = base64.b64encode(message.payload).decode(), "base64"
    return {
        "topic": topic,
        "payload": payload,
        "payload_encoding": encoding,
        "qos": message.qos,
        "size": len(message.payload),
    }


def _live_retained(ctx: Context) -> list[tuple[str, Message]]:
    now = time.monotonic()
    return sorted(
        (t, m) for t, m in ctx.mqtt.router.retained if isinstance(m, Message) and not m.expired(now)
    )


async def list_retained(ctx: Context, request: web.Request) -> Any:
    return paged(request, [_message(t, m) for t, m in _live_retained(ctx)])


def _retained(ctx: Context, topic: str) -> Message:
    message = ctx.mqtt.router.retained.get(topic) if topic else None
    if not isinstance(message, Message) or message.expired(time.monotonic()):
        raise ApiNotFound(f"no retained message on {topic!r}")
    return message


async def get_retained(ctx: Context, request: web.Request) -> Any:
    topic = request.match_info["topic"]
    return _message(topic, _retained(ctx, topic))


async def delete_retained(ctx: Context, request: web.Request) -> Any:
    topic = request.match_info["topic"]
    _retained(ctx, topic)
    ctx.mqtt.router.clear_retained(topic)  # also from the Meta Service: it stays deleted
    return None


_PUBLISH_FIELDS = ("topic", "payload", "payload_encoding", "qos", "retain")
_PUBLISH = obj(
    {
        "topic": NONEMPTY,
        "payload": STR,
        "payload_encoding": {"type": "string", "enum": ["plain", "base64"], "default": "plain"},
        "qos": {"type": "integer", "enum": [0, 1, 2], "default": 0},
        "retain": {"type": "boolean", "default": False},
    },
    ["topic", "payload"],
)


async def publish(ctx: Context, request: web.Request) -> Any:
    broker = ctx.mqtt
    body = await json_body(request)
    no_extra_fields(body, _PUBLISH_FIELDS)
    topic = field_of(body, "topic", str)
    text = field_of(body, "payload", str)
    encoding = field_of(body, "payload_encoding", str, "plain")
    qos = field_of(body, "qos", int, 0)
    retain = field_of(body, "retain", bool, False)
    try:
        trie.validate_topic_name(topic, broker.config.max_topic_levels)
    except MqttError as exc:
        raise ApiBadRequest("topic", exc.message) from None
    if topic.startswith("$"):
        raise ApiBadRequest("topic", "topics starting with '$' are the broker's own")
    if encoding == "plain":
        payload = text.encode("utf-8")
    elif encoding == "base64":
        try:
            payload = base64.b64decode(text, validate=True)
        except binascii.Error:
            raise ApiBadRequest("payload", "not valid base64") from None
    else:
        raise ApiBadRequest("payload_encoding", f"{encoding!r} is not plain or base64")
    if qos not in (0, 1, 2):
        raise ApiBadRequest("qos", f"{qos} is not 0, 1 or 2")
    if retain and not broker.config.retain_available:
        raise ApiBadRequest("retain", "retained messages are disabled (mqtt.retain_available)")
    broker.publish_internal(Message(topic, payload, qos, retain))
    return {"topic": topic, "size": len(payload), "qos": qos, "retain": retain}


# ------------------------------------------------------------------ users

_USER = obj({"username": STR, "scram": BOOL}, ["username"])
_USERNAME = Param("username", "path", NONEMPTY, "user name", required=True)


def _store(ctx: Context) -> tuple[MemoryUserStore, str | MetaRules]:
    """The user store and what keeps it: the password file, or the Meta Service (409
    when neither)."""
    security = ctx.mqtt.security
    path = security.config.password_file
    rules = ctx.node.rules
    if not path and rules is not None and rules.users is not None:
        _loaded(rules)
        return rules.users, rules
    if not path or not isinstance(security.users, MemoryUserStore):
        raise ApiConflict(
            "no auth.password_file is configured and no Meta Service keeps users "
            "(storage engine memory, or no meta role and no peers): users cannot be managed"
        )
    return security.users, path


def _loaded(rules: MetaRules) -> None:
    """409 until the users are loaded: an empty list would be a wrong answer."""
    try:
        rules.check_loaded()
    except MetaError as exc:
        raise ApiConflict(str(exc)) from None


async def list_users(ctx: Context, request: web.Request) -> Any:
    store, _ = _store(ctx)
    users = sorted(store.users(), key=lambda u: u.username)
    return paged(request, [{"username": u.username, "scram": u.scram is not None} for u in users])


def _write_user(path: str, username: str, password: str) -> User:
    """Runs in a worker thread: PBKDF2 hashing is slow on purpose."""
    set_password(path, username, password)
    user = load_password_file(path).get(username)
    assert user is not None
    return user


def _password(body: dict[str, Any]) -> str:
    password = field_of(body, "password", str)
    if not password:
        raise ApiBadRequest("password", "empty")
    return password


async def _save_user(ctx: Context, username: str, password: str, create: bool) -> None:
    store, keeper = _store(ctx)
    if isinstance(keeper, MetaRules):
        try:
            user = await asyncio.to_thread(new_user, username, password)
        except ValueError as exc:
            raise ApiBadRequest("username", str(exc)) from None
        try:
            await keeper.set_user(user_record(user), create)
        except MetaConflict:
            if create:
                raise ApiConflict(f"user {username!r} already exists") from None
            raise ApiNotFound(f"no user {username!r}") from None
        except MetaError as exc:
            raise ApiConflict(f"{type(exc).__name__}: {exc}") from None
        return
    try:
        user = await asyncio.to_thread(_write_user, keeper, username, password)
    except ValueError as exc:
        raise ApiBadRequest("username", str(exc)) from None
    store.put(user)


async def add_user(ctx: Context, request: web.Request) -> Any:
    store, _ = _store(ctx)
    body = await json_body(request)
    no_extra_fields(body, ("username", "password"))
    username = field_of(body, "username", str)
    password = _password(body)
    async with ctx.users_lock:
        if store.get(username) is not None:
            raise ApiConflict(f"user {username!r} already exists")
        await _save_user(ctx, username, password, create=True)
    return {"username": username}


async def change_password(ctx: Context, request: web.Request) -> Any:
    store, _ = _store(ctx)
    username = request.match_info["username"]
    body = await json_body(request)
    no_extra_fields(body, ("password",))
    password = _password(body)
    async with ctx.users_lock:
        if store.get(username) is None:
            raise ApiNotFound(f"no user {username!r}")
        await _save_user(ctx, username, password, create=False)
    return {"username": username}


async def delete_user(ctx: Context, request: web.Request) -> Any:
    store, keeper = _store(ctx)
    username = request.match_info["username"]
    async with ctx.users_lock:
        if store.get(username) is None:
            raise ApiNotFound(f"no user {username!r}")
        if isinstance(keeper, MetaRules):
            try:
                deleted = await keeper.delete_user(username)
            except MetaError as exc:
                raise ApiConflict(f"{type(exc).__name__}: {exc}") from None
            if not deleted:
                raise ApiNotFound(f"no user {username!r}")
            return None
        await asyncio.to_thread(remove_user, keeper, username)
        store.remove(username)
    return None


# ------------------------------------------------------------------ blacklist

_BAN = obj(
    {
        "kind": {"type": "string", "enum": list(BLACKLIST_KINDS)},
        "value": NONEMPTY,
        "until": {"type": ["number", "null"], "description": "seconds since the epoch"},
    },
    ["kind", "value"],
)


def _bans(ctx: Context) -> list[dict[str, Any]]:
    # The blacklist keeps (kind, value) names and IP networks apart (limits.Blacklist).
    blacklist = ctx.mqtt.security.limits.blacklist
    now = time.time()
    entries = [(k, v, u) for (k, v), u in blacklist._names.items() if u > now]
    entries += [("ip", str(n), u) for n, u in blacklist._networks.items() if u > now]
    return [
        {"kind": k, "value": v, "until": None if u == float("inf") else u}
        for k, v, u in sorted(entries, key=lambda e: (e[0], e[1]))
    ]


async def list_blacklist(ctx: Context, request: web.Request) -> Any:
    return paged(request, _bans(ctx))


def _kind_value(kind: str, value: str) -> tuple[str, str]:
    if kind not in BLACKLIST_KINDS:
        raise ApiBadRequest("kind", f"{kind!r} is not one of " + ", ".join(BLACKLIST_KINDS))
    if not value:
        raise ApiBadRequest("value", "empty")
    if kind == "ip":
        try:
            value = str(ipaddress.ip_network(value, strict=False))
        except ValueError:
            raise ApiBadRequest("value", f"{value!r} is not an IP address or CIDR") from None
    return kind, value


async def add_ban(ctx: Context, request: web.Request) -> Any:
    body = await json_body(request)
    no_extra_fields(body, ("kind", "value", "until"))
    kind, value = _kind_value(field_of(body, "kind", str), field_of(body, "value", str))
    until = field_of(body, "until", (int, float, type(None)), None)
    if until is not None and until <= time.time():
        raise ApiBadRequest("until", f"{until} is in the past")
    if any(b["kind"] == kind and b["value"] == value for b in _bans(ctx)):
        raise ApiConflict(f"{kind} {value!r} is already banned")
    ctx.mqtt.security.limits.blacklist.ban(kind, value, float("inf") if until is None else until)
    return {"kind": kind, "value": value, "until": until}


async def delete_ban(ctx: Context, request: web.Request) -> Any:
    kind, value = _kind_value(request.match_info["kind"], request.match_info["value"])
    if not ctx.mqtt.security.limits.blacklist.unban(kind, value):
        raise ApiNotFound(f"{kind} {value!r} is not banned")
    return None


# ------------------------------------------------------------------ the routes

_BAD = (400, 404)
ROUTES = (
    Route(
        "GET",
        "/api/v1/mqtt/clients",
        list_clients,
        "Connected clients",
        "mqtt",
        page_of(_CLIENT),
        (
            Param("clientid", "query", STR, "only this client id"),
            Param("username", "query", STR, "only clients of this user"),
            *PAGING,
        ),
        errors=_BAD,
    ),
    Route(
        "GET",
        "/api/v1/mqtt/clients/{clientid}",
        get_client,
        "A connected client",
        "mqtt",
        _CLIENT,
        (_CLIENTID,),
        errors=_NOT_FOUND,
    ),
    Route(
        "DELETE",
        "/api/v1/mqtt/clients/{clientid}",
        kick_client,
        "Kick a client (DISCONNECT 0x98 Administrative action); its session stays",
        "mqtt",
        {},
        (_CLIENTID,),
        status=204,
        errors=_NOT_FOUND,
    ),
    Route(
        "GET",
        "/api/v1/mqtt/clients/{clientid}/subscriptions",
        client_subscriptions,
        "The subscriptions of one client's session",
        "mqtt",
        {"type": "array", "items": _SUBSCRIPTION},
        (_CLIENTID,),
        errors=_NOT_FOUND,
    ),
    Route(
        "GET",
        "/api/v1/mqtt/sessions",
        list_sessions,
        "Sessions, online and offline",
        "mqtt",
        page_of(_SESSION),
        (Param("clientid", "query", STR, "only this client id"), *PAGING),
        errors=_BAD,
    ),
    Route(
        "GET",
        "/api/v1/mqtt/sessions/{clientid}",
        get_session,
        "A session",
        "mqtt",
        _SESSION,
        (_CLIENTID,),
        errors=_NOT_FOUND,
    ),
    Route(
        "DELETE",
        "/api/v1/mqtt/sessions/{clientid}",
        delete_session,
        "End a session (its client, if connected, is disconnected)",
        "mqtt",
        {},
        (_CLIENTID,),
        status=204,
        errors=_NOT_FOUND,
    ),
    Route(
        "GET",
        "/api/v1/mqtt/subscriptions",
        list_subscriptions,
        "Subscriptions of all sessions",
        "mqtt",
        page_of(_SUBSCRIPTION),
        (
            Param("clientid", "query", STR, "only this client's"),
            Param("topic", "query", STR, "only this topic filter"),
            *PAGING,
        ),
        errors=_BAD,
    ),
    Route(
        "GET",
        "/api/v1/mqtt/topics",
        list_topics,
        "Topics with subscribers or a retained message, with message counts. Counts cover "
        "a topic while its delivery plan is cached: from its first message after the last "
        "subscription change; null where messages are routed one by one (shared "
        "subscriptions, subscription identifiers, $ topics). messages_out is messages_in "
        "times subscribers (deliveries planned)",
        "mqtt",
        page_of(_TOPIC_ROW),
        (Param("match", "query", STR, "only topics this topic filter matches"), *PAGING),
        errors=_BAD,
    ),
    Route(
        "GET",
        "/api/v1/mqtt/retained",
        list_retained,
        "Retained messages",
        "mqtt",
        page_of(_MESSAGE),
        PAGING,
        errors=_BAD,
    ),
    Route(
        "GET",
        "/api/v1/mqtt/retained/{topic}",
        get_retained,
        "The retained message of a topic",
        "mqtt",
        _MESSAGE,
        (_TOPIC,),
        errors=_NOT_FOUND,
    ),
    Route(
        "DELETE",
        "/api/v1/mqtt/retained/{topic}",
        delete_retained,
        "Clear the retained message of a topic",
        "mqtt",
        {},
        (_TOPIC,),
        status=204,
        errors=_NOT_FOUND,
    ),
    Route(
        "POST",
        "/api/v1/mqtt/publish",
        publish,
        "Publish a message as the broker",
        "mqtt",
        obj({"topic": STR, "size": INT, "qos": INT, "retain": BOOL}),
        body=_PUBLISH,
        errors=_BAD,
    ),
    Route(
        "GET",
        "/api/v1/mqtt/users",
        list_users,
        "Users (of auth.password_file, else of the Meta Service)",
        "mqtt",
        page_of(_USER),
        PAGING,
        errors=(400, 404, 409),
    ),
    Route(
        "POST",
        "/api/v1/mqtt/users",
        add_user,
        "Add a user (to auth.password_file, else to the Meta Service)",
        "mqtt",
        obj({"username": STR}),
        body=obj({"username": NONEMPTY, "password": NONEMPTY}, ["username", "password"]),
        status=201,
        errors=(400, 404, 409),
    ),
    Route(
        "PUT",
        "/api/v1/mqtt/users/{username}",
        change_password,
        "Change a user's password",
        "mqtt",
        obj({"username": STR}),
        (_USERNAME,),
        body=obj({"password": NONEMPTY}, ["password"]),
        errors=(400, 404, 409),
    ),
    Route(
        "DELETE",
        "/api/v1/mqtt/users/{username}",
        delete_user,
        "Delete a user",
        "mqtt",
        {},
        (_USERNAME,),
        status=204,
        errors=(404, 409),
    ),
    Route(
        "GET",
        "/api/v1/mqtt/blacklist",
        list_blacklist,
        "Banned client ids, usernames and IP networks",
        "mqtt",
        page_of(_BAN),
        PAGING,
        errors=_BAD,
    ),
    Route(
        "POST",
        "/api/v1/mqtt/blacklist",
        add_ban,
        "Ban a client id, username or IP network",
        "mqtt",
        _BAN,
        body=_BAN,
        status=201,
        errors=(400, 404, 409),
    ),
    Route(
        "DELETE",
        "/api/v1/mqtt/blacklist/{kind}/{value}",
        delete_ban,
        "Lift a ban",
        "mqtt",
        {},
        (
            Param("kind", "path", _BAN["properties"]["kind"], "clientid, username or ip", True),
            Param("value", "path", NONEMPTY, "the banned value, URL-encoded", True, slashes=True),
        ),
        status=204,
        errors=_BAD,
    ),
)
