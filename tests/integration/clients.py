"""Test clients: a blocking wrapper over paho-mqtt, and a raw-socket packet client.

``Paho`` drives the real paho-mqtt library (3.1, 3.1.1 or 5.0) and turns its callbacks into
blocking calls with timeouts, so a test reads as a script. ``Raw`` sends exact bytes and
decodes what comes back with the pure-Python codec, for edge cases a library will not send.
``Bystander`` is a client that proves the broker still serves others while one misbehaves;
``MosquittoSub`` and ``mosquitto_pub`` run the Mosquitto command-line clients.
"""

from __future__ import annotations

import collections
import queue
import socket
import subprocess
import threading
import time
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from robustmq._core import mqtt_codec

TIMEOUT = 5.0
VERSIONS = {3: paho.MQTTv31, 4: paho.MQTTv311, 5: paho.MQTTv5}
# Every client and subprocess a test starts, so stop_clients() can end them before the
# broker stops (a paho loop left running would reconnect to whatever takes the port next).
LIVE: list[Any] = []


def props(packet: str, **values: Any) -> Properties:
    """paho Properties for a packet type name, e.g. props("PUBLISH", MessageExpiryInterval=5)."""
    p = Properties(getattr(PacketTypes, packet))
    for name, value in values.items():
        setattr(p, name, value)
    return p


class Paho:
    def __init__(
        self,
        port: int,
        client_id: str = "",
        version: int = 5,
        clean: bool = True,
        keepalive: int = 60,
        will: tuple[str, bytes, int, bool] | None = None,
        will_props: Properties | None = None,
        connect_props: Properties | None = None,
        username: str | None = None,
        password: str | None = None,
        connect: bool = True,
    ) -> None:
        LIVE.append(self)
        self.port = port
        self.version = version
        kwargs: dict[str, Any] = {"client_id": client_id, "protocol": VERSIONS[version]}
        if version != 5:
            kwargs["clean_session"] = clean
        self.clean = clean
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, **kwargs)
        self.client.enable_logger()
        self.messages: queue.Queue[paho.MQTTMessage] = queue.Queue()
        self.connack: queue.Queue[tuple[Any, Any, Any]] = queue.Queue()
        self.disconnects: queue.Queue[Any] = queue.Queue()
        self.acks: dict[int, threading.Event] = {}
        self.subacks: queue.Queue[tuple[int, list[Any]]] = queue.Queue()
        self.unsubacks: queue.Queue[tuple[int, Any]] = queue.Queue()
        self.keepalive = keepalive
        self.connect_props = connect_props
        c = self.client
        c.on_connect = lambda cl, ud, flags, rc, pr: self.connack.put((flags, rc, pr))
        c.on_message = lambda cl, ud, msg: self.messages.put(msg)
        c.on_subscribe = lambda cl, ud, mid, rcs, pr: self.subacks.put((mid, rcs))
        c.on_unsubscribe = lambda cl, ud, mid, rcs, pr: self.unsubacks.put((mid, rcs))
        c.on_disconnect = lambda cl, ud, flags, rc, pr: self.disconnects.put(rc)
        if will is not None:
            c.will_set(*will, properties=will_props)
        if username is not None:
            c.username_pw_set(username, password)
        if connect:
            self.connect()

    def connect(self) -> tuple[Any, Any, Any]:
        kwargs: dict[str, Any] = {"keepalive": self.keepalive}
        if self.version == 5:
            kwargs["clean_start"] = self.clean
            kwargs["properties"] = self.connect_props
        self.client.connect("127.0.0.1", self.port, **kwargs)
        self.client.loop_start()
        flags, rc, pr = self.connack.get(timeout=TIMEOUT)
        self.session_present = flags.session_present
        self.reason_code = rc
        self.connack_props = pr
        return flags, rc, pr

    def subscribe(
        self,
        topic: str,
        qos: int = 0,
        no_local: bool = False,
        retain_as_published: bool = False,
        retain_handling: int = 0,
        properties: Properties | None = None,
    ) -> list[Any]:
        if self.version == 5:
            options = SubscribeOptions(qos, no_local, retain_as_published, retain_handling)
            self.client.subscribe(topic, options=options, properties=properties)
        else:
            self.client.subscribe(topic, qos)
        _, codes = self.subacks.get(timeout=TIMEOUT)
        return codes

    def unsubscribe(self, topic: str) -> Any:
        self.client.unsubscribe(topic)
        return self.unsubacks.get(timeout=TIMEOUT)[1]

    def publish(
        self,
        topic: str,
        payload: bytes | str = b"",
        qos: int = 0,
        retain: bool = False,
        properties: Properties | None = None,
        wait: bool = True,
    ) -> paho.MQTTMessageInfo:
        info = self.client.publish(topic, payload, qos, retain, properties=properties)
        if wait:
            info.wait_for_publish(TIMEOUT)
            assert info.is_published(), f"publish to {topic!r} not acknowledged"
        return info

    def get(self, timeout: float = TIMEOUT) -> paho.MQTTMessage:
        return self.messages.get(timeout=timeout)

    def expect_nothing(self, wait: float = 0.3) -> None:
        try:
            msg = self.messages.get(timeout=wait)
        except queue.Empty:
            return
        raise AssertionError(f"unexpected message on {msg.topic!r}: {msg.payload!r}")

    def disconnect(self, properties: Properties | None = None, reason_code: int = 0) -> None:
        if self.version == 5:
            self.client.disconnect(
                paho.ReasonCode(PacketTypes.DISCONNECT, identifier=reason_code), properties
            )
        else:
            self.client.disconnect()
        self.disconnects.get(timeout=TIMEOUT)
        self.client.loop_stop()

    def drop(self) -> None:
        """Closes the socket without DISCONNECT: an abnormal disconnect."""
        self.client.loop_stop()
        sock = self.client.socket()
        if sock is not None:
            sock.close()


