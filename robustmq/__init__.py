"""RobustMQ: an MQTT 3.1/3.1.1/5.0 and Kafka broker with a Multi-Raft meta service.

The product is its command-line tools, config file, HTTP API and wire protocols; the Python
packages behind them are internal.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
