"""JWT authentication (RFC 7519): a signed token in the CONNECT password (or username).

HS256 checks the signature with a shared secret (hmac), RS256 with an RSA public key in a
PEM file (``cryptography``). The algorithm comes from the configuration, never from the
token alone: a token whose header names another algorithm (``none`` included) is denied.
``exp`` and ``nbf`` are checked against the clock; the claims are returned for ACL
placeholders (``${jwt.sub}``). Something that is not a JWT at all is ignored, so the
next authenticator of the chain can judge it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import time
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from robustmq.broker.auth.authn import ALLOW, DENIED, IGNORED, AuthResult, ConnectInfo, Outcome
from robustmq.errors import SecurityFileError

_MAX_TOKEN = 16384


class JwtAuthenticator:
    def __init__(
        self, *, secret: str = "", public_key_file: str = "", source: str = "password"
    ) -> None:
        self._secret = secret.encode()
        self._public_key: rsa.RSAPublicKey | None = None
        if public_key_file:
            try:
                with open(public_key_file, "rb") as fh:
                    key = serialization.load_pem_public_key(fh.read())
            except (OSError, ValueError) as exc:
                raise SecurityFileError(
                    public_key_file, 0, f"not a readable PEM public key ({exc})"
                ) from None
            if not isinstance(key, rsa.RSAPublicKey):
                raise SecurityFileError(public_key_file, 0, "not an RSA public key (RS256)")
            self._public_key = key
        self._source = source

    def authenticate(self, info: ConnectInfo) -> Outcome:
        raw = info.password if self._source == "password" else (info.username or "").encode()
        if not raw or raw.count(b".") != 2 or len(raw) > _MAX_TOKEN:
            return IGNORED
        claims = self.verify(raw, time.time())
        return DENIED if claims is None else AuthResult(ALLOW, claims)

    def verify(self, token: bytes, now: float) -> dict[str, Any] | None:
        """The token's claims if its signature and time window are valid, else None."""
        head_b64, body_b64, sig_b64 = token.split(b".")
        try:
            header = json.loads(_unb64(head_b64))
            claims = json.loads(_unb64(body_b64))
            signature = _unb64(sig_b64)
        except (binascii.Error, ValueError, UnicodeDecodeError, RecursionError):
            # RecursionError: deeply nested JSON, parsed before the signature is checked.
            return None
        if not isinstance(header, dict) or not isinstance(claims, dict):
            return None
        signing_input = head_b64 + b"." + body_b64
        alg = header.get("alg")
        if alg == "HS256" and self._secret:
            expected = hmac.new(self._secret, signing_input, hashlib.sha256).digest()
            if not hmac.compare_digest(expected, signature):
                return None
        elif alg == "RS256" and self._public_key is not None:
            try:
                self._public_key.verify(
                    signature, signing_input, padding.PKCS1v15(), hashes.SHA256()
                )
            except InvalidSignature:
                return None
        else:
            return None
        # RFC 7519 §4.1.4/§4.1.5: expired at exp, not valid before nbf.
        exp, nbf = claims.get("exp"), claims.get("nbf")
        if exp is not None and (not _is_number(exp) or now >= exp):
            return None
        if nbf is not None and (not _is_number(nbf) or now < nbf):
            return None
        return claims

    async def close(self) -> None:
        return None


def _is_number(value: object) -> bool:
    # json.loads accepts NaN and Infinity, and an "exp" of NaN would never expire.
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _unb64(part: bytes) -> bytes:
    # base64url without padding (RFC 7515 §2).
    if b"=" in part:
        raise ValueError("padded base64url")
    return base64.urlsafe_b64decode(part + b"=" * (-len(part) % 4))
