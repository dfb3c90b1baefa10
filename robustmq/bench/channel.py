"""How the coordinator and its workers talk: one message channel per worker.

A message is a tuple whose first item names it. Worker to coordinator: ``("ready",)``,
``("progress", sent, received, errors)``, ``("published", {publisher_key: sent})``,
``("result", WorkerResult)``, ``("error", text)``. Coordinator to worker: ``("go",
deadline)`` (a ``time.monotonic()`` value, or 0 for none), ``("drain", {publisher_key:
sent})`` and ``("stop",)``. ``LocalChannel`` joins a worker running in the coordinator's own
event loop (``--workers 1``); ``ProcessChannel`` joins a worker process through
multiprocessing queues. What the messages mean is ``runner.py``'s and ``mqtt_worker.py``'s.
"""

from __future__ import annotations

import asyncio
import queue
from typing import Any, Protocol

Message = tuple[Any, ...]


class Channel(Protocol):
    """The worker's end of its channel."""

    def send(self, message: Message) -> None: ...

    async def recv(self) -> Message: ...


class LocalChannel:
    """Both ends in one event loop."""

    def __init__(self, index: int, to_coordinator: asyncio.Queue[tuple[int, Message]]) -> None:
        self.index = index
        self.to_coordinator = to_coordinator
        self.to_worker: asyncio.Queue[Message] = asyncio.Queue()

    def send(self, message: Message) -> None:
        self.to_coordinator.put_nowait((self.index, message))

    async def recv(self) -> Message:
        return await self.to_worker.get()


class ProcessChannel:
    """The worker process's end: multiprocessing queues, read from a helper thread so the
    worker's event loop never blocks."""

    def __init__(self, index: int, to_coordinator: Any, to_worker: Any) -> None:
        self.index = index
        self.to_coordinator = to_coordinator
        self.to_worker = to_worker

    def send(self, message: Message) -> None:
        self.to_coordinator.put((self.index, message))

    async def recv(self) -> Message:
        loop = asyncio.get_running_loop()
        while True:
            try:
                message: Message = await loop.run_in_executor(None, self.to_worker.get, True, 0.5)
                return message
            except queue.Empty:
                continue
