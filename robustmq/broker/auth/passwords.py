"""Password records: hashing a password and checking one against a stored record.

Records are Mosquitto's (``mosquitto_passwd``), so a Mosquitto password file works as is:
``$7$<iterations>$<base64 salt>$<base64 hash>`` is PBKDF2-HMAC-SHA512 (what we write, with
more iterations than Mosquitto's 101) and ``$6$<base64 salt>$<base64 hash>`` is one round of
SHA-512 over password + salt (Mosquitto 1.x, accepted for import only). Comparisons are
constant-time. Files of records live in ``users.py``; SCRAM credentials in ``scram.py``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os

PBKDF2_ITERATIONS = 10_000
SALT_BYTES = 12  # what mosquitto_passwd uses
_MAX_ITERATIONS = 10_000_000  # a record asking for more is refused, not obeyed


class BadRecord(ValueError):
    """A password record that is not in a known format (the message says why)."""


def hash_password(password: str, iterations: int = PBKDF2_ITERATIONS) -> str:
    """A new ``$7$`` record (PBKDF2-HMAC-SHA512, random salt) for ``password``."""
    salt = os.urandom(SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return f"$7${iterations}${_b64(salt)}${_b64(digest)}"


def check_record(record: str) -> None:
    """Raises ``BadRecord`` unless ``record`` is a well-formed ``$7$`` or ``$6$`` record."""
    _parse(record)


def verify_password(record: str, password: bytes) -> bool:
    """Whether ``password`` matches ``record``; False for a malformed record."""
    try:
        kind, iterations, salt, expected = _parse(record)
    except BadRecord:
        return False
    if kind == "7":
        digest = hashlib.pbkdf2_hmac("sha512", password, salt, iterations)
    else:
        digest = hashlib.sha512(password + salt).digest()
    return hmac.compare_digest(digest, expected)


def _parse(record: str) -> tuple[str, int, bytes, bytes]:
    parts = record.split("$")
    if len(parts) < 2 or parts[0] != "":
        raise BadRecord("not a password hash (expected $7$... or $6$...)")
    kind = parts[1]
    if kind == "7" and len(parts) == 5:
        if not parts[2].isdigit() or not 1 <= int(parts[2]) <= _MAX_ITERATIONS:
            raise BadRecord(f"bad iteration count {parts[2]!r}")
        iterations, salt, digest = int(parts[2]), parts[3], parts[4]
        size = 64
    elif kind == "6" and len(parts) == 4:
        iterations, salt, digest = 1, parts[2], parts[3]
        size = 64
    elif kind in ("6", "7"):
        fields = "iterations$salt$hash" if kind == "7" else "salt$hash"
        raise BadRecord(f"a ${kind}$ record has the form ${kind}${fields}")
    else:
        raise BadRecord(f"unknown password hash format ${kind}$ (expected $7$ or $6$)")
    raw_salt, raw_digest = _unb64(salt, "salt"), _unb64(digest, "hash")
    if not raw_salt or len(raw_digest) != size:
        raise BadRecord("salt or hash of the wrong length")
    return kind, iterations, raw_salt, raw_digest


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BadRecord(f"{what} is not base64") from None
