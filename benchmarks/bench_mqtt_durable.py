"""QoS 1 throughput to a persistent session, per storage engine and fsync policy, side by
side with Mosquitto configured with persistence, in one run.

Two scenarios, each with one MQTT 3.1.1 publisher (QoS 1, a window of 100 messages in
flight) and one persistent subscriber (clean session 0, QoS 1 subscription), 64-byte
payloads: **online** (the subscriber is connected; the figure is messages it received per
second) and **offline, then drain** (the subscriber is away while the publisher sends:
acknowledged messages per second; then it reconnects and takes the queue: delivered per
second). Every broker starts fresh on a free 127.0.0.1 port and is stopped by the
process group it started. RobustMQ runs as ``robustmq-server start --storage E`` with
``ROBUSTMQ_STORAGE_FSYNC=P``; with ``memory`` nothing is stored, so it is the ceiling.
Mosquitto runs with ``persistence true``, ``persistence_location`` a fresh directory and
``autosave_interval 1`` (it writes its whole database once a second, never per message),
``max_queued_messages 0`` and ``max_inflight_messages 0`` (no limits, like ours here).

The client is a small asyncio MQTT client in this file, on the same 2-core machine as the
broker: when a broker is faster than it, the figure is the client's ceiling. Figures on a
shared machine are noisy; re-run on a quiet one for numbers to quote.

    python benchmarks/bench_mqtt_durable.py                  # 20,000 messages per scenario
    python benchmarks/bench_mqtt_durable.py -n 5000 --only leveldb,mosquitto
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import struct
import sys
import tempfile
import time
from collections.abc import Callable

from broker_process import Broker, free_port

Command = Callable[[int, str], list[str]]
PAYLOAD = b"x" * 64
WINDOW = 100  # QoS 1 messages in flight from the publisher


def _packet(first: int, body: bytes) -> bytes:
    length, encoded = len(body), bytearray()
    while True:
        byte, length = length % 128, length // 128
        encoded.append(byte | (0x80 if length else 0))
        if not length:
            return bytes([first]) + bytes(encoded) + body


def _text(value: str) -> bytes:
    raw = value.encode()
    return struct.pack(">H", len(raw)) + raw


def _connect(client_id: str, clean: bool) -> bytes:
    flags = 0x02 if clean else 0x00
    return _packet(
        0x10, _text("MQTT") + bytes([4, flags]) + struct.pack(">H", 60) + _text(client_id)
    )


class Client:
    """Just enough MQTT 3.1.1 for this benchmark: CONNECT, SUBSCRIBE, QoS 1 both ways."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.buffer = b""

    @classmethod
    async def open(cls, port: int, client_id: str, clean: bool) -> Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        client = cls(reader, writer)
        writer.write(_connect(client_id, clean))
        kind, body = await client.next_packet()
        if kind != 0x20 or body[1] != 0:
            raise RuntimeError(f"{client_id}: CONNACK {body!r}")
        return client

    async def next_packet(self) -> tuple[int, bytes]:
        while True:
            packet = self._take()
            if packet is not None:
                return packet
            data = await self.reader.read(1 << 16)
            if not data:
                raise ConnectionError("broker closed the connection")
            self.buffer += data

    def _take(self) -> tuple[int, bytes] | None:
        buf = self.buffer
        length = shift = 0
        for i in range(1, min(len(buf), 5)):
            length |= (buf[i] & 0x7F) << shift
            if not buf[i] & 0x80:
                end = i + 1 + length
                if len(buf) < end:
                    return None
                self.buffer = buf[end:]
                return buf[0], buf[i + 1 : end]
            shift += 7
        return None

    async def subscribe(self, topic: str) -> None:
        self.writer.write(_packet(0x82, struct.pack(">H", 1) + _text(topic) + b"\x01"))
        kind, _ = await self.next_packet()
        if kind != 0x90:
            raise RuntimeError(f"SUBACK expected, got {kind:#x}")

    async def publish(self, topic: str, count: int) -> float:
        """Sends ``count`` QoS 1 messages, ``WINDOW`` in flight; returns the seconds
        until the last PUBACK."""
        started = time.perf_counter()
        head = _text(topic)
        sent = acked = 0
        while acked < count:
            burst = []
            while sent < count and sent - acked < WINDOW:
                sent += 1
                burst.append(_packet(0x32, head + struct.pack(">H", sent % 65535 + 1) + PAYLOAD))
            if burst:
                self.writer.write(b"".join(burst))
            kind, _ = await self.next_packet()
            if kind == 0x40:
                acked += 1
        return time.perf_counter() - started

    async def receive(self, count: int) -> float:
        """Takes ``count`` QoS 1 PUBLISHes (acknowledging each); returns the seconds from
        the first to the last."""
        received, first = 0, 0.0
        while received < count:
            kind, body = await self.next_packet()
            if kind & 0xF0 != 0x30:
                continue
            if not received:
                first = time.perf_counter()
            received += 1
            topic_length = struct.unpack_from(">H", body)[0]
            packet_id = body[2 + topic_length : 4 + topic_length]
            self.writer.write(b"\x40\x02" + packet_id)
        return time.perf_counter() - first

    async def close(self) -> None:
        self.writer.write(b"\xe0\x00")
        await self.writer.drain()
        self.writer.close()


