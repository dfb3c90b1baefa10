"""The built-in users: the ``UserStore`` protocol, its in-memory implementation, and the
password file that fills it.

A password file has one user per line, ``username:record[:scram]``: ``record`` is a
``passwords.py`` record (so a ``mosquitto_passwd`` file imports unchanged) and the optional
``scram`` field holds the user's SCRAM-SHA-256 credentials (``scram.py``), written when the
user is created with ``robustmq-server passwd``. Blank lines and lines starting with ``#``
are skipped. A bad line stops the broker from starting, naming the file and the line.
Without a password file, on a node that reaches a Meta Service, users are records of the
``mqtt`` group's ``users`` table (``user_record`` / ``user_from_record``), which the
broker's rule cache (``robustmq/broker/mqtt/meta_rules.py``) keeps in a
``MemoryUserStore``. Checking a password is ``authn.py``'s job.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from typing import Protocol

from robustmq.broker.auth.passwords import BadRecord, check_record, hash_password
from robustmq.broker.auth.scram import ScramCredentials
from robustmq.errors import SecurityFileError

MAX_USERNAME_BYTES = 65535  # an MQTT UTF-8 string (§1.5.4)


@dataclass(frozen=True, slots=True)
class User:
    username: str
    password_record: str
    scram: ScramCredentials | None = None


class UserStore(Protocol):
    loaded: bool
    """False while the users are not known yet (a Meta Service not reached so far):
    authentication then answers "server unavailable" rather than "bad credentials"."""

    def get(self, username: str) -> User | None: ...

    def __len__(self) -> int: ...


class MemoryUserStore:
    """Users in a dict: what a password file loads into, what the Meta Service's users
    are cached in, and what tests fill directly."""

    def __init__(self, users: list[User] | None = None, *, loaded: bool = True) -> None:
        self._users = {u.username: u for u in users or ()}
        self.loaded = loaded

    def get(self, username: str) -> User | None:
        return self._users.get(username)

    def __len__(self) -> int:
        return len(self._users)

    def put(self, user: User) -> None:
        self._users[user.username] = user

    def remove(self, username: str) -> bool:
        return self._users.pop(username, None) is not None

    def users(self) -> list[User]:
        return list(self._users.values())


def user_record(user: User) -> dict[str, str]:
    """The fields of the ``mqtt`` group's ``user.set`` for ``user``."""
    return {
        "username": user.username,
        "password_hash": user.password_record,
        "scram": user.scram.format() if user.scram is not None else "",
    }


def user_from_record(record: dict[str, str]) -> User:
    """The user a ``users`` record holds, checked as a password-file line is;
    ``ValueError`` when it is not one."""
    scram = record.get("scram") or ""
    return parse_line(
        f"{record.get('username')}:{record.get('password_hash')}" + (f":{scram}" if scram else "")
    )


def new_user(username: str, password: str) -> User:
    """A user with a fresh PBKDF2 record and SCRAM-SHA-256 credentials for ``password``."""
    _check_username(username)
    return User(username, hash_password(password), ScramCredentials.from_password(password))


def load_password_file(path: str) -> MemoryUserStore:
    """The users of a password file; ``SecurityFileError`` with the line number if bad."""
    return _parse_password_file(path, _read_password_file(path))


def _read_password_file(path: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise SecurityFileError(
            path, 0, f"cannot read the password file ({exc.strerror})"
        ) from None


def _parse_password_file(path: str, data: bytes) -> MemoryUserStore:
    store = MemoryUserStore()
    # Lines end at "\n" only: a comment holding a form feed, NEL or U+2028 is one line.
    for number, raw in enumerate(data.split(b"\n"), 1):
        try:
            line = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise SecurityFileError(path, number, "not valid UTF-8") from None
        if not line or line.startswith("#"):
            continue
        try:
            user = parse_line(line)
        except ValueError as exc:
            raise SecurityFileError(path, number, str(exc)) from None
        if store.get(user.username) is not None:
            raise SecurityFileError(path, number, f"user {user.username!r} appears twice")
        store.put(user)
    return store


def parse_line(line: str) -> User:
    """One ``username:record[:scram]`` line; ``ValueError`` says what is wrong."""
    username, sep, rest = line.partition(":")
    if not sep:
        raise ValueError("expected username:password-hash")
    _check_username(username)
    record, _, scram = rest.partition(":")
    try:
        check_record(record)
    except BadRecord as exc:
        raise ValueError(str(exc)) from None
    return User(username, record, ScramCredentials.parse(scram) if scram else None)


def format_line(user: User) -> str:
    scram = f":{user.scram.format()}" if user.scram is not None else ""
    return f"{user.username}:{user.password_record}{scram}"


def set_password(path: str, username: str, password: str) -> bool:
    """Adds or updates ``username`` in the password file (created if missing); returns
    whether the user was new."""
    user = new_user(username, password)
    real = os.path.realpath(path)
    lines = _file_lines(real) if os.path.exists(real) else []
    new = True
    for i, line in enumerate(lines):
        if _username_of(line) == username:
            lines[i] = format_line(user)
            new = False
    if new:
        lines.append(format_line(user))
    _replace_file(real, lines)
    return new


def remove_user(path: str, username: str) -> bool:
    """Takes ``username`` out of the password file; returns whether it was there."""
    real = os.path.realpath(path)
    lines = _file_lines(real)
    kept = [line for line in lines if _username_of(line) != username]
    _replace_file(real, kept)
    return len(kept) < len(lines)


def _file_lines(path: str) -> list[str]:
    """The lines of a password file that loads (a file we could not read back is never
    rewritten), split where the loader splits so that comments stay whole."""
    data = _read_password_file(path)
    _parse_password_file(path, data)
    lines = data.decode("utf-8").split("\n")
    if lines[-1] == "":
        lines.pop()
    return lines


def _username_of(line: str) -> str | None:
    """The user a line defines, read as the loader reads it (None for a comment or blank)."""
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    return text.partition(":")[0]


def _replace_file(path: str, lines: list[str]) -> None:
    """The file replaced whole: written beside it, synced, renamed over it (so a crash
    leaves one or the other), readable by its owner only."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".passwd-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write("".join(line + "\n" for line in lines))
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _check_username(username: str) -> None:
    if not username:
        raise ValueError("empty username")
    if ":" in username:
        raise ValueError("a username cannot contain ':'")
    if len(username.encode()) > MAX_USERNAME_BYTES:
        raise ValueError(f"username longer than {MAX_USERNAME_BYTES} bytes")
    if any(ord(ch) < 0x20 or ch == "\x7f" for ch in username):
        raise ValueError("control character in username")
