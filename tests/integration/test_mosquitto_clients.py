"""The broker against the Mosquitto command-line clients (Debian mosquitto-clients).

mosquitto_pub and mosquitto_sub run as subprocesses with ``-h 127.0.0.1 -p PORT`` and
``-V mqttv311`` or ``-V mqttv5``, exactly as a user would run them. mosquitto_sub always
gets ``-W`` (and usually ``-C``) so that nothing can hang, and ``-d`` so the test can wait
for its SUBACK before publishing. Messages are printed with ``-F`` as
``MSG|topic|qos|retain|payload``.
"""

from __future__ import annotations

import signal
import subprocess

import pytest

from tests.integration.clients import (
    MOSQUITTO_VERSIONS,
    MosquittoSub,
    Paho,
    mosquitto_pub,
)

VERSIONS = pytest.mark.parametrize("version", [4, 5], ids=["mqttv311", "mqttv5"])
TIMED_OUT = 27  # mosquitto_sub's exit status when -W expires


def published(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, (result.stdout, result.stderr)


@VERSIONS
@pytest.mark.parametrize("qos", [0, 1, 2])
def test_mosquitto_pub_to_mosquitto_sub(broker, version, qos):
    sub = MosquittoSub(broker.port, "m/t", version=version, qos=qos, count=1)
    sub.wait_subscribed()
    published(mosquitto_pub(broker.port, "m/t", "-q", str(qos), "-m", "hello", version=version))
    rc, messages = sub.finish()
    assert rc == 0, sub.output
    assert messages == [["m/t", str(qos), "0", "hello"]]


@VERSIONS
def test_qos_is_downgraded_to_mosquitto_subs_subscription(broker, version):
    sub = MosquittoSub(broker.port, "m/t", version=version, qos=1, count=1)
    sub.wait_subscribed()
    published(mosquitto_pub(broker.port, "m/t", "-q", "2", "-m", "x", version=version))
    assert sub.finish()[1] == [["m/t", "1", "0", "x"]]


@VERSIONS
def test_mosquitto_sub_wildcards(broker, version):
    sub = MosquittoSub(broker.port, "w/+/x", "h/#", version=version, qos=1, count=3)
    sub.wait_subscribed()
    for topic in ["w/a/x", "w/a/b/x", "h", "other", "h/deep/er"]:
        published(mosquitto_pub(broker.port, topic, "-q", "1", "-m", topic, version=version))
    rc, messages = sub.finish()
    assert rc == 0, sub.output
    assert [m[0] for m in messages] == ["w/a/x", "h", "h/deep/er"]


@VERSIONS
def test_retained_message_from_mosquitto_pub(broker, version):
    published(mosquitto_pub(broker.port, "r/t", "-r", "-q", "1", "-m", "kept", version=version))
    sub = MosquittoSub(broker.port, "r/t", version=version, qos=1, count=1)
    rc, messages = sub.finish()
    assert rc == 0, sub.output
    assert messages == [["r/t", "1", "1", "kept"]]


@VERSIONS
def test_retained_message_cleared_with_mosquitto_pub_null_message(broker, version):
    published(mosquitto_pub(broker.port, "r/t", "-r", "-q", "1", "-m", "kept", version=version))
    published(mosquitto_pub(broker.port, "r/t", "-r", "-q", "1", "-n", version=version))
    sub = MosquittoSub(broker.port, "r/t", version=version, qos=1, count=1, wait=1)
    rc, messages = sub.finish()
    assert (rc, messages) == (TIMED_OUT, [])


@VERSIONS
def test_lines_from_stdin_arrive_in_order(broker, version):
    sub = MosquittoSub(broker.port, "l/t", version=version, qos=1, count=5)
    sub.wait_subscribed()
    lines = "".join(f"line {n}\n" for n in range(5))
    cmd = ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(broker.port), "-t", "l/t", "-q", "1"]
    cmd += ["-V", MOSQUITTO_VERSIONS[version], "-l"]
    published(subprocess.run(cmd, input=lines, capture_output=True, text=True, timeout=15))
    rc, messages = sub.finish()
    assert rc == 0, sub.output
    assert [m[3] for m in messages] == [f"line {n}" for n in range(5)]


