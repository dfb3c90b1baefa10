"""SASL on the Kafka listener (KIP-43, KIP-152): SaslHandshake and SaslAuthenticate with
PLAIN (RFC 4616) and SCRAM-SHA-256 (RFC 5802, RFC 7677) against the broker's users.

With ``[kafka] sasl_mechanisms`` set, a connection must authenticate before any request
but ApiVersions, SaslHandshake and SaslAuthenticate; ``server.py`` closes one that does
not, as Kafka does. A failed authentication is answered with SASL_AUTHENTICATION_FAILED
and then the connection is closed; a mechanism that is not enabled gets
UNSUPPORTED_SASL_MECHANISM with the enabled ones (and, when SASL is on, a closed
connection too). SaslHandshake v0 means the SASL tokens
follow as bare size-prefixed frames instead of SaslAuthenticate requests (``raw``), which
``server.py`` routes to ``authenticate_token``.

The users are the ``[auth]`` ones (``broker/auth/users.py``). A PLAIN password is checked
by ``PasswordAuthenticator``, which runs the slow hash in a worker thread. SCRAM needs the
user's SCRAM credentials, which ``robustmq-server passwd`` writes into the password file
(users imported from a ``mosquitto_passwd`` file have none and cannot use SCRAM); the
exchange itself is ``broker/auth/scram.py`` and costs a few HMACs, so it runs inline.
"""

from __future__ import annotations

import inspect
import logging
from typing import TYPE_CHECKING, Any

from robustmq._core.kafka_codec import RequestHeader
from robustmq.broker.auth import scram
from robustmq.broker.auth.authn import ALLOW, ConnectInfo, PasswordAuthenticator
from robustmq.broker.auth.enhanced import CONTINUE, SUCCESS
from robustmq.broker.auth.users import UserStore
from robustmq.errors import (
    KafkaIllegalSaslState,
    KafkaSaslAuthenticationFailed,
    KafkaUnsupportedSaslMechanism,
)

if TYPE_CHECKING:
    from robustmq.broker.kafka.server import KafkaBroker, KafkaConnection

log = logging.getLogger(__name__)

PLAIN = "PLAIN"
SCRAM_SHA_256 = scram.METHOD
# ApiVersions, SaslHandshake, SaslAuthenticate: what a client may send before it is in.
PRE_AUTHENTICATION_APIS = frozenset({18, 17, 36})
_MAX_PLAIN = 1024  # authzid, authcid and password together; RFC 4616 allows 255 each


class SaslUsers:
    """The users SASL authenticates against, and the checks it runs on them."""

    def __init__(self, users: UserStore | None) -> None:
        self.users = users
        self.passwords = PasswordAuthenticator(users) if users is not None else None

    def __len__(self) -> int:
        return len(self.users) if self.users is not None else 0

    def scram_credentials(self, username: str) -> scram.ScramCredentials | None:
        user = self.users.get(username) if self.users is not None else None
        return user.scram if user is not None else None


class SaslSession:
    """One connection's SASL state; ``authenticated`` from the start when SASL is off."""

    def __init__(self, required: bool) -> None:
        self.authenticated = not required
        self.mechanism: str | None = None
        self.raw = False
        self.exchange: scram.ScramExchange | None = None
        self.principal: str | None = None


async def handle_sasl_handshake(
    broker: KafkaBroker, conn: KafkaConnection, header: RequestHeader, req: dict[str, Any]
) -> dict[str, Any]:
    enabled = list(broker.config.sasl_mechanisms)
    session = conn.sasl
    if session.mechanism is not None or session.principal is not None:
        return {"error_code": KafkaIllegalSaslState.code, "mechanisms": enabled}
    mechanism = req["mechanism"]
    if mechanism not in enabled:
        broker.stats["sasl_failures"] += 1
        log.warning(
            "kafka %s: SASL mechanism %r is not enabled (enabled: %s)",
            conn.peer,
            mechanism,
            ", ".join(enabled) or "none",
        )
        if enabled:
            conn.close_after_response = True  # as Kafka does; without SASL the client stays
        return {"error_code": KafkaUnsupportedSaslMechanism.code, "mechanisms": enabled}
    session.mechanism = mechanism
    session.raw = header.api_version == 0
    if mechanism == SCRAM_SHA_256:
        session.exchange = scram.ScramExchange(broker.sasl_users.scram_credentials)
    return {"error_code": 0, "mechanisms": enabled}


