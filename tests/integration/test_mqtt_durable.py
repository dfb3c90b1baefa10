"""Durable MQTT with a real ``robustmq-server`` process: what survives a restart.

Persistent sessions (3.1.1 clean session 0, 5.0 session expiry > 0) with their
subscriptions, and retained messages, across a graceful restart (SIGTERM) and a SIGKILL,
with the ``segment`` and ``leveldb`` engines; sessions that expire are gone after a
restart; QoS 1 messages acknowledged to a publisher while the subscriber was offline are
delivered after SIGKILLs at random points; delayed wills fire after a restart;
``--storage memory`` keeps nothing (docs/durability.md says each of these).
test_mqtt_durable_kill.py has the SIGKILL rounds with connected subscribers, QoS 2
exactly once, retained messages and delayed publishes.
"""

from __future__ import annotations

import queue
import random
import signal
import time

import pytest

from tests.integration.clients import Paho, props
from tests.integration.test_cli import _start, _stop

# A change is durable once the session store's batch commits: milliseconds after the
# SUBACK (docs/durability.md, "The durability window"). A SIGKILL sooner may lose it.
DURABILITY_WINDOW = 0.5
# Listeners other than MQTT off (gRPC 0: the meta role in process): the default ports
# are shared with every other test run on the machine.
NO_SHARED_PORTS = ("--http-port", "0", "--kafka-port", "0", "--ws-port", "0", "--grpc-port", "0")


def _kill(proc) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=15)


def _restart(proc, tmp_path, engine: str, how: str):
    if how == "sigkill":
        time.sleep(DURABILITY_WINDOW)
        _kill(proc)
    else:
        assert _stop(proc) == 0
    return _start(tmp_path, *NO_SHARED_PORTS, "--storage", engine)


def _persistent(port: int, client_id: str, version: int, expiry: int = 3600) -> Paho:
    if version == 5:
        return Paho(
            port,
            client_id,
            5,
            clean=False,
            connect_props=props("CONNECT", SessionExpiryInterval=expiry),
        )
    return Paho(port, client_id, version, clean=False)


@pytest.mark.parametrize("engine", ["segment", "leveldb"])
@pytest.mark.parametrize("how", ["graceful", "sigkill"])
def test_subscriptions_and_retained_survive_a_restart(tmp_path, engine, how):
    proc, port, _ = _start(tmp_path, *NO_SHARED_PORTS, "--storage", engine)
    try:
        subs = {}
        for version in (4, 5):
            sub = _persistent(port, f"durable-{version}", version)
            sub.subscribe(f"t/{version}/+", 1)
            sub.subscribe("gone", 1)
            sub.unsubscribe("gone")
            sub.disconnect()
            subs[version] = sub
        pub = Paho(port, "pub", 5)
        pub.publish("r/kept", b"retained", 1, retain=True)
        pub.publish("r/cleared", b"soon cleared", 1, retain=True)
        pub.publish("r/cleared", b"", 1, retain=True)
        pub.disconnect()

        proc, port, _ = _restart(proc, tmp_path, engine, how)

        pub = Paho(port, "pub2", 5)
        for version in (4, 5):
            sub = _persistent(port, f"durable-{version}", version)
            assert sub.session_present, f"{version}: session lost over a {how} restart"
            pub.publish(f"t/{version}/x", b"after", 1)
            assert sub.get().payload == b"after"
            pub.publish("gone", b"unsubscribed", 1)
            sub.expect_nothing()
            sub.disconnect()
        reader = Paho(port, "reader", 5)
        reader.subscribe("r/#", 1)
        message = reader.get()
        assert (message.topic, message.payload, message.retain) == ("r/kept", b"retained", True)
        reader.expect_nothing()
    finally:
        _kill(proc)


def test_a_session_connected_at_a_sigkill_survives_it(tmp_path):
    proc, port, _ = _start(tmp_path, *NO_SHARED_PORTS, "--storage", "segment")
    try:
        sub = _persistent(port, "online", 5)
        sub.subscribe("live/#", 1)
        time.sleep(DURABILITY_WINDOW)
        sub.drop()
        _kill(proc)
        proc, port, _ = _start(tmp_path, *NO_SHARED_PORTS, "--storage", "segment")
        sub = _persistent(port, "online", 5)
        assert sub.session_present
        Paho(port, "pub", 5).publish("live/1", b"x", 1)
        assert sub.get().payload == b"x"
    finally:
        _kill(proc)