async def online(port: int, count: int) -> float:
    sub = await Client.open(port, "durable-sub", False)
    await sub.subscribe("bench/durable")
    pub = await Client.open(port, "durable-pub", True)
    started = time.perf_counter()
    receiving = asyncio.create_task(sub.receive(count))
    await pub.publish("bench/durable", count)
    await asyncio.wait_for(receiving, 300)
    rate = count / (time.perf_counter() - started)
    await pub.close()
    await sub.close()
    return rate


async def offline_then_drain(port: int, count: int) -> tuple[float, float]:
    sub = await Client.open(port, "queued-sub", False)
    await sub.subscribe("bench/queued")
    await sub.close()
    await asyncio.sleep(0.5)  # the subscription is durable (docs/durability.md)
    pub = await Client.open(port, "queued-pub", True)
    queued = count / await pub.publish("bench/queued", count)
    await pub.close()
    sub = await Client.open(port, "queued-sub", False)
    drained = count / await asyncio.wait_for(sub.receive(count), 300)
    await sub.close()
    return queued, drained


def robustmq(engine: str, fsync: str, count: int) -> tuple[Command, dict[str, str]]:
    def command(port: int, workdir: str) -> list[str]:
        return [
            sys.executable, "-m", "robustmq.cli.server", "start", "--mqtt-port", str(port),
            "--ws-port", "0", "--http-port", "0", "--kafka-port", "0", "--grpc-port", "0",
            "--data-dir", os.path.join(workdir, "data"), "--storage", engine,
            "--log-level", "warning",
        ]  # fmt: skip

    env = {"ROBUSTMQ_STORAGE_FSYNC": fsync, "ROBUSTMQ_MQTT_MAX_QUEUED_MESSAGES": str(count * 2)}
    return command, env


def mosquitto_command(port: int, workdir: str) -> list[str]:
    conf = os.path.join(workdir, "mosquitto.conf")
    store = os.path.join(workdir, "mosquitto-db") + "/"
    os.makedirs(store)
    with open(conf, "w") as f:
        f.write(
            f"listener {port} 127.0.0.1\nallow_anonymous true\n"
            f"persistence true\npersistence_location {store}\nautosave_interval 1\n"
            "max_queued_messages 0\nmax_inflight_messages 0\n"
            "log_dest none\nset_tcp_nodelay true\n"
        )
    return [shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", conf]


def run(command: Command, env: dict[str, str], count: int) -> tuple[float, float, float]:
    workdir = tempfile.mkdtemp(prefix="bench-durable-")
    port = free_port()
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        broker = Broker(command(port, workdir), port, os.path.join(workdir, "broker.log"))
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    try:
        rate = asyncio.run(online(port, count))
        queued, drained = asyncio.run(offline_then_drain(port, count))
        return rate, queued, drained
    finally:
        broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--messages", type=int, default=20_000, help="per scenario")
    parser.add_argument(
        "--only", default="", help="comma-separated subset: memory,leveldb,segment,mosquitto"
    )
    args = parser.parse_args()
    only = set(filter(None, args.only.split(",")))
    rows: list[tuple[str, Command, dict[str, str]]] = []
    for engine in ("memory", "leveldb", "segment"):
        for fsync in ("never",) if engine == "memory" else ("always", "interval", "never"):
            if not only or engine in only:
                command, env = robustmq(engine, fsync, args.messages)
                label = "robustmq memory" if engine == "memory" else f"robustmq {engine} {fsync}"
                rows.append((label, command, env))
    if not only or "mosquitto" in only:
        rows.append(("mosquitto persistence", mosquitto_command, {}))
    print(f"QoS 1 to one persistent subscriber, {args.messages:,} messages of 64 B, msg/s")
    print(f"{'broker':<28} {'online':>10} {'offline: queued':>16} {'then drained':>13}")
    for label, command, env in rows:
        try:
            rate, queued, drained = run(command, env, args.messages)
        except (RuntimeError, OSError, asyncio.TimeoutError) as exc:
            print(f"{label:<28} failed: {exc}")
            continue
        print(f"{label:<28} {rate:>10,.0f} {queued:>16,.0f} {drained:>13,.0f}", flush=True)


if __name__ == "__main__":
    main()
