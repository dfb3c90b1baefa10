"""SIGKILL rounds against a real ``robustmq-server``: what a client was told is kept is
kept (docs/durability.md, issue #7).

Each round, persistent publishers (paho, clean session 0, so they resend what was not
acknowledged after a reconnect) send numbered QoS 1 and QoS 2 streams, retained messages
and ``$delayed/`` publishes; the server is SIGKILLed at a random point of the streams
(seeded) and restarted on the same ports and data directory; every client then
reconnects once. (Not by paho's own retry loop: paho-mqtt 2.2 demotes a QoS 2 message
awaiting PUBCOMP to a fresh PUBLISH when a reconnect attempt fails, against MQTT 3.1.1
§4.3.3, and a broker that completed the exchange must then take it as a new message.) Persistent subscribers: one connected through the kills, one offline until the
end. Checked at the end: every message is delivered to both (the publishers got every
one acknowledged in the end), first deliveries in publish order, no QoS 2 message twice,
a QoS 1 repeat only with DUP or of a message its publisher had to resend; each retained
topic holds at least its last acknowledged value; delayed publishes arrive, never before
their delay. ``ROBUSTMQ_KILL_ROUNDS`` sets the rounds per storage engine (default 5),
``ROBUSTMQ_KILL_SEED`` the seed; a failure names the seed.
"""

from __future__ import annotations

import os
import queue
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port
from tests.integration.clients import Paho, props

ROUNDS = int(os.environ.get("ROBUSTMQ_KILL_ROUNDS", "5"))
SEED = int(os.environ.get("ROBUSTMQ_KILL_SEED", str(random.SystemRandom().randrange(1 << 30))))
PER_ROUND = 120  # messages per stream and round
DELAY = 2  # seconds of the $delayed/ publishes
RETAINED_TOPICS = 4
SERVER = [sys.executable, "-m", "robustmq.cli.server"]
# How long clients and the broker get to settle after a restart (a ceiling, not a wait).
SETTLE = 60.0


