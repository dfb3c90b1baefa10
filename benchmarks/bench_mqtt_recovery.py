"""Restart recovery of persistent MQTT sessions: how long ``robustmq-server start`` takes
to serve again after a SIGKILL, with many sessions that each have queued messages.

A child process writes the state the broker would have written, through the same
classes (``MetaSessionStore`` for sessions, subscriptions and their state records in the
``mqtt`` group of an in-process Meta Service; the storage engine and the broker's own
journal record encoding for the queued QoS 1 messages), then is SIGKILLed. The
benchmark then times ``robustmq-server start`` on that data directory until its MQTT
listener answers a CONNECT (the broker opens it once recovery is done), and until one
sampled session, resumed by a paho client, has received its queued messages. Issue #7
sets the target: 100,000 sessions with 10 queued messages each in under 30 s.

    python benchmarks/bench_mqtt_recovery.py                    # 100,000 x 10, leveldb
    python benchmarks/bench_mqtt_recovery.py -n 10000 --storage segment

Figures from a shared 2-core machine are noisy; re-run on a quiet one for numbers to
quote. The ``segment`` engine keeps files open per shard (one shard per session queue):
keep ``-n`` below the open-files limit (``ulimit -n``) with it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from broker_process import free_port

SERVER = [sys.executable, "-m", "robustmq.cli.server", "start"]


async def populate(data_dir: str, engine_name: str, sessions: int, messages: int) -> None:
    """Writes ``sessions`` persistent sessions with ``messages`` queued QoS 1 messages
    each, as the broker stores them; prints "populated" once all is written."""
    from robustmq.broker.mqtt.message import Message
    from robustmq.broker.mqtt.persistence import (
        _QUEUE_SHARD,
        QUEUE_PREFIX,
        MetaSessionStore,
        _queue_record,
    )
    from robustmq.broker.mqtt.session import Delivery, SubscriptionOptions
    from robustmq.config import StorageConfig
    from robustmq.meta.service import start_meta_node
    from robustmq.node import engine_config
    from robustmq.storage import open_engine

    engine = await open_engine(engine_config(StorageConfig(engine=engine_name), data_dir))
    meta = await start_meta_node(1, (), "127.0.0.1", 0, data_dir)
    store = MetaSessionStore(meta.host, engine, 1)
    options = SubscriptionOptions(1, False, False, 0)
    started = time.perf_counter()
    chunk = 2000
    for first in range(0, sessions, chunk):
        for i in range(first, min(first + chunk, sessions)):
            client_id = f"s-{i}"
            store.session_set(client_id, None, 0xFFFFFFFF)
            store.subscription_set(client_id, f"bench/{i}", options)
            store.session_online(client_id, None, False)
            shard = QUEUE_PREFIX + client_id
            await engine.create_shard(shard, _QUEUE_SHARD)
            records = [
                _queue_record(
                    Delivery(Message(f"bench/{i}", b"%d" % n, 1, False), 1, False, ()), 0, None
                )
                for n in range(messages)
            ]
            await engine.append(shard, records)
        written = asyncio.Event()
        store.after_appends(written.set)  # the subscriptions of this chunk are committed
        await written.wait()
        print(f"  {min(first + chunk, sessions):,} sessions written", flush=True)
    await store.close()
    await engine.flush()
    print(f"populated in {time.perf_counter() - started:.1f} s", flush=True)
    await asyncio.sleep(3600)  # SIGKILLed here


def _connect(port: int, client_id: str, deadline: float) -> tuple[object, queue.Queue[bytes]]:
    import paho.mqtt.client as paho

    messages: queue.Queue[bytes] = queue.Queue()
    connected: queue.Queue[int] = queue.Queue()
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
    client.on_connect = lambda c, u, f, rc, p: connected.put(int(rc.value))
    client.on_message = lambda c, u, m: messages.put(bytes(m.payload))
    while True:
        try:
            client.connect("127.0.0.1", port, keepalive=60)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    client.loop_start()
    code = connected.get(timeout=max(1.0, deadline - time.monotonic()))
    if code != 0:
        raise RuntimeError(f"CONNACK {code}")
    return client, messages


def measure(data_dir: str, engine_name: str, sessions: int, messages: int) -> None:
    port = free_port()
    log_path = os.path.join(data_dir, "server.log")
    command = [
        *SERVER, "--data-dir", data_dir, "--storage", engine_name, "--mqtt-port", str(port),
        "--grpc-port", "0", "--http-port", "0", "--kafka-port", "0", "--ws-port", "0",
        "--log-level", "info",
    ]  # fmt: skip
    with open(log_path, "w") as log:
        started = time.monotonic()
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = started + 600
        sample = f"s-{sessions // 2}"
        client, inbox = _connect(port, sample, deadline)
        serving = time.monotonic() - started
        got = [inbox.get(timeout=max(1.0, deadline - time.monotonic())) for _ in range(messages)]
        delivered = time.monotonic() - started
        client.disconnect()  # type: ignore[attr-defined]
        assert got == [b"%d" % n for n in range(messages)], f"{sample} got {got}"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    with open(log_path) as log:
        recovered = [line.strip() for line in log if "recovered" in line]
    print(f"recovery log: {recovered[-1] if recovered else '(none)'}")
    print(
        f"{'engine':<8} {'sessions':>9} {'queued':>10} {'serving after':>14} {'queue delivered':>16}"
    )
    print(
        f"{engine_name:<8} {sessions:>9,} {sessions * messages:>10,} {serving:>12.1f} s"
        f" {delivered:>14.1f} s   (target < 30 s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--sessions", type=int, default=100_000)
    parser.add_argument("-m", "--messages", type=int, default=10, help="queued per session")
    parser.add_argument("--storage", choices=("leveldb", "segment"), default="leveldb")
    parser.add_argument("--data-dir", help="keep the data here (default: a temporary dir)")
    parser.add_argument("--populate", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.populate:
        asyncio.run(populate(args.data_dir, args.storage, args.sessions, args.messages))
        return
    data_dir = args.data_dir or tempfile.mkdtemp(prefix="rmq-recovery-")
    try:
        print(f"writing {args.sessions:,} sessions x {args.messages} messages ({args.storage})")
        child = subprocess.Popen(
            [sys.executable, __file__, "--populate", "--data-dir", data_dir,
             "--storage", args.storage, "-n", str(args.sessions), "-m", str(args.messages)],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert child.stdout is not None
        for line in child.stdout:
            if line.startswith("populated"):
                print(line.strip())
                break
            if "000 sessions" in line and int(line.split()[0].replace(",", "")) % 20000 == 0:
                print(line.rstrip())
        else:
            raise SystemExit(f"populating failed (exit {child.wait()})")
        child.send_signal(signal.SIGKILL)  # as after a crash
        child.wait()
        measure(data_dir, args.storage, args.sessions, args.messages)
    finally:
        if args.data_dir is None:
            shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
