"""One worker of a Kafka bench run: its share of the producers and consumers, in its own
event loop.

A worker owns the producers and consumers whose index ``i`` has ``i % workers ==
worker_index``. It walks the same phases as an MQTT worker (``channel.py``): find the
topic (Metadata; CreateTopics with ``--partitions`` when it is missing), connect, place
the consumers (each takes the partitions ``p`` with ``p % consumers == its index``,
starting at the group's committed offset, else the latest or earliest one), report ready;
on ``go`` produce until the deadline or the count and wait for the answers to every
Produce; report what was sent; on ``drain`` let the consumers fetch up to the partitions'
end offsets; commit (``--group``), close, send the ``KafkaWorkerResult``. Merging the
results is ``kafka_report.py``'s.
"""

from __future__ import annotations

import asyncio
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

from robustmq.bench.channel import Channel, Message
from robustmq.bench.histogram import Histogram
from robustmq.bench.kafka_client import (
    API_NAMES,
    API_VERSIONS,
    CREATE_TOPICS,
    EARLIEST,
    LATEST,
    LIST_OFFSETS,
    METADATA,
    OFFSET_COMMIT,
    OFFSET_FETCH,
    REQUIRED,
    Consumer,
    Counters,
    KafkaClient,
    Producer,
    check_error,
    connect,
    new_errors,
)
from robustmq.bench.kafka_config import KafkaBenchConfig
from robustmq.bench.mqtt_client import Receiver
from robustmq.bench.payload import DeliveryTracker, publisher_key
from robustmq.errors import BenchError, KafkaTopicAlreadyExists, KafkaUnknownTopicOrPartition

PROGRESS_INTERVAL = 0.5
DRAIN_IDLE = 2.0  # a drain with no new record for this long is over
STALL_TIMEOUT = 10.0  # --count: producing that makes no progress this long ends
POLL = 0.01


@dataclass
class KafkaWorkerResult:
    """What one worker measured; ``kafka_report.build`` adds these up."""

    sent: dict[int, int] = field(default_factory=dict)  # publisher key -> records sent
    acked: int = 0
    received: int = 0
    received_window: int = 0
    errors: Counters = field(default_factory=new_errors)
    latency: Histogram = field(default_factory=Histogram)
    ack_latency: Histogram = field(default_factory=Histogram)  # per Produce request
    tracker: DeliveryTracker = field(default_factory=DeliveryTracker)
    partitions: int = 0


