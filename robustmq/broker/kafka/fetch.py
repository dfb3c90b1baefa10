"""Fetch: stored batch bytes returned as they are, with long polling.

A fetch that finds fewer than ``min_bytes`` waits up to ``max_wait_ms`` and is answered
as soon as a produce appends to one of its partitions (``DataArrivals``). ``max_bytes``
and each partition's ``partition_max_bytes`` bound the answer, except that the first
batch found is always returned whole even when it is larger (KIP-74), and the first batch
of a partition may start before the fetch offset, as in Kafka; clients skip the records
before it. There are no transactions yet, so the last stable offset is the high
watermark and read_committed sees what read_uncommitted sees. Fetch sessions (KIP-227)
are not kept: every answer has session id 0, which tells clients to send full requests.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from robustmq._core.kafka_codec import RequestHeader
from robustmq.errors import KafkaError, KafkaOffsetOutOfRange, StorageError, kafka_error_code

if TYPE_CHECKING:
    from robustmq.broker.kafka.server import KafkaBroker, KafkaConnection


class DataArrivals:
    """Wakes fetches waiting on a shard when a produce appends to it."""

    def __init__(self) -> None:
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}

    def notify(self, shard: str) -> None:
        for fut in self._waiters.pop(shard, ()):
            if not fut.done():
                fut.set_result(None)

    async def wait(self, shards: list[str], timeout: float) -> None:
        """Until one of ``shards`` is appended to, or ``timeout`` seconds."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        for shard in shards:
            self._waiters.setdefault(shard, set()).add(fut)
        try:
            await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            pass
        finally:
            for shard in shards:
                waiters = self._waiters.get(shard)
                if waiters is not None:
                    waiters.discard(fut)
                    if not waiters:
                        del self._waiters[shard]


async def handle_fetch(
    broker: KafkaBroker, conn: KafkaConnection, header: RequestHeader, req: dict[str, Any]
) -> dict[str, Any]:
    deadline = time.monotonic() + max(req["max_wait_ms"], 0) / 1000
    while True:
        responses, size, errors, shards = await _read(broker, req)
        remaining = deadline - time.monotonic()
        if size >= req["min_bytes"] or errors or remaining <= 0 or not shards:
            break
        await broker.arrivals.wait(shards, remaining)
    broker.stats["bytes_out"] += size
    return {"error_code": 0, "session_id": 0, "responses": responses}


async def _read(
    broker: KafkaBroker, req: dict[str, Any]
) -> tuple[list[dict[str, Any]], int, bool, list[str]]:
    budget = req.get("max_bytes", 0x7FFFFFFF)
    read_committed = req.get("isolation_level", 0) == 1
    size = 0
    errors = False
    shards = []
    responses = []
    for topic in req["topics"]:
        partitions = []
        for p in topic["partitions"]:
            out: dict[str, Any] = {
                "partition_index": p["partition"],
                "error_code": 0,
                "high_watermark": -1,
                "last_stable_offset": -1,
                "log_start_offset": -1,
                "aborted_transactions": [] if read_committed else None,
                "records": b"",
            }
            try:
                shard = broker.topics.shard(topic["topic"], p["partition"])
                shards.append(shard)
                latest = await broker.engine.latest_offset(shard)
                earliest = await broker.engine.earliest_offset(shard)
                out.update(high_watermark=latest, last_stable_offset=latest)
                out["log_start_offset"] = earliest
                offset = p["fetch_offset"]
                if offset < earliest or offset > latest:
                    raise KafkaOffsetOutOfRange(
                        f"offset {offset} is outside [{earliest}, {latest}]"
                    )
                if offset < latest and (budget > 0 or size == 0):
                    limit = max(1, min(p["partition_max_bytes"], budget))
                    batches = await broker.engine.read_batches(shard, offset, limit)
                    data = b"".join(b.data for b in batches)
                    if size and len(data) > budget:
                        data = b""  # only the answer's first batch may exceed max_bytes
                    out["records"] = data
                    size += len(data)
                    budget -= len(data)
            except (KafkaError, StorageError) as exc:
                out["error_code"] = kafka_error_code(exc)
                errors = True
            partitions.append(out)
        responses.append({"topic": topic["topic"], "partitions": partitions})
    return responses, size, errors, shards