def test_expired_sessions_are_gone_after_a_restart(tmp_path):
    proc, port, _ = _start(tmp_path, *NO_SHARED_PORTS, "--storage", "segment")
    try:
        # Expires while the broker runs; and while it is down.
        for client_id in ("runs", "down"):
            sub = _persistent(port, client_id, 5, expiry=1)
            sub.subscribe("e/#", 1)
            sub.disconnect()
        kept = _persistent(port, "kept", 5, expiry=3600)
        kept.subscribe("e/#", 1)
        kept.disconnect()
        time.sleep(1.5)
        assert _stop(proc) == 0
        proc, port, _ = _start(tmp_path, *NO_SHARED_PORTS, "--storage", "segment")
        for client_id in ("runs", "down"):
            sub = _persistent(port, client_id, 5, expiry=1)
            assert not sub.session_present, f"{client_id}: expired session came back"
            Paho(port, f"p-{client_id}", 5).publish("e/1", b"x", 1)
            sub.expect_nothing()
            sub.disconnect()
        assert _persistent(port, "kept", 5).session_present
    finally:
        _kill(proc)


def test_a_session_that_expires_while_the_broker_is_down_is_gone(tmp_path):
    proc, port, _ = _start(tmp_path, *NO_SHARED_PORTS, "--storage", "leveldb")
    try:
        sub = _persistent(port, "short", 5, expiry=1)
        sub.subscribe("d/#", 1)
        sub.disconnect()
        assert _stop(proc) == 0
        time.sleep(1.5)
        proc, port, _ = _start(tmp_path, *NO_SHARED_PORTS, "--storage", "leveldb")
        assert not _persistent(port, "short", 5, expiry=1).session_present
    finally:
        _kill(proc)


def test_a_clean_start_ends_the_stored_session(tmp_path):
    proc, port, _ = _start(tmp_path, *NO_SHARED_PORTS, "--storage", "segment")
    try:
        sub = _persistent(port, "c", 4)
        sub.subscribe("c/#", 1)
        sub.disconnect()
        clean = Paho(port, "c", 4, clean=True)
        clean.disconnect()
        assert _stop(proc) == 0
        proc, port, _ = _start(tmp_path, *NO_SHARED_PORTS, "--storage", "segment")
        assert not _persistent(port, "c", 4).session_present
    finally:
        _kill(proc)


def test_memory_storage_keeps_nothing_across_a_restart(tmp_path):
    proc, port, _ = _start(tmp_path, *NO_SHARED_PORTS, "--storage", "memory")
    try:
        sub = _persistent(port, "m", 4)
        sub.subscribe("m/#", 1)
        sub.disconnect()
        Paho(port, "pub", 5).publish("m/r", b"retained", 1, retain=True)
        assert _stop(proc) == 0
        proc, port, _ = _start(tmp_path, *NO_SHARED_PORTS, "--storage", "memory")
        assert not _persistent(port, "m", 4).session_present
        reader = Paho(port, "reader", 5)
        reader.subscribe("m/#", 1)
        reader.expect_nothing()
    finally:
        _kill(proc)


def _collect(sub: Paho, seen: dict[int, int], dups: list[int], quiet: float = 1.0) -> None:
    """Reads sequence-numbered messages until none comes for ``quiet`` seconds; checks
    the order and that a repeat carries DUP."""
    while True:
        try:
            message = sub.get(timeout=quiet)
        except queue.Empty:
            return
        seq = int(message.payload)
        if seq in seen:
            assert message.dup, f"message {seq} delivered twice without DUP"
            dups.append(seq)
            continue
        assert not seen or seq > max(seen), f"message {seq} after {max(seen)}: out of order"
        seen[seq] = 1


# (subscriber client id, MQTT version, topic, QoS of the publisher and the subscription)
STREAMS = (("offline-4", 4, "seq/1", 1), ("offline-5", 5, "seq/2", 2))