class KafkaWorker:
    def __init__(self, cfg: KafkaBenchConfig, index: int, channel: Channel) -> None:
        self.cfg = cfg
        self.index = index
        self.channel = channel
        self.where = f"{cfg.host}:{cfg.port}"
        self.result = KafkaWorkerResult()
        self.errors = self.result.errors
        self.receiver = Receiver(
            self.result.latency, self.errors, cfg.run_id if cfg.publishers else None
        )
        self.clients: list[KafkaClient] = []
        self.producers: list[Producer] = []
        self.consumers: list[Consumer] = []
        self.fetching: list[asyncio.Task[None]] = []
        self.partitions = 0
        self.stopped = asyncio.Event()
        loop = asyncio.get_running_loop()
        self.go: asyncio.Future[float] = loop.create_future()
        self.drain: asyncio.Future[dict[int, int]] = loop.create_future()

    def _mine(self, total: int) -> range:
        return range(self.index, total, self.cfg.workers)

    def _client_id(self, role: str, index: int) -> str:
        return f"rmqb-{self.cfg.run_id:08x}-{role}{index}"

    # ------------------------------------------------------------------ run

    async def run(self) -> None:
        listener = asyncio.create_task(self._listen())
        try:
            await self._run()
            self.channel.send(("result", self.result))
        except BenchError as exc:
            self.channel.send(("error", str(exc)))
        except Exception as exc:
            # A bug: say so, with the traceback, rather than leave the coordinator waiting.
            traceback.print_exc()
            self.channel.send(("error", f"internal error in worker {self.index}: {exc!r}"))
        finally:
            listener.cancel()
            for task in self.fetching:
                task.cancel()
            for client in self.clients:
                client.close()

    async def _listen(self) -> None:
        while True:
            message: Message = await self.channel.recv()
            kind = message[0]
            if kind == "go" and not self.go.done():
                self.go.set_result(message[1])
            elif kind == "drain" and not self.drain.done():
                self.drain.set_result(message[1])
            elif kind == "stop":
                self.stopped.set()

    async def _until(self, future: asyncio.Future[Any] | None, timeout: float | None) -> None:
        """Waits for ``future`` (None: only the timeout) unless stopped first."""
        stop = asyncio.ensure_future(self.stopped.wait())
        waits: set[asyncio.Future[Any]] = {stop}
        if future is not None:
            waits.add(future)
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()

    async def _connect(self, role: str, index: int) -> KafkaClient:
        client = await connect(self.cfg, self._client_id(role, index), self.errors)
        self.clients.append(client)
        return client

    async def _run(self) -> None:
        cfg = self.cfg
        setup = await self._connect("m", self.index)
        await self._check_versions(setup)
        self.partitions = self.result.partitions = await self._find_topic(setup)
        await self._place_consumers(setup)
        for i in self._mine(cfg.publishers):
            client = await self._connect("p", i)
            self.producers.append(
                Producer(cfg, i, client, self.partitions, self.result.ack_latency)
            )
        self.channel.send(("ready",))
        await self._until(self.go, None)
        if self.stopped.is_set():
            self._finish()
            return
        deadline = self.go.result()
        self.fetching = [asyncio.create_task(c.run()) for c in self.consumers]
        progress = asyncio.create_task(self._report_progress())
        try:
            if cfg.mode == "consume":
                await self._watch(None, deadline - time.monotonic() if deadline else None)
            elif cfg.rate:
                await self._paced(deadline)
            else:
                await self._self_paced(deadline)
            if deadline:
                self.result.received_window = self.receiver.received
            await self._answered()
            sent = {publisher_key(cfg.run_id, p.index): p.sent for p in self.producers}
            self.channel.send(("published", sent))
            await self._watch(self.drain, None)
            if not deadline:
                self.result.received_window = self.receiver.received
            if self.drain.done() and cfg.mode == "produce":
                await self._drain_phase(setup)
            if cfg.group:
                await self._commit(setup)
        finally:
            progress.cancel()
        self._finish()

    def _check(self) -> None:
        """Raises what a producer or a consumer failed with."""
        for p in self.producers:
            if p.failure or p.client.failure:
                raise BenchError(p.failure or p.client.failure)
        for task in self.fetching:
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]

    async def _watch(self, future: asyncio.Future[Any] | None, timeout: float | None) -> None:
        """``_until``, raising a producer's or consumer's failure as soon as it happens."""
        end = None if timeout is None else time.monotonic() + timeout
        while not self.stopped.is_set() and not (future is not None and future.done()):
            self._check()
            left = POLL if end is None else min(POLL, end - time.monotonic())
            if left <= 0:
                return
            await self._until(future, left)
        self._check()

    async def _report_progress(self) -> None:
        while True:
            await asyncio.sleep(PROGRESS_INTERVAL)
            self.receiver.flush()
            for p in self.producers:
                p.record_latency()
            sent = sum(p.sent for p in self.producers)
            self.channel.send(("progress", sent, self.receiver.received, sum(self.errors.values())))

    # ------------------------------------------------------------------ set-up

    async def _check_versions(self, setup: KafkaClient) -> None:
        response = await setup.request(API_VERSIONS, {})
        check_error(response["error_code"], f"ApiVersions at {self.where}")
        offered = {k["api_key"]: (k["min_version"], k["max_version"]) for k in response["api_keys"]}
        for key, version in REQUIRED:
            low, high = offered.get(key, (0, -1))
            if not low <= version <= high:
                span = f"{low}-{high}" if high >= 0 else "none"
                raise BenchError(
                    f"{self.where} does not offer {API_NAMES[key]} v{version} (it offers {span})"
                )

    async def _metadata(self, setup: KafkaClient) -> dict[str, Any]:
        body = {"topics": [{"name": self.cfg.topic}], "allow_auto_topic_creation": False}
        response = await setup.request(METADATA, body)
        topic: dict[str, Any] = response["topics"][0]
        leaders = {p["leader_id"] for p in topic["partitions"]}
        if len(leaders) > 1:
            raise BenchError(
                f"{self.cfg.topic!r} has partition leaders on {len(leaders)} brokers;"
                " the bench talks to one broker (--host/--port)"
            )
        return topic

    async def _find_topic(self, setup: KafkaClient) -> int:
        """The topic's partition count; a produce run creates a missing topic."""
        cfg = self.cfg
        topic = await self._metadata(setup)
        if topic["error_code"] == KafkaUnknownTopicOrPartition.code and cfg.mode == "produce":
            body = {
                "topics": [
                    {
                        "name": cfg.topic,
                        "num_partitions": cfg.partitions or -1,  # -1: the broker's default
                        "replication_factor": -1,
                        "assignments": [],
                        "configs": [],
                    }
                ],
                "timeout_ms": int(cfg.connect_timeout * 1000),
                "validate_only": False,
            }
            created = (await setup.request(CREATE_TOPICS, body))["topics"][0]
            # Another worker may have created it first.
            if created["error_code"] != KafkaTopicAlreadyExists.code:
                what = f"CreateTopics {cfg.topic!r} at {self.where}"
                if created["error_message"]:
                    what += f" ({created['error_message']})"
                check_error(created["error_code"], what)
            deadline = time.monotonic() + cfg.connect_timeout
            topic = await self._metadata(setup)
            while not topic["partitions"] and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
                topic = await self._metadata(setup)
        check_error(topic["error_code"], f"Metadata for {cfg.topic!r} at {self.where}")
        if not topic["partitions"]:
            raise BenchError(f"{cfg.topic!r} at {self.where} has no partitions")
        return len(topic["partitions"])

    async def _place_consumers(self, setup: KafkaClient) -> None:
        cfg = self.cfg
        for i in self._mine(cfg.subscribers):
            partitions = [p for p in range(self.partitions) if p % cfg.subscribers == i]
            if not partitions:
                continue  # more consumers than partitions: this one would idle
            offsets = await self._list_offsets(
                setup, partitions, EARLIEST if cfg.offset_reset == "earliest" else LATEST
            )
            if cfg.group:
                offsets.update(await self._committed(setup, partitions))
            client = await self._connect("c", i)
            self.consumers.append(Consumer(cfg, client, offsets, self.receiver))

    async def _list_offsets(
        self, setup: KafkaClient, partitions: list[int], timestamp: int
    ) -> dict[int, int]:
        body = {
            "replica_id": -1,
            "isolation_level": 0,
            "topics": [
                {
                    "name": self.cfg.topic,
                    "partitions": [
                        {"partition_index": p, "current_leader_epoch": -1, "timestamp": timestamp}
                        for p in partitions
                    ],
                }
            ],
        }
        response = await setup.request(LIST_OFFSETS, body)
        offsets = {}
        for p in response["topics"][0]["partitions"]:
            check_error(p["error_code"], f"ListOffsets {self.cfg.topic}[{p['partition_index']}]")
            offsets[p["partition_index"]] = p["offset"]
        return offsets

    async def _committed(self, setup: KafkaClient, partitions: list[int]) -> dict[int, int]:
        body = {
            "group_id": self.cfg.group,
            "topics": [{"name": self.cfg.topic, "partition_indexes": partitions}],
        }
        response = await setup.request(OFFSET_FETCH, body)
        check_error(response["error_code"], f"OffsetFetch for group {self.cfg.group!r}")
        committed = {}
        for topic in response["topics"]:
            for p in topic["partitions"]:
                check_error(p["error_code"], f"OffsetFetch {topic['name']}[{p['partition_index']}]")
                if p["committed_offset"] >= 0:
                    committed[p["partition_index"]] = p["committed_offset"]
        return committed

    async def _commit(self, setup: KafkaClient) -> None:
        """Commits where each consumer got to, as a consumer outside a group does
        (generation -1), so the next run with the same --group resumes there."""
        offsets = {p: o for c in self.consumers for p, o in c.offsets.items()}
        if not offsets:
            return
        body = {
            "group_id": self.cfg.group,
            "generation_id": -1,
            "member_id": "",
            "topics": [
                {
                    "name": self.cfg.topic,
                    "partitions": [
                        {"partition_index": p, "committed_offset": o, "committed_metadata": None}
                        for p, o in sorted(offsets.items())
                    ],
                }
            ],
        }
        response = await setup.request(OFFSET_COMMIT, body)
        for topic in response["topics"]:
            for p in topic["partitions"]:
                check_error(
                    p["error_code"], f"OffsetCommit {topic['name']}[{p['partition_index']}]"
                )

    # ------------------------------------------------------------------ producing

    async def _self_paced(self, deadline: float) -> None:
        cfg = self.cfg
        for p in self.producers:
            p.start(cfg.count)
        try:
            if not cfg.count:
                await self._watch(None, deadline - time.monotonic() if deadline else None)
                return
            progress, since = -1, time.monotonic()
            while not self.stopped.is_set() and not all(p.done for p in self.producers):
                await self._watch(None, POLL)
                now, sent = time.monotonic(), sum(p.sent for p in self.producers)
                if sent != progress:
                    progress, since = sent, now
                elif now - since >= STALL_TIMEOUT:
                    break  # the broker stopped taking records; report what was sent
        finally:
            for p in self.producers:
                p.stop()

    async def _paced(self, deadline: float) -> None:
        """--rate: one loop makes each producer's records due; they go out in batches when
        a batch is full or has waited --linger-ms, as a Kafka producer's do."""
        cfg = self.cfg
        rate = cfg.rate
        start = time.monotonic()
        for p in self.producers:
            p.start_paced()
        active = list(self.producers)
        while active and not self.stopped.is_set():
            self._check()
            now = time.monotonic()
            if deadline and now >= deadline:
                break
            now_ns = time.time_ns()
            wake = deadline or float("inf")
            for p in active:
                due = int(rate * (now - start)) + 1 - p.made
                if cfg.count:
                    due = min(due, cfg.count - p.made)
                if due > 0:
                    p.add(due, now_ns)
                p.pump()
                wake = min(wake, start + p.made / rate, p.linger_deadline())
            if cfg.count:
                active = [p for p in active if p.made < cfg.count]
            await self._until(None, max(wake - time.monotonic(), 0.0))
        for p in self.producers:
            p.stop()

    async def _answered(self) -> None:
        """Waits for the answers to every Produce sent (at most --drain seconds), so the
        consumers' drain knows where the partitions end. After Ctrl-C too: the answers
        usually come within milliseconds, and a second Ctrl-C aborts."""
        end = time.monotonic() + self.cfg.drain
        while not all(p.done for p in self.producers) and time.monotonic() < end:
            self._check()
            for p in self.producers:
                p.flush()
            await asyncio.sleep(POLL)

    async def _drain_phase(self, setup: KafkaClient) -> None:
        """Until each consumer reached its partitions' end offsets, DRAIN_IDLE passes
        without a new record, or --drain seconds are over."""
        if not self.consumers:
            return
        partitions = sorted(p for c in self.consumers for p in c.offsets)
        ends = await self._list_offsets(setup, partitions, LATEST)
        start = last_change = time.monotonic()
        last = -1
        while not self.stopped.is_set():
            self._check()
            if all(c.offsets[p] >= ends[p] for c in self.consumers for p in c.offsets):
                return
            now = time.monotonic()
            if self.receiver.received != last:
                last, last_change = self.receiver.received, now
            if now - last_change >= DRAIN_IDLE or now - start >= self.cfg.drain:
                return
            await self._until(None, POLL)

    def _finish(self) -> None:
        result = self.result
        self.receiver.flush()
        for p in self.producers:
            p.record_latency()
        result.tracker = self.receiver.tracker
        result.sent = {publisher_key(self.cfg.run_id, p.index): p.sent for p in self.producers}
        result.acked = sum(p.acked for p in self.producers)
        result.received = self.receiver.received


async def run_worker(cfg: KafkaBenchConfig, index: int, channel: Channel) -> None:
    await KafkaWorker(cfg, index, channel).run()