async def handle_sasl_authenticate(
    broker: KafkaBroker, conn: KafkaConnection, header: RequestHeader, req: dict[str, Any]
) -> dict[str, Any]:
    session = conn.sasl
    if session.mechanism is None or session.raw or session.principal is not None:
        conn.close_after_response = True
        return {
            "error_code": KafkaIllegalSaslState.code,
            "error_message": "SaslAuthenticate needs a SaslHandshake v1 first, once",
            "auth_bytes": b"",
        }
    try:
        reply = await authenticate_token(broker, conn, req["auth_bytes"])
    except KafkaSaslAuthenticationFailed as exc:
        conn.close_after_response = True
        return {"error_code": exc.code, "error_message": exc.message, "auth_bytes": b""}
    # Lifetime 0: no re-authentication is required (KIP-368).
    return {"error_code": 0, "auth_bytes": reply, "session_lifetime_ms": 0}


async def authenticate_token(broker: KafkaBroker, conn: KafkaConnection, token: bytes) -> bytes:
    """One SASL token of the chosen mechanism in, the server's token out; raises
    ``KafkaSaslAuthenticationFailed`` (logged and counted)."""
    session = conn.sasl
    if session.mechanism == PLAIN:
        username = await _check_plain(broker, conn, token)
        reply = b""
    else:
        assert session.exchange is not None
        code, data = session.exchange.step(token)
        if code == CONTINUE:
            return data or b""
        if code != SUCCESS or session.exchange.username is None:
            raise _failed(broker, conn, session.exchange.username or "?")
        username, reply = session.exchange.username, data or b""
    session.principal = username
    session.authenticated = True
    broker.stats["sasl_authentications"] += 1
    log.info("kafka %s: authenticated as %r with %s", conn.peer, username, session.mechanism)
    return reply


async def _check_plain(broker: KafkaBroker, conn: KafkaConnection, token: bytes) -> str:
    # RFC 4616 §2: [authzid] NUL authcid NUL passwd.
    parts = token.split(b"\0")
    if len(token) > _MAX_PLAIN or len(parts) != 3:
        raise _failed(broker, conn, "?", "a PLAIN message is authzid NUL authcid NUL passwd")
    try:
        authzid, username = parts[0].decode(), parts[1].decode()
    except UnicodeDecodeError:
        raise _failed(broker, conn, "?", "the user name is not UTF-8") from None
    if authzid and authzid != username:
        raise _failed(broker, conn, username, "authorization id other than the user name")
    checker = broker.sasl_users.passwords
    if checker is None:
        raise _failed(broker, conn, username)
    info = ConnectInfo(conn.client_id or "", username, parts[2], conn.peer.rpartition(":")[0])
    outcome = checker.authenticate(info)
    result = await outcome if inspect.isawaitable(outcome) else outcome
    if result.outcome != ALLOW:
        raise _failed(broker, conn, username)
    return username


def _failed(
    broker: KafkaBroker, conn: KafkaConnection, username: str, why: str = ""
) -> KafkaSaslAuthenticationFailed:
    mechanism = conn.sasl.mechanism
    broker.stats["sasl_failures"] += 1
    log.warning(
        "kafka %s: SASL %s authentication of %r failed%s",
        conn.peer,
        mechanism,
        username,
        f": {why}" if why else "",
    )
    return KafkaSaslAuthenticationFailed(
        f"Authentication failed: invalid username or password (SASL {mechanism})"
        + (f"; {why}" if why else "")
    )