class Raw:
    """A raw TCP MQTT client: exact bytes out, decoded packets in."""

    def __init__(self, port: int, version: int = 4) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        LIVE.append(self)
        self.decoder = mqtt_codec.Decoder(version)
        self.buffer = b""
        self.pending: collections.deque[Any] = collections.deque()
        self.version = version
        self.connack: Any = None

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_packet(self, packet: Any) -> None:
        self.send(mqtt_codec.encode(packet, self.version))

    def connect(self, client_id: str = "raw", **kwargs: Any) -> Any:
        kwargs.setdefault("protocol_version", self.version)
        self.send_packet(mqtt_codec.Connect(client_id, **kwargs))
        return self.recv()

    def recv(self, timeout: float = TIMEOUT) -> Any:
        """The next packet; raises TimeoutError if none comes, EOFError on close."""
        deadline = time.monotonic() + timeout
        while True:
            packets, consumed = self.decoder.decode(self.buffer)
            self.buffer = self.buffer[consumed:]
            self.pending.extend(packets)
            if self.pending:
                return self.pending.popleft()
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no packet from the broker")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                raise TimeoutError("no packet from the broker") from None
            if not data:
                raise EOFError("the broker closed the connection")
            self.buffer += data

    def closed(self, timeout: float = TIMEOUT) -> bool:
        """True once the broker has closed the socket (after any remaining packets)."""
        try:
            while True:
                self.recv(timeout)
        except EOFError:
            return True
        except (TimeoutError, ConnectionResetError):
            return False

    def close(self) -> None:
        self.sock.close()

    # -- added for the integration suite

    def expect(self, kind: type, timeout: float = TIMEOUT) -> Any:
        """The next packet, which must be a ``kind`` (e.g. mqtt_codec.Puback)."""
        packet = self.recv(timeout)
        assert isinstance(packet, kind), f"expected {kind.__name__}, got {packet!r}"
        return packet

    def packets_until_closed(self, timeout: float = TIMEOUT) -> list[Any]:
        """Every packet the broker sends until it closes the socket (EOF or reset).

        Raises TimeoutError if the connection is still open after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        packets: list[Any] = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"the broker kept the connection open; got {packets!r}")
            try:
                packets.append(self.recv(left))
            except (EOFError, ConnectionResetError, BrokenPipeError):
                return packets
            except TimeoutError:
                raise TimeoutError(
                    f"the broker kept the connection open; got {packets!r}"
                ) from None

    def quiet(self, wait: float = 0.3) -> None:
        """Asserts the broker sends nothing for ``wait`` seconds and keeps the socket open."""
        try:
            packet = self.recv(wait)
        except TimeoutError:
            return
        raise AssertionError(f"unexpected packet {packet!r}")

    def subscribe(
        self,
        *filters: str,
        qos: int = 0,
        packet_id: int = 1,
        properties: dict[str, Any] | None = None,
        **options: Any,
    ) -> Any:
        """SUBSCRIBE to ``filters`` with the same options; returns the SUBACK."""
        subs = [mqtt_codec.Subscription(f, qos, **options) for f in filters]
        self.send_packet(mqtt_codec.Subscribe(packet_id, subs, properties))
        suback = self.expect(mqtt_codec.Suback)
        assert suback.packet_id == packet_id, suback
        return suback

    def publish(
        self,
        topic: str,
        payload: bytes = b"",
        qos: int = 0,
        packet_id: int = 0,
        retain: bool = False,
        dup: bool = False,
        properties: dict[str, Any] | None = None,
    ) -> None:
        """Sends a PUBLISH; QoS 1/2 without a packet id get id 1."""
        if qos and not packet_id:
            packet_id = 1
        self.send_packet(
            mqtt_codec.Publish(topic, payload, qos, retain, dup, packet_id, properties)
        )


# ---------------------------------------------------------------------------- helpers
# Added for the integration suite: reason codes as ints, Raw conveniences, a bystander
# client, mosquitto_sub/mosquitto_pub as subprocesses, and stop_clients() for teardown.


def code(value: Any) -> int:
    """A reason code or return code as an int, from paho's ReasonCode or a plain int."""
    return int(getattr(value, "value", value))


