"""Hot paths, each as a readable pure-Python module and a compiled twin with the same API.

``robustmq/_core/<name>.py`` is the reference; ``robustmq/_core/_<name>.pyx`` is its
compiled twin. The backend is chosen once, here, at import: the compiled one unless
``ROBUSTMQ_NO_EXTENSIONS=1`` is set or it was not built (then a warning is logged).
Callers use the selected modules (``from robustmq._core import mqtt``) and never mix
backends within one connection; tests import both twins directly and compare them.
No selected name is the name of a twin's module: importing ``robustmq._core.segment_io``
(a test does, for the pure twin) sets the package attribute ``segment_io`` to it, and a
later ``from robustmq._core import segment_io`` would get the pure twin in place of the
selected one. Hence ``segments``, ``lane`` and ``storm``.
"""

from __future__ import annotations

import importlib
import logging
import os
from types import ModuleType

NO_EXTENSIONS = os.environ.get("ROBUSTMQ_NO_EXTENSIONS", "") not in ("", "0")

_log = logging.getLogger(__name__)


def load(name: str) -> ModuleType:
    """The selected backend of the hot path ``name`` (compiled twin or pure Python)."""
    if not NO_EXTENSIONS:
        try:
            return importlib.import_module(f"{__name__}._{name}")
        except ImportError as exc:
            _log.warning(
                "compiled %s is not available (%s); using the pure-Python twin. "
                "Reinstall with a C compiler (pip install -e .) for full speed",
                name,
                exc,
            )
    return importlib.import_module(f"{__name__}.{name}")


def compiled(module: ModuleType) -> bool:
    """Whether ``module`` is a compiled twin."""
    return module.__name__.rsplit(".", 1)[-1].startswith("_")


mqtt = load("mqtt_codec")
trie = load("topic_trie")
segments = load("segment_io")
kafka = load("kafka_codec")  # after segments: the Kafka codec uses its CRC32C
lane = load("lanes")
storm = load("conn_storm")  # robustmq-bench's connection storms

__all__ = [
    "NO_EXTENSIONS", "compiled", "kafka", "lane", "load", "mqtt", "segments", "storm", "trie",
]  # fmt: skip