@pytest.mark.parametrize("engine", ["segment", "leveldb"])
def test_acknowledged_messages_for_offline_sessions_survive_sigkills(tmp_path, engine):
    """Rounds: the subscribers are offline, two publishers send numbered QoS 1 and QoS 2
    streams and the server is SIGKILLed at a random point of them; after the restarts
    each subscriber must get every message its publisher saw acknowledged, in order,
    repeats only with DUP."""
    rng = random.Random(7)
    proc, port, _ = _start(tmp_path, *NO_SHARED_PORTS, "--storage", engine)
    acked: dict[str, list[int]] = {topic: [] for _, _, topic, _ in STREAMS}
    next_seq = 0
    try:
        for client_id, version, topic, qos in STREAMS:
            sub = _persistent(port, client_id, version)
            sub.subscribe(topic, qos)
            sub.disconnect()
        time.sleep(DURABILITY_WINDOW)
        for _ in range(3):
            pubs = {topic: Paho(port, f"pub-{qos}", 4) for _, _, topic, qos in STREAMS}
            infos: dict[str, list] = {topic: [] for topic in pubs}
            for _ in range(300):
                for _, _, topic, qos in STREAMS:
                    info = pubs[topic].publish(topic, b"%d" % next_seq, qos, wait=False)
                    infos[topic].append((next_seq, info))
                next_seq += 1
            # Killed while the streams are under way: some acknowledged, some not.
            infos["seq/1"][rng.randrange(20, 250)][1].wait_for_publish(5)
            _kill(proc)
            for topic, pub in pubs.items():
                pub.drop()
                acked[topic] += [seq for seq, info in infos[topic] if info.is_published()]
            proc, port, _ = _start(tmp_path, *NO_SHARED_PORTS, "--storage", engine)
        for client_id, version, topic, _ in STREAMS:
            sub = _persistent(port, client_id, version)
            assert sub.session_present
            seen: dict[int, int] = {}
            _collect(sub, seen, [])
            assert acked[topic], f"{topic}: no round got an acknowledgement"
            missing = sorted(set(acked[topic]) - set(seen))
            assert not missing, f"{topic}: acknowledged but lost: {missing[:20]} ({len(missing)})"
            sub.disconnect()
        # What the subscribers acknowledged is trimmed: nothing comes again.
        assert _stop(proc) == 0
        proc, port, _ = _start(tmp_path, *NO_SHARED_PORTS, "--storage", engine)
        for client_id, version, _, _ in STREAMS:
            _persistent(port, client_id, version).expect_nothing(0.5)
    finally:
        _kill(proc)


def test_a_retained_message_deleted_over_the_api_stays_deleted(tmp_path):
    import urllib.request

    from tests.conftest import free_port

    http = free_port()
    args = (
        "--storage",
        "leveldb",
        "--http-port",
        str(http),
        "--kafka-port",
        "0",
        "--grpc-port",
        "0",
    )
    proc, port, _ = _start(tmp_path, *args)
    try:
        Paho(port, "pub", 5).publish("api/r", b"keep?", 1, retain=True)
        request = urllib.request.Request(
            f"http://127.0.0.1:{http}/api/v1/mqtt/retained/api%2Fr", method="DELETE"
        )
        with urllib.request.urlopen(request, timeout=5) as answer:
            assert answer.status in (200, 204)
        proc, port, _ = _restart(proc, tmp_path, "leveldb", "graceful")
        reader = Paho(port, "reader", 5)
        reader.subscribe("api/#", 1)
        reader.expect_nothing()
    finally:
        _kill(proc)


def _watcher(port: int) -> Paho:
    watcher = _persistent(port, "watcher", 5)
    watcher.subscribe("will/#", 1)
    return watcher


def test_a_delayed_will_of_a_client_connected_at_a_sigkill_fires_after_the_restart(tmp_path):
    """MQTT 5 §3.1.3.2.2: the will is due its delay after the connection is lost; a
    SIGKILL loses it, so the delay counts from the restart."""
    proc, port, _ = _start(tmp_path, *NO_SHARED_PORTS, "--storage", "leveldb")
    try:
        _watcher(port).disconnect()
        Paho(
            port,
            "w",
            5,
            clean=False,
            connect_props=props("CONNECT", SessionExpiryInterval=60),
            will=("will/w", b"gone", 1, False),
            will_props=props("WILLMESSAGE", WillDelayInterval=2),
        )
        time.sleep(DURABILITY_WINDOW)
        _kill(proc)
        proc, port, _ = _start(tmp_path, *NO_SHARED_PORTS, "--storage", "leveldb")
        restarted = time.monotonic()
        watcher = _persistent(port, "watcher", 5)
        message = watcher.get(timeout=10)
        assert (message.topic, message.payload) == ("will/w", b"gone")
        assert time.monotonic() - restarted >= 1.0, "the will came before its delay"
        watcher.expect_nothing(0.5)
    finally:
        _kill(proc)


