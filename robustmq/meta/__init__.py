"""The Meta Service: durable cluster metadata replicated by Raft.

``raft`` holds the Raft algorithm (a pure state machine) and its durable log; ``groups``
the state machines; ``host`` runs every group of a node on one asyncio loop; ``service``
serves it over gRPC (Raft transport and the MetaService); ``client`` is how brokers reach
it. Nothing here knows the broker.
"""
