"""SCRAM-SHA-256 server exchange: the RFC 7677 §3 example byte for byte, and refusals.

``ScramClient`` is a client written from RFC 5802 for these tests and the integration
tests: it checks the server's proof, so a server that computes it wrongly fails."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

import pytest

from robustmq.broker.auth.scram import ScramCredentials, ScramExchange


def _hmac(key: bytes, msg: bytes) -> bytes:
    return hmac.new(key, msg, hashlib.sha256).digest()


class ScramClient:
    def __init__(self, username: str, password: str, nonce: str | None = None) -> None:
        self.username = username
        self.password = password
        self.nonce = nonce or base64.b64encode(os.urandom(18)).decode()
        self.bare = f"n={username.replace('=', '=3D').replace(',', '=2C')},r={self.nonce}"
        self.auth_message = b""
        self.salted = b""

    def first(self) -> bytes:
        return f"n,,{self.bare}".encode()

    def final(self, server_first: bytes) -> bytes:
        attrs = dict(part.split("=", 1) for part in server_first.decode().split(","))
        assert attrs["r"].startswith(self.nonce)
        salt, iterations = base64.b64decode(attrs["s"]), int(attrs["i"])
        self.salted = hashlib.pbkdf2_hmac("sha256", self.password.encode(), salt, iterations)
        without_proof = f"c=biws,r={attrs['r']}"
        self.auth_message = f"{self.bare},{server_first.decode()},{without_proof}".encode()
        client_key = _hmac(self.salted, b"Client Key")
        signature = _hmac(hashlib.sha256(client_key).digest(), self.auth_message)
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def server_valid(self, server_final: bytes) -> bool:
        expected = _hmac(_hmac(self.salted, b"Server Key"), self.auth_message)
        return server_final == b"v=" + base64.b64encode(expected)


# RFC 7677 §3.
RFC_SALT = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
RFC_CLIENT_NONCE = "rOprNGfwEbeRWgbNEkqO"
RFC_SERVER_NONCE = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
RFC_CLIENT_FINAL = (
    "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
    "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
)
RFC_SERVER_FINAL = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="


def _users(**passwords):
    creds = {u: ScramCredentials.from_password(p) for u, p in passwords.items()}
    return creds.get


def test_rfc7677_example():
    creds = ScramCredentials.from_password("pencil", 4096, RFC_SALT)
    ex = ScramExchange({"user": creds}.get, RFC_SERVER_NONCE)
    code, server_first = ex.step(f"n,,n=user,r={RFC_CLIENT_NONCE}".encode())
    assert code == 0x18
    assert server_first == (
        b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    )
    code, server_final = ex.step(RFC_CLIENT_FINAL.encode())
    assert (code, server_final) == (0x00, RFC_SERVER_FINAL.encode())
    assert ex.username == "user"


def test_client_round_trip_and_server_proof():
    ex = ScramExchange(_users(alice="wonderland"))
    client = ScramClient("alice", "wonderland")
    code, server_first = ex.step(client.first())
    code, server_final = ex.step(client.final(server_first))
    assert code == 0 and client.server_valid(server_final)


@pytest.mark.parametrize("user, password", [("alice", "wrong"), ("mallory", "wonderland")])
def test_wrong_password_and_unknown_user_look_the_same(user, password):
    ex = ScramExchange(_users(alice="wonderland"))
    client = ScramClient(user, password)
    code, server_first = ex.step(client.first())
    assert code == 0x18 and b",s=" in server_first and b",i=4096" in server_first
    code, data = ex.step(client.final(server_first))
    assert (code, data, ex.username) == (0x86, None, None)


@pytest.mark.parametrize(
    "first",
    [
        None,
        b"",
        b"\xff\xfe",
        b"p=tls-unique,,n=alice,r=abc",  # channel binding: not supported
        b"n,authz,n=alice,r=abc",
        b"n,,r=abc",
        b"n,,n=alice",
        b"n,,m=ext,n=alice,r=abc",
        b"n,,n=al=ice,r=abc",
        b"n,,n=alice,r=abc,r=def",
        b"x" * 5000,
    ],
)
def test_malformed_client_first(first):
    assert ScramExchange(_users(alice="pw")).step(first) == (0x86, None)


def test_tampered_client_final():
    ex = ScramExchange(_users(alice="pw"))
    client = ScramClient("alice", "pw")
    _, server_first = ex.step(client.first())
    final = client.final(server_first).replace(b"c=biws", b"c=eSws")
    assert ex.step(final) == (0x86, None)


def test_escaped_username():
    ex = ScramExchange(_users(**{"a,b=c": "pw"}))
    client = ScramClient("a,b=c", "pw")
    _, server_first = ex.step(client.first())
    assert ex.step(client.final(server_first))[0] == 0
    assert ex.username == "a,b=c"


def test_no_step_after_the_end():
    ex = ScramExchange(_users(alice="pw"))
    client = ScramClient("alice", "pw")
    _, server_first = ex.step(client.first())
    ex.step(client.final(server_first))
    assert ex.step(b"n,,n=alice,r=x")[0] == 0x86


def test_credentials_round_trip_through_text():
    creds = ScramCredentials.from_password("pw", 5000)
    assert ScramCredentials.parse(creds.format()) == creds
    for bad in (
        "$scram-sha-256$0$AA==$AA==$AA==",
        "$scram-sha-1$1$a$b$c",
        "$scram-sha-256$1$!$!$!",
    ):
        with pytest.raises(ValueError):
            ScramCredentials.parse(bad)
