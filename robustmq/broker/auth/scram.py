"""SCRAM-SHA-256 (RFC 5802, RFC 7677) as an MQTT 5 enhanced-authentication method.

``ScramCredentials`` is what the server keeps per user (salt, iteration count, StoredKey,
ServerKey: never the password), computed when the user is created and stored as the third
field of a password-file line (``$scram-sha-256$<i>$<salt>$<StoredKey>$<ServerKey>``, all
base64). SCRAM keys cannot be derived from the PBKDF2-SHA512 password record, so users
imported from a Mosquitto file have no SCRAM credentials and can only use passwords.
``ScramExchange`` is the ``AuthExchange`` registered as ``SCRAM-SHA-256`` on
``MqttBroker.auth_methods``: CONNECT carries client-first, AUTH carries server-first and
client-final, CONNACK carries server-final. Channel binding is not supported.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from collections.abc import Callable
from dataclasses import dataclass

from robustmq._core.mqtt_spec import ReasonCode
from robustmq.broker.auth.enhanced import CONTINUE, SUCCESS

METHOD = "SCRAM-SHA-256"
ITERATIONS = 4096  # RFC 7677 §4: at least 4096
_PREFIX = "$scram-sha-256$"
_MAX_MESSAGE = 4096  # no legitimate SCRAM message comes near this
_FAKE_SALT_KEY = os.urandom(32)  # per process: unknown users get a stable, fake salt


def _hmac(key: bytes, msg: bytes) -> bytes:
    return hmac.new(key, msg, hashlib.sha256).digest()


@dataclass(frozen=True, slots=True)
class ScramCredentials:
    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes

    @classmethod
    def from_password(
        cls, password: str, iterations: int = ITERATIONS, salt: bytes | None = None
    ) -> ScramCredentials:
        salt = os.urandom(16) if salt is None else salt
        # RFC 5802 §3: SaltedPassword := Hi(Normalize(password), salt, i) = PBKDF2.
        salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
        client_key = _hmac(salted, b"Client Key")
        return cls(
            salt, iterations, hashlib.sha256(client_key).digest(), _hmac(salted, b"Server Key")
        )

    @classmethod
    def parse(cls, text: str) -> ScramCredentials:
        """From the password-file form; ``ValueError`` says what is wrong."""
        if not text.startswith(_PREFIX):
            raise ValueError(f"third field is not {_PREFIX}... credentials")
        parts = text[len(_PREFIX) :].split("$")
        if len(parts) != 4 or not parts[0].isdigit() or int(parts[0]) < 1:
            raise ValueError("SCRAM credentials: expected $scram-sha-256$i$salt$stored$server")
        try:
            salt, stored, server = (base64.b64decode(p, validate=True) for p in parts[1:])
        except (binascii.Error, ValueError):
            raise ValueError("SCRAM credentials are not base64") from None
        if not salt or len(stored) != 32 or len(server) != 32:
            raise ValueError("SCRAM credentials of the wrong length")
        return cls(salt, int(parts[0]), stored, server)

    def format(self) -> str:
        fields = (self.salt, self.stored_key, self.server_key)
        return _PREFIX + "$".join(
            [str(self.iterations), *(base64.b64encode(f).decode() for f in fields)]
        )


class _Failed(Exception):
    pass


class ScramExchange:
    """One SCRAM-SHA-256 exchange, server side. ``lookup(username)`` gives a user's
    credentials or None. After SUCCESS, ``username`` is the authenticated user. Every
    failure is 0x86 (bad user name or password), whatever went wrong."""

    def __init__(
        self, lookup: Callable[[str], ScramCredentials | None], server_nonce: str | None = None
    ) -> None:
        self._lookup = lookup
        # Random per exchange; fixed only to replay the RFC 7677 §3 example.
        self._server_nonce = server_nonce or base64.b64encode(os.urandom(18)).decode()
        self._state = 0
        self.username: str | None = None
        self._claimed = ""
        self._creds: ScramCredentials | None = None
        self._known = False
        self._nonce = ""
        self._gs2_header = ""
        self._auth_prefix = ""  # client-first-bare "," server-first

    def step(self, data: bytes | None) -> tuple[int, bytes | None]:
        try:
            if data is None or len(data) > _MAX_MESSAGE:
                raise _Failed
            text = data.decode("utf-8")
            if self._state == 0:
                self._state = 1
                return CONTINUE, self._client_first(text).encode()
            if self._state == 1:
                self._state = 2
                return SUCCESS, self._client_final(text).encode()
        except (_Failed, UnicodeDecodeError, ValueError, binascii.Error):
            pass
        self._state = 2
        return ReasonCode.BAD_USER_NAME_OR_PASSWORD, None

    def _client_first(self, text: str) -> str:
        # gs2-header: "n,," or "y,," (no channel binding); "p=" asks for binding we lack.
        flag, _, rest = text.partition(",")
        authzid, _, bare = rest.partition(",")
        if flag not in ("n", "y") or authzid:
            raise _Failed
        self._gs2_header = f"{flag},{authzid},"
        attrs = _attributes(bare)
        if "m" in attrs or "n" not in attrs or "r" not in attrs or not attrs["r"]:
            raise _Failed
        self._claimed = _saslname(attrs["n"])
        creds = self._lookup(self._claimed)
        self._known = creds is not None
        if creds is None:
            # Answer as for a real user so the reply does not reveal who exists.
            fake_salt = _hmac(_FAKE_SALT_KEY, self._claimed.encode())[:16]
            creds = ScramCredentials(fake_salt, ITERATIONS, os.urandom(32), os.urandom(32))
        self._creds = creds
        self._nonce = attrs["r"] + self._server_nonce
        salt = base64.b64encode(creds.salt).decode()
        server_first = f"r={self._nonce},s={salt},i={creds.iterations}"
        self._auth_prefix = f"{bare},{server_first}"
        return server_first

    def _client_final(self, text: str) -> str:
        without_proof, sep, proof_attr = text.rpartition(",p=")
        if not sep:
            raise _Failed
        attrs = _attributes(without_proof)
        channel = base64.b64encode(self._gs2_header.encode()).decode()
        if attrs.get("c") != channel or attrs.get("r") != self._nonce:
            raise _Failed
        proof = base64.b64decode(proof_attr, validate=True)
        creds = self._creds
        assert creds is not None
        auth_message = f"{self._auth_prefix},{without_proof}".encode()
        signature = _hmac(creds.stored_key, auth_message)
        if len(proof) != len(signature):
            raise _Failed
        client_key = bytes(a ^ b for a, b in zip(proof, signature, strict=True))
        ok = hmac.compare_digest(hashlib.sha256(client_key).digest(), creds.stored_key)
        if not ok or not self._known:
            raise _Failed
        self.username = self._claimed
        return "v=" + base64.b64encode(_hmac(creds.server_key, auth_message)).decode()


def _attributes(text: str) -> dict[str, str]:
    attrs: dict[str, str] = {}
    for part in text.split(","):
        name, eq, value = part.partition("=")
        if len(name) != 1 or not eq or name in attrs:
            raise _Failed
        attrs[name] = value
    return attrs


def _saslname(value: str) -> str:
    # RFC 5802 §5.1: "," and "=" travel as "=2C" and "=3D"; any other "=" is an error.
    if value.replace("=2C", "").replace("=3D", "").count("="):
        raise _Failed
    return value.replace("=2C", ",").replace("=3D", "=")