def raw_connect(port: int, client_id: str = "raw", version: int = 5, **kwargs: Any) -> Raw:
    """A Raw client that sent CONNECT and got a CONNACK with reason code 0."""
    raw = Raw(port, version)
    connack = raw.connect(client_id, **kwargs)
    assert isinstance(connack, mqtt_codec.Connack), connack
    assert connack.reason_code == 0, connack
    raw.connack = connack
    return raw


class Bystander:
    """A client connected next to a misbehaving one, to show the broker still serves others."""

    def __init__(self, port: int, version: int = 4, name: str = "bystander") -> None:
        self.topic = f"{name}/check"
        self.client = Paho(port, name, version)
        self.client.subscribe(self.topic, 1)
        self.count = 0

    def check(self) -> None:
        self.count += 1
        payload = f"still serving {self.count}".encode()
        self.client.publish(self.topic, payload, 1)
        msg = self.client.get()
        assert (msg.topic, msg.payload) == (self.topic, payload)


def receive_all(client: Paho, quiet: float = 0.3) -> list[paho.MQTTMessage]:
    """Every message ``client`` receives until it has been quiet for ``quiet`` seconds."""
    got = []
    while True:
        try:
            got.append(client.get(timeout=quiet))
        except queue.Empty:
            return got


def wait_until(predicate: Any, timeout: float = TIMEOUT, interval: float = 0.02) -> bool:
    """Polls ``predicate`` until it is true or ``timeout`` passes; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return bool(value)
        time.sleep(interval)


# ---------------------------------------------------------------------------- mosquitto

MOSQUITTO_VERSIONS = {4: "mqttv311", 5: "mqttv5"}
# mosquitto_sub -F: one line per message, fields split by "|" (payload last).
MOSQUITTO_FORMAT = "MSG|%t|%q|%r|%p"


class MosquittoSub:
    """mosquitto_sub as a subprocess (with -d, so the test can wait for its SUBACK).

    Lines starting with ``MSG|`` are messages printed with ``-F`` (see ``fmt``); the other
    lines are its debug output. ``-W`` bounds its run time so nothing hangs.
    """

    def __init__(
        self,
        port: int,
        *topics: str,
        version: int = 4,
        qos: int = 0,
        count: int | None = None,
        wait: int = 10,
        fmt: str = MOSQUITTO_FORMAT,
        extra: tuple[str, ...] = (),
    ) -> None:
        # stdbuf -oL: line-buffered stdout through the pipe, so "received SUBACK" is seen
        # while mosquitto_sub runs, not when it exits.
        args = ["stdbuf", "-oL", "mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-d"]
        args += ["-V", MOSQUITTO_VERSIONS[version], "-q", str(qos), "-W", str(wait), "-F", fmt]
        for topic in topics:
            args += ["-t", topic]
        if count is not None:
            args += ["-C", str(count)]
        args += list(extra)
        self.proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        LIVE.append(self)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.output: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.wants_suback = bool(topics)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def _next_line(self, timeout: float) -> str | None:
        line = self.lines.get(timeout=timeout)
        if line is not None:
            self.output.append(line)
        return line

    def wait_subscribed(self, timeout: float = TIMEOUT) -> None:
        """Blocks until mosquitto_sub printed that its SUBACK arrived."""
        deadline = time.monotonic() + timeout
        while True:
            line = self._next_line(max(0.01, deadline - time.monotonic()))
            if line is None:
                raise AssertionError(f"mosquitto_sub exited early: {self.output}")
            if "received SUBACK" in line:
                return

    def finish(self, timeout: float = 15.0) -> tuple[int, list[list[str]]]:
        """Waits for the process to exit; returns (exit code, messages split on "|")."""
        self.proc.wait(timeout)
        self._reader.join(timeout)
        while True:
            try:
                line = self._next_line(0.01)
            except queue.Empty:
                break
            if line is None:
                break
        messages = [line.split("|", 4)[1:] for line in self.output if line.startswith("MSG|")]
        return self.proc.returncode, messages

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def mosquitto_pub(
    port: int, topic: str, *args: str, version: int = 4, timeout: float = 15.0
) -> Any:
    """Runs mosquitto_pub to completion; returns the CompletedProcess (output captured)."""
    import subprocess

    cmd = ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-V", MOSQUITTO_VERSIONS[version]]
    cmd += ["-t", topic, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def stop_clients() -> None:
    """Ends every Paho loop, Raw socket and mosquitto_sub a test started (teardown)."""
    while LIVE:
        item = LIVE.pop()
        try:
            if isinstance(item, Paho):
                if item.client.is_connected():
                    item.client.disconnect()
                item.client.loop_stop()
            elif isinstance(item, Raw):
                item.close()
            else:
                item.kill()
        except Exception:  # teardown of a client that is already gone
            pass