class Server:
    """``robustmq-server start`` on fixed ports and data directory, stopped by PID."""

    def __init__(self, tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.args = [
            *SERVER,
            "start",
            "--data-dir",
            str(tmp_path / "data"),
            "--mqtt-port",
            str(self.port),
            "--grpc-port",
            str(free_port()),
            "--http-port",
            "0",
            "--kafka-port",
            "0",
            "--ws-port",
            "0",
            *args,
        ]
        self.env = {**os.environ, **(env or {})}
        self.log = tmp_path / "server.log"
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        with open(self.log, "a") as log:
            self.proc = subprocess.Popen(
                self.args, stdout=subprocess.PIPE, stderr=log, text=True, env=self.env
            )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + SETTLE
        lines = []
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            lines.append(line.strip())
            if "data directory" in line:
                return
        self.proc.kill()
        raise AssertionError(f"server did not start: {lines}; log: {self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=15)

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)


def _client(port: int, client_id: str, version: int) -> Paho:
    """A persistent paho client with room for 100 messages in flight."""
    connect_props = props("CONNECT", SessionExpiryInterval=3600) if version == 5 else None
    client = Paho(port, client_id, version, clean=False, connect_props=connect_props, connect=False)
    client.client.max_inflight_messages_set(100)
    client.connect()
    return client


@dataclass
class Stream:
    """One publisher's numbered messages on one topic."""

    topic: str
    qos: int
    publisher: Paho
    next_seq: int = 0
    infos: list[tuple[int, Any]] = field(default_factory=list)
    resent: set[int] = field(default_factory=set)  # not acknowledged at a kill

    def send(self, count: int) -> None:
        for _ in range(count):
            info = self.publisher.publish(self.topic, b"%d" % self.next_seq, self.qos, wait=False)
            self.infos.append((self.next_seq, info))
            self.next_seq += 1


def _wait_published(infos: list[tuple[int, Any]], what: str) -> None:
    deadline = time.monotonic() + SETTLE
    for seq, info in infos:
        info.wait_for_publish(max(0.1, deadline - time.monotonic()))
        assert info.is_published(), f"{what}: message {seq} never acknowledged after restarts"


def _drain(sub: Paho, quiet: float = 2.0) -> list[tuple[float, Any]]:
    """Messages until none comes for ``quiet`` seconds, with when each arrived."""
    out: list[tuple[float, Any]] = []
    while True:
        try:
            message = sub.messages.get(timeout=quiet)
        except queue.Empty:
            return out
        out.append((time.monotonic(), message))


def _check_stream(
    name: str, stream: Stream, messages: list[Any], seed: int, problems: list[str]
) -> None:
    seen: set[int] = set()
    last = -1
    for message in messages:
        seq = int(message.payload)
        if seq in seen:
            if stream.qos == 2:
                problems.append(f"{name}: QoS 2 message {seq} delivered twice")
            elif not message.dup and seq not in stream.resent:
                problems.append(f"{name}: QoS 1 message {seq} repeated without DUP")
            continue
        if seq < last:
            problems.append(f"{name}: message {seq} after {last}: out of order")
        seen.add(seq)
        last = seq
    missing = sorted(set(range(stream.next_seq)) - seen)
    if missing:
        problems.append(f"{name}: {len(missing)} acknowledged messages lost: {missing[:10]}")


@pytest.mark.parametrize("engine", ["leveldb", "segment"])
def test_sigkill_rounds_lose_nothing_acknowledged(tmp_path, engine):
    _kill_rounds(tmp_path, engine, SEED, ROUNDS)


def test_fsync_always_loses_nothing_acknowledged(tmp_path):
    """docs/durability.md: with ``fsync = "always"`` an acknowledgement means the bytes
    were fsynced; a SIGKILL loses nothing acknowledged (as with every policy: SIGKILL
    leaves the page cache, which only a power loss drops)."""
    _kill_rounds(tmp_path, "segment", SEED, 2, {"ROBUSTMQ_STORAGE_FSYNC": "always"})


def _kill_rounds(
    tmp_path: Path, engine: str, seed: int, rounds: int, env: dict[str, str] | None = None
) -> None:
    rng = random.Random(seed)
    # Room for every message of every round in an offline session's queue.
    env = {"ROBUSTMQ_MQTT_MAX_QUEUED_MESSAGES": "100000", **(env or {})}
    server = Server(tmp_path, "--storage", engine, env=env)
    server.start()
    port = server.port
    clients: list[Paho] = []
    try:
        topics = {"kill/q1": 1, "kill/q2": 2}
        online = _client(port, "sub-online", 5)
        offline = _client(port, "sub-offline", 4)
        for sub in (online, offline):
            for topic, qos in topics.items():
                sub.subscribe(topic, qos)
            sub.subscribe("kill/d", 1)
        offline.disconnect()
        clients += [online, offline]
        streams = [
            Stream("kill/q1", 1, _client(port, "pub-q1", 4)),
            Stream("kill/q2", 2, _client(port, "pub-q2", 5)),
        ]
        clients += [s.publisher for s in streams]
        side = _client(port, "pub-side", 5)  # retained and delayed publishes
        clients.append(side)
        retained_acked: dict[str, int] = {}
        delayed: list[tuple[int, float, Any]] = []  # (seq, sent at, info)
        retained_infos: list[tuple[str, int, Any]] = []
        for _ in range(rounds):
            for round_part in range(2):
                for stream in streams:
                    stream.send(PER_ROUND // 2)
                for i in range(RETAINED_TOPICS):
                    topic = f"kill/r/{i}"
                    value = len(retained_infos)
                    info = side.publish(topic, b"%d" % value, 1, retain=True, wait=False)
                    retained_infos.append((topic, value, info))
                if round_part == 0:
                    seq = len(delayed)
                    info = side.publish(f"$delayed/{DELAY}/kill/d", b"%d" % seq, 1, wait=False)
                    delayed.append((seq, time.monotonic(), info))
            # Killed while the streams are under way: some acknowledged, some not.
            stream = streams[rng.randrange(len(streams))]
            at = stream.infos[-rng.randrange(PER_ROUND // 4, PER_ROUND)][1]
            at.wait_for_publish(SETTLE)
            connected = [online, side, *(s.publisher for s in streams)]
            for client in connected:
                client.client.loop_stop()  # no reconnect attempts while the server is down
            server.kill()
            for stream in streams:
                stream.resent |= {seq for seq, info in stream.infos if not info.is_published()}
            for topic, value, info in retained_infos:
                if info.is_published():
                    retained_acked[topic] = max(retained_acked.get(topic, -1), value)
            server.start()
            for client in connected:
                client.client.reconnect()
                client.client.loop_start()
            for stream in streams:
                _wait_published(stream.infos, f"{stream.topic} (seed {seed})")
        _wait_published([(seq, info) for seq, _, info in delayed], f"delayed (seed {seed})")
        _wait_published([(v, info) for _, v, info in retained_infos], f"retained (seed {seed})")
        for topic, value, _ in retained_infos:
            retained_acked[topic] = max(retained_acked.get(topic, -1), value)

        time.sleep(DELAY)  # the last delayed publish comes due
        offline = _client(port, "sub-offline", 4)  # a new process, as after a deploy
        clients.append(offline)
        problems: list[str] = []
        for name, sub in (("online", online), ("offline", offline)):
            received = _drain(sub)
            for stream in streams:
                messages = [m for _, m in received if m.topic == stream.topic]
                _check_stream(f"{name} {stream.topic}", stream, messages, seed, problems)
            arrivals: dict[int, float] = {}
            for at_time, message in received:
                if message.topic == "kill/d":
                    arrivals.setdefault(int(message.payload), at_time)
            for seq, sent_at, _ in delayed:
                if seq not in arrivals:
                    problems.append(f"{name}: delayed publish {seq} lost")
                elif arrivals[seq] < sent_at + DELAY - 0.05:
                    early = sent_at + DELAY - arrivals[seq]
                    problems.append(f"{name}: delayed publish {seq} {early:.2f} s early")
        reader = Paho(port, "reader", 5)
        clients.append(reader)
        reader.subscribe("kill/r/#", 1)
        retained = {m.topic: int(m.payload) for _, m in _drain(reader, 1.0)}
        for topic, value in retained_acked.items():
            if retained.get(topic, -1) < value:
                problems.append(f"{topic}: retained {retained.get(topic)} < acknowledged {value}")
        assert not problems, f"seed {seed} ({engine}, {rounds} rounds): " + "; ".join(problems)
    finally:
        for client in clients:
            client.drop()
        server.kill()