@VERSIONS
def test_large_message_from_stdin(broker, version):
    sub = MosquittoSub(broker.port, "big/t", version=version, qos=1, count=1)
    sub.wait_subscribed()
    payload = "0123456789abcdef" * 16384  # 256 KiB
    cmd = ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(broker.port), "-t", "big/t", "-q", "1"]
    cmd += ["-V", MOSQUITTO_VERSIONS[version], "-s"]
    published(subprocess.run(cmd, input=payload, capture_output=True, text=True, timeout=15))
    rc, messages = sub.finish()
    assert rc == 0
    assert messages[0][3] == payload


@VERSIONS
def test_persistent_mosquitto_sub_session_gets_what_was_queued(broker, version):
    # -c: clean session off (MQTT 5: session expiry "never"); -E: exit once subscribed.
    args = ("-c", "-i", "persistent")
    first = MosquittoSub(broker.port, "p/t", version=version, qos=1, extra=(*args, "-E"))
    assert first.finish()[0] == 0, first.output
    for n in range(3):
        published(mosquitto_pub(broker.port, "p/t", "-q", "1", "-m", f"q{n}", version=version))
    back = MosquittoSub(broker.port, "p/t", version=version, qos=1, count=3, extra=args)
    rc, messages = back.finish()
    assert rc == 0, back.output
    assert [m[3] for m in messages] == ["q0", "q1", "q2"]


def test_mqtt5_properties_from_mosquitto_pub_reach_mosquitto_sub(broker):
    fmt = "MSG|%t|%C|%P|%p"
    sub = MosquittoSub(broker.port, "p/t", version=5, qos=1, count=1, fmt=fmt)
    sub.wait_subscribed()
    props = ["-D", "publish", "user-property", "origin", "cli"]
    props += ["-D", "publish", "content-type", "text/plain"]
    published(mosquitto_pub(broker.port, "p/t", "-q", "1", "-m", "x", *props, version=5))
    rc, messages = sub.finish()
    assert rc == 0, sub.output
    assert messages == [["p/t", "text/plain", "origin:cli", "x"]]


@VERSIONS
def test_mosquitto_pub_to_paho(broker, version):
    sub = Paho(broker.port, "paho-sub", version)
    sub.subscribe("i/t", 2)
    published(mosquitto_pub(broker.port, "i/t", "-q", "2", "-m", "from mosquitto", version=version))
    msg = sub.get()
    assert (msg.topic, msg.payload, msg.qos) == ("i/t", b"from mosquitto", 2)


@VERSIONS
def test_paho_to_mosquitto_sub(broker, version):
    sub = MosquittoSub(broker.port, "i/t", version=version, qos=2, count=1)
    sub.wait_subscribed()
    pub = Paho(broker.port, "paho-pub", version)
    pub.publish("i/t", b"from paho", 2)
    assert sub.finish()[1] == [["i/t", "2", "0", "from paho"]]


@VERSIONS
def test_mosquitto_sub_will_is_published_when_it_is_killed(broker, version):
    watcher = Paho(broker.port, "watcher", version)
    watcher.subscribe("will/t", 1)
    will = ("--will-topic", "will/t", "--will-payload", "sub died", "--will-qos", "1")
    sub = MosquittoSub(broker.port, "x/t", version=version, extra=will)
    sub.wait_subscribed()
    sub.proc.send_signal(signal.SIGKILL)  # no DISCONNECT
    msg = watcher.get()
    assert (msg.topic, msg.payload) == ("will/t", b"sub died")


@VERSIONS
def test_mosquitto_sub_clean_exit_sends_no_will(broker, version):
    watcher = Paho(broker.port, "watcher", version)
    watcher.subscribe("will/t", 1)
    will = ("--will-topic", "will/t", "--will-payload", "sub died")
    sub = MosquittoSub(broker.port, "x/t", version=version, count=1, extra=will)
    sub.wait_subscribed()
    published(mosquitto_pub(broker.port, "x/t", "-m", "done", version=version))
    assert sub.finish()[0] == 0  # -C 1 reached: DISCONNECT, then exit
    watcher.expect_nothing(0.5)
