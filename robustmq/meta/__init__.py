"""The Meta Service: durable cluster metadata replicated by Raft.

``robustmq.meta.raft`` holds the Raft algorithm (a pure state machine) and its durable
log. Groups, their state machines, the gRPC transport and the service come later and are
not here yet.
"""
