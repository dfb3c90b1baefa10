"""JWT verification: HS256 and RS256 signatures, exp/nbf, algorithm confusion, garbage.

The token makers here (``hs256``, ``rs256``) serve the integration tests too."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from robustmq.broker.auth.authn import ALLOW, DENY, IGNORE, ConnectInfo
from robustmq.broker.auth.jwt import JwtAuthenticator
from robustmq.errors import SecurityFileError

SECRET = "hs-secret"


def b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def hs256(claims: dict[str, Any], secret: str, alg: str = "HS256") -> str:
    signing = (
        b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
        + b"."
        + b64(json.dumps(claims).encode())
    )
    sig = hmac.new(secret.encode(), signing, hashlib.sha256).digest()
    return (signing + b"." + b64(sig)).decode()


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def rs256(claims: dict[str, Any], key: rsa.RSAPrivateKey) -> str:
    signing = b64(json.dumps({"alg": "RS256"}).encode()) + b"." + b64(json.dumps(claims).encode())
    sig = key.sign(signing, padding.PKCS1v15(), hashes.SHA256())
    return (signing + b"." + b64(sig)).decode()


def _info(password=None, username="u"):
    return ConnectInfo("c1", username, password, "127.0.0.1")


def _outcome(auth, token):
    return auth.authenticate(_info(token.encode() if isinstance(token, str) else token))


def test_hs256_valid_token_gives_its_claims():
    auth = JwtAuthenticator(secret=SECRET)
    result = _outcome(auth, hs256({"sub": "dev1", "exp": time.time() + 60}, SECRET))
    assert result.outcome == ALLOW and result.claims["sub"] == "dev1"


@pytest.mark.parametrize(
    "claims",
    [
        # Times relative to when the test runs (collection can be minutes earlier).
        lambda now: {"exp": now - 1},
        lambda now: {"nbf": now + 60},
        lambda now: {"exp": "tomorrow"},
        lambda now: {"exp": True},
        # json.loads reads NaN and Infinity: an exp of NaN compared false, never expiring.
        lambda now: {"exp": float("nan")},
        lambda now: {"exp": float("inf")},
        lambda now: {"nbf": float("-inf")},
    ],
    ids=["expired", "not-yet-valid", "exp-text", "exp-bool", "exp-nan", "exp-inf", "nbf-inf"],
)
def test_time_window(claims):
    token = hs256(claims(time.time()), SECRET)
    assert _outcome(JwtAuthenticator(secret=SECRET), token).outcome == DENY


def test_wrong_secret_and_tampered_payload():
    auth = JwtAuthenticator(secret=SECRET)
    assert _outcome(auth, hs256({"sub": "a"}, "other")).outcome == DENY
    head, _, sig = hs256({"sub": "a"}, SECRET).split(".")
    body = b64(b'{"sub": "admin"}').decode()
    forged = f"{head}.{body}.{sig}"
    assert _outcome(auth, forged).outcome == DENY


def test_alg_none_and_alg_confusion(tmp_path):
    key = rsa_key()
    pem = tmp_path / "pub.pem"
    pem.write_bytes(public_pem(key))
    auth = JwtAuthenticator(public_key_file=str(pem))
    none = b64(b'{"alg": "none"}').decode() + "." + b64(b"{}").decode() + "."
    assert _outcome(auth, none).outcome == DENY
    # An HS256 token "signed" with the public key must not pass an RS256-only verifier.
    assert _outcome(auth, hs256({}, public_pem(key).decode())).outcome == DENY
    assert _outcome(auth, rs256({"sub": "r"}, key)).outcome == ALLOW
    assert _outcome(auth, rs256({"sub": "r"}, rsa_key())).outcome == DENY


@pytest.mark.parametrize(
    "token", [None, b"", b"plain password", b"a.b", b"a.b.c.d", b"x" * 20000 + b".a.b"]
)
def test_not_a_jwt_is_ignored(token):
    assert _outcome(JwtAuthenticator(secret=SECRET), token).outcome == IGNORE


@pytest.mark.parametrize(
    "token", [b"!!.??.**", b"e30.bm90IGpzb24.AA", b"W10.W10.AA", b"e30=.e30.AA"]
)
def test_garbage_in_three_parts_is_denied(token):
    assert _outcome(JwtAuthenticator(secret=SECRET), token).outcome == DENY


def test_token_in_the_username():
    auth = JwtAuthenticator(secret=SECRET, source="username")
    result = auth.authenticate(_info(None, hs256({"sub": "x"}, SECRET)))
    assert result.outcome == ALLOW


def test_bad_public_key_file(tmp_path):
    with pytest.raises(SecurityFileError, match="PEM public key"):
        JwtAuthenticator(public_key_file=str(tmp_path / "missing.pem"))
    bad = tmp_path / "bad.pem"
    bad.write_text("not a key")
    with pytest.raises(SecurityFileError):
        JwtAuthenticator(public_key_file=str(bad))
