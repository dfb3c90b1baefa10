"""The state machines of the Meta Service's Raft groups, one module per group.

``GROUPS`` maps a group's name to its Raft group id (fixed: it is on every message and in
every node's data directory) and its state machine class. The contract and the command
encoding are in ``base.py``; the Raft host that drives them is ``robustmq/meta/host.py``.
"""

from robustmq.meta.groups.base import StateMachine, encode_command
from robustmq.meta.groups.cluster import ClusterStateMachine
from robustmq.meta.groups.mqtt import MqttStateMachine
from robustmq.meta.groups.offsets import OffsetsStateMachine

GROUPS: dict[str, tuple[int, type[StateMachine]]] = {
    "cluster": (1, ClusterStateMachine),
    "mqtt": (2, MqttStateMachine),
    "offsets": (3, OffsetsStateMachine),
}

__all__ = [
    "GROUPS",
    "ClusterStateMachine",
    "MqttStateMachine",
    "OffsetsStateMachine",
    "StateMachine",
    "encode_command",
]
