"""Password records and password files: our $7$ records, Mosquitto's $7$ and $6$ records
(made by the real mosquitto_passwd), and files with bad lines."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from robustmq.broker.auth.passwords import BadRecord, check_record, hash_password, verify_password
from robustmq.broker.auth.users import (
    MemoryUserStore,
    load_password_file,
    new_user,
    parse_line,
    set_password,
)
from robustmq.errors import ConfigError, SecurityFileError

needs_mosquitto_passwd = pytest.mark.skipif(
    shutil.which("mosquitto_passwd") is None, reason="mosquitto_passwd not installed"
)


def test_hash_then_verify():
    record = hash_password("s3cret", iterations=1000)
    assert record.startswith("$7$1000$")
    assert verify_password(record, b"s3cret")
    assert not verify_password(record, b"s3cret ")
    assert not verify_password(record, b"")


def test_same_password_gets_different_salts():
    assert hash_password("x", iterations=10) != hash_password("x", iterations=10)


@pytest.mark.parametrize(
    "record",
    [
        "plain",
        "$7$abc$AAAA$AAAA",
        "$7$0$AAAAAAAAAAAAAAAA$" + "A" * 88,
        "$7$99999999999$AAAAAAAAAAAAAAAA$" + "A" * 88,
        "$7$100$not base64!$AAAA",
        "$7$100$AAAAAAAAAAAAAAAA$AAAA",  # hash too short
        "$5$abc$def",
        "$6$onlytwo",
        "",
    ],
)
def test_malformed_records_are_refused_and_never_verify(record):
    with pytest.raises(BadRecord):
        check_record(record)
    assert not verify_password(record, b"anything")


@needs_mosquitto_passwd
@pytest.mark.parametrize("algorithm", ["sha512-pbkdf2", "sha512"])
def test_records_made_by_mosquitto_passwd(tmp_path, algorithm):
    path = tmp_path / "pw"
    subprocess.run(
        ["mosquitto_passwd", "-H", algorithm, "-c", "-b", str(path), "alice", "wonder land"],
        check=True,
    )
    store = load_password_file(str(path))
    user = store.get("alice")
    assert user is not None and user.scram is None
    assert user.password_record.startswith("$7$" if algorithm == "sha512-pbkdf2" else "$6$")
    assert verify_password(user.password_record, b"wonder land")
    assert not verify_password(user.password_record, b"wonderland")


def test_file_with_comments_blank_lines_and_scram(tmp_path):
    alice = new_user("alice", "pw")
    path = tmp_path / "pw"
    path.write_text(f"# users\n\n{alice.username}:{alice.password_record}:{alice.scram.format()}\n")
    store = load_password_file(str(path))
    assert len(store) == 1 and store.get("alice") == alice


@pytest.mark.parametrize(
    "content, line, reason",
    [
        (b"alice:$7$bad\n", 1, "$7$iterations$salt$hash"),
        (b"alice:$7$x$AAAA$AAAA\n", 1, "iteration count"),
        (b"# ok\n\nnocolon\n", 3, "username:password-hash"),
        (b":$6$AAAA$AAAA\n", 1, "empty username"),
        (b"alice:plaintext\n", 1, "not a password hash"),
        (b"ok:" + hash_password("x", 10).encode() + b"\nb\xffd:x\n", 2, "UTF-8"),
        (b"a:" + hash_password("x", 10).encode() + b"\na:" + hash_password("y", 10).encode(), 2,
         "twice"),
        (b"a:" + hash_password("x", 10).encode() + b":$scram-sha-256$1$xx\n", 1, "SCRAM"),
        (b"u\x01ser:" + hash_password("x", 10).encode() + b"\n", 1, "control character"),
    ],
)  # fmt: skip
def test_bad_lines_name_the_file_and_line(tmp_path, content, line, reason):
    path = tmp_path / "pw"
    path.write_bytes(content)
    with pytest.raises(SecurityFileError) as info:
        load_password_file(str(path))
    assert info.value.line == line
    assert f"{path}:{line}:" in str(info.value) and reason in str(info.value)
    assert isinstance(info.value, ConfigError)


def test_missing_file(tmp_path):
    with pytest.raises(SecurityFileError, match="cannot read"):
        load_password_file(str(tmp_path / "nope"))


def test_very_long_username_is_refused():
    record = hash_password("x", 10)
    with pytest.raises(ValueError, match="longer than 65535"):
        parse_line("u" * 70000 + ":" + record)


def test_set_password_adds_and_updates(tmp_path):
    path = str(tmp_path / "pw")
    assert set_password(path, "alice", "one") is True
    assert set_password(path, "bob", "two") is True
    assert set_password(path, "alice", "three") is False
    store = load_password_file(path)
    assert len(store) == 2
    assert verify_password(store.get("alice").password_record, b"three")
    assert verify_password(store.get("bob").password_record, b"two")


def test_set_password_refuses_a_broken_file(tmp_path):
    path = tmp_path / "pw"
    path.write_text("garbage\n")
    with pytest.raises(SecurityFileError):
        set_password(str(path), "alice", "x")
    assert path.read_text() == "garbage\n"


def test_memory_store():
    store = MemoryUserStore([new_user("a", "1")])
    assert store.get("a") is not None and store.get("b") is None
    store.put(new_user("b", "2"))
    assert store.remove("a") and not store.remove("a")
    assert [u.username for u in store.users()] == ["b"]
