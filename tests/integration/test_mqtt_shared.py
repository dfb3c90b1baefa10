"""Shared subscriptions: one member per message, and no loss when a member leaves."""

from __future__ import annotations

import pytest

from robustmq._core import mqtt_codec
from tests.integration.clients import Paho, Raw


@pytest.mark.parametrize("version", [4, 5], ids=["3.1.1", "5.0"])
def test_unacknowledged_messages_of_a_leaving_member_go_to_another(broker, version):
    lazy = Raw(broker.port, version)
    lazy.connect("lazy")
    lazy.send_packet(mqtt_codec.Subscribe(1, [mqtt_codec.Subscription("$share/g/jobs/#", 1)]))
    assert lazy.recv().reason_codes == [1]
    worker = Paho(broker.port, "worker", version)
    worker.subscribe("$share/g/jobs/#", 1)
    pub = Paho(broker.port, "pub", version)
    for i in range(6):
        pub.publish(f"jobs/{i}", str(i).encode(), 1)
    got_by_lazy = []
    while len(got_by_lazy) < 3:
        got_by_lazy.append(lazy.recv().payload)  # never acknowledged
    lazy.close()
    got_by_worker = sorted(worker.get().payload for _ in range(6))
    assert got_by_worker == [str(i).encode() for i in range(6)]
    assert set(got_by_lazy) <= set(got_by_worker)
    worker.expect_nothing()
    pub.disconnect()
    worker.disconnect()


def test_a_message_goes_to_exactly_one_member(broker):
    members = [Paho(broker.port, f"m{i}", 5) for i in range(3)]
    for m in members:
        m.subscribe("$share/grp/s/+", 1)
    pub = Paho(broker.port, "pub", 5)
    for i in range(9):
        pub.publish(f"s/{i}", str(i).encode(), 1)
    counts = []
    seen = []
    for m in members:
        got = []
        while True:
            try:
                got.append(m.get(timeout=0.5).payload)
            except Exception:
                break
        counts.append(len(got))
        seen += got
    assert sorted(seen) == sorted(str(i).encode() for i in range(9))
    assert counts == [3, 3, 3]  # round robin


def _spread(broker, publishers):
    members = [Paho(broker.port, f"m{i}", 5) for i in range(3)]
    for m in members:
        m.subscribe("$share/grp/s/+", 1)
    for name in publishers:
        pub = Paho(broker.port, name, 5)
        for i in range(6):
            pub.publish(f"s/{i}", f"{name}-{i}".encode(), 1)
        pub.disconnect()
    got = []
    for m in members:
        mine = []
        while True:
            try:
                mine.append(m.get(timeout=0.5).payload.decode())
            except Exception:
                break
        got.append(mine)
    total = sorted(p for mine in got for p in mine)
    assert total == sorted(f"{n}-{i}" for n in publishers for i in range(6))  # once each
    return got


@pytest.mark.parametrize("strategy", ["sticky", "hash_clientid"])
def test_one_publisher_sticks_to_one_member(broker_factory, strategy):
    got = _spread(broker_factory(shared_subscription_strategy=strategy), ["only-pub"])
    assert sorted(len(mine) for mine in got) == [0, 0, 6]


def test_random_strategy_delivers_each_message_once(broker_factory):
    _spread(broker_factory(shared_subscription_strategy="random"), ["p1", "p2"])


def test_groups_that_come_and_go_leave_no_round_robin_state(broker):
    pub = Paho(broker.port, "pub", 5)
    for i in range(20):
        members = [Paho(broker.port, f"g{i}m{j}", 5) for j in range(2)]
        for m in members:
            m.subscribe(f"$share/g{i}/rr/{i}", 0)
        for k in range(4):
            pub.publish(f"rr/{i}", b"%d" % k, 0)
        got = sorted(p.payload for m in members for p in [m.get(), m.get()])
        assert got == [b"0", b"1", b"2", b"3"]  # round robin: two each
        for m in members:
            m.disconnect()
    assert broker.run(lambda: len(broker.broker.router._turn)) == 0
