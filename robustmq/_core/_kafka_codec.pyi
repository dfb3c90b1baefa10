# The compiled twin has exactly the API of the pure-Python reference.
from robustmq._core.kafka_codec import *  # noqa: F403
from robustmq._core.kafka_codec import __all__ as __all__
