"""The Kafka broker: one listener speaking the Kafka wire protocol on one node.

``server.py`` owns the listener and the connections and dispatches each request to the
handler module of its concern (``metadata``, ``produce``, ``fetch``, ``offsets``,
``coordinator``, ``admin``); ``registry.py`` keeps topics as partition shards of the
node's storage engine. The codec is ``robustmq._core.kafka``: the compiled twin of
``kafka_codec.py`` unless ROBUSTMQ_NO_EXTENSIONS=1.
"""