def test_a_will_whose_session_expired_while_the_broker_was_down_fires_at_start(tmp_path):
    proc, port, _ = _start(tmp_path, *NO_SHARED_PORTS, "--storage", "segment")
    try:
        _watcher(port).disconnect()
        client = Paho(
            port,
            "w",
            5,
            clean=False,
            connect_props=props("CONNECT", SessionExpiryInterval=1),
            will=("will/w", b"expired", 1, False),
            will_props=props("WILLMESSAGE", WillDelayInterval=30),
        )
        time.sleep(DURABILITY_WINDOW)
        client.drop()  # abnormal: the will waits for its delay or the session's end
        time.sleep(DURABILITY_WINDOW)
        assert _stop(proc) == 0
        time.sleep(1.2)
        proc, port, _ = _start(tmp_path, *NO_SHARED_PORTS, "--storage", "segment")
        watcher = _persistent(port, "watcher", 5)
        assert watcher.get(timeout=10).payload == b"expired"
        assert not Paho(port, "w", 5, clean=False).session_present
    finally:
        _kill(proc)


def test_a_will_discarded_by_a_normal_disconnect_stays_discarded(tmp_path):
    proc, port, _ = _start(tmp_path, *NO_SHARED_PORTS, "--storage", "leveldb")
    try:
        _watcher(port).disconnect()
        client = Paho(
            port,
            "w",
            5,
            clean=False,
            connect_props=props("CONNECT", SessionExpiryInterval=60),
            will=("will/w", b"no", 1, False),
            will_props=props("WILLMESSAGE", WillDelayInterval=1),
        )
        client.disconnect()
        proc, port, _ = _restart(proc, tmp_path, "leveldb", "sigkill")
        _persistent(port, "watcher", 5).expect_nothing(2.0)
    finally:
        _kill(proc)


def test_a_delayed_publish_survives_a_restart_and_fires_on_time(tmp_path):
    proc, port, _ = _start(tmp_path, *NO_SHARED_PORTS, "--storage", "leveldb")
    try:
        sub = _persistent(port, "delayed-sub", 5)
        sub.subscribe("later/#", 1)
        sub.disconnect()
        published = time.monotonic()
        Paho(port, "pub", 5).publish("$delayed/3/later/x", b"on time", 1)
        _kill(proc)  # no durability window: the PUBACK waited for the write
        proc, port, _ = _start(tmp_path, *NO_SHARED_PORTS, "--storage", "leveldb")
        sub = _persistent(port, "delayed-sub", 5)
        message = sub.get(timeout=10)
        assert message.payload == b"on time"
        assert time.monotonic() - published >= 2.9, "the delayed publish fired early"
        sub.expect_nothing(0.5)
    finally:
        _kill(proc)


def test_a_message_over_the_clients_maximum_packet_size_is_not_resent_after_a_restart(tmp_path):
    proc, port, _ = _start(tmp_path, *NO_SHARED_PORTS, "--storage", "leveldb")
    try:
        sub = Paho(
            port,
            "small",
            5,
            clean=False,
            connect_props=props("CONNECT", SessionExpiryInterval=3600, MaximumPacketSize=200),
        )
        sub.subscribe("mps/#", 1)
        pub = Paho(port, "pub", 5)
        pub.publish("mps/big", b"x" * 500, 1)  # MQTT 5 §3.1.2.25: discarded as if delivered
        pub.publish("mps/small", b"fits", 1)
        assert sub.get().payload == b"fits"
        sub.expect_nothing()
        time.sleep(DURABILITY_WINDOW)
        sub.drop()
        _kill(proc)
        proc, port, _ = _start(tmp_path, *NO_SHARED_PORTS, "--storage", "leveldb")
        # Back without a limit: a discarded message must not turn up now.
        sub = _persistent(port, "small", 5)
        assert sub.session_present
        got = []
        try:
            while True:
                got.append(sub.get(timeout=1.5).payload)
        except queue.Empty:
            pass
        assert b"x" * 500 not in got
    finally:
        _kill(proc)
