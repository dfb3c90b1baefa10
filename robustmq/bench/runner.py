"""Runs a bench: starts the workers, walks them through the phases, prints progress.

The coordinator runs in the calling process on a uvloop event loop. With one worker the
worker runs in that same loop; with ``--workers N`` each worker is a spawned process with
its own loop, and a helper thread moves their messages into the coordinator's loop. The
coordinator says ``go`` once every worker is connected and subscribed, ``drain`` once every
worker has stopped publishing (with the totals sent, so subscribers know what to expect),
and ``stop`` on Ctrl-C or when a worker fails. It aggregates the workers' progress into one
line on stderr, once a second, when stderr is a terminal. The protocol-specific work is the
worker entry point's (``mqtt_worker.run_worker``); a Kafka bench plugs in the same way.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TextIO

from robustmq.bench.channel import Channel, LocalChannel, Message, ProcessChannel
from robustmq.errors import BenchError

try:
    import uvloop

    _run: Callable[[Coroutine[Any, Any, Any]], Any] = uvloop.run
except ImportError:  # uvloop does not exist on Windows
    _run = asyncio.run

WorkerEntry = Callable[[Any, int, Channel], Coroutine[Any, Any, None]]


@dataclass
class Outcome:
    """What the coordinator collected: the workers' results and the measurement window."""

    results: list[Any] = field(default_factory=list)
    window_s: float = 0.0
    interrupted: bool = False


def run(cfg: Any, entry: WorkerEntry, progress: TextIO | None) -> Outcome:
    """Runs ``cfg`` (any config with ``mode``, ``workers`` and ``duration``) to the end."""
    outcome: Outcome = _run(_Coordinator(cfg, entry, progress).run())
    return outcome


def _worker_process(cfg: Any, entry: WorkerEntry, index: int, up: Any, down: Any) -> None:
    # Ctrl-C reaches the whole process group; the coordinator alone decides to stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _run(entry(cfg, index, ProcessChannel(index, up, down)))


class _Coordinator:
    def __init__(self, cfg: Any, entry: WorkerEntry, progress: TextIO | None) -> None:
        self.cfg = cfg
        self.entry = entry
        self.progress = progress
        self.n = cfg.workers
        self.outcome = Outcome()
        self.snapshots: dict[int, tuple[int, int, int]] = {}
        self.senders: list[Callable[[Message], None]] = []
        self.processes: list[Any] = []
        self.failure = ""

    def broadcast(self, message: Message) -> None:
        for send in self.senders:
            send(message)

    def interrupt(self) -> None:
        """First Ctrl-C: stop and report. Second: abort at once (a handshake may be stuck
        until --connect-timeout)."""
        if self.outcome.interrupted:
            for process in self.processes:
                process.terminate()
            sys.stderr.write("\nrobustmq-bench: aborted\n")
            os._exit(130)
        self.outcome.interrupted = True
        self.broadcast(("stop",))

    async def run(self) -> Outcome:
        loop = asyncio.get_running_loop()
        inbox: asyncio.Queue[tuple[int, Message]] = asyncio.Queue()
        local: asyncio.Task[None] | None = None
        finished: set[int] = set()
        if self.n == 1:
            channel = LocalChannel(0, inbox)
            self.senders = [channel.to_worker.put_nowait]
            local = asyncio.create_task(self.entry(self.cfg, 0, channel))
        else:
            self.processes = self._spawn(loop, inbox, finished)
        loop.add_signal_handler(signal.SIGINT, self.interrupt)
        ticker = asyncio.create_task(self._print_progress()) if self.progress else None
        try:
            await self._walk(inbox, finished)
        finally:
            loop.remove_signal_handler(signal.SIGINT)
            if ticker is not None:
                ticker.cancel()
                assert self.progress is not None
                self.progress.write("\n")
            if local is not None:
                # It has sent its result or error and is closing its connections.
                await asyncio.wait([local], timeout=5)
                local.cancel()
            for process in self.processes:
                process.join(5)
                if process.is_alive():
                    process.terminate()
        if self.failure:
            raise BenchError(self.failure)
        return self.outcome

    def _spawn(
        self,
        loop: asyncio.AbstractEventLoop,
        inbox: asyncio.Queue[tuple[int, Message]],
        finished: set[int],
    ) -> list[Any]:
        context = multiprocessing.get_context("spawn")
        up = context.Queue()
        downs = [context.Queue() for _ in range(self.n)]
        self.senders = [d.put for d in downs]
        processes = [
            context.Process(
                target=_worker_process,
                args=(self.cfg, self.entry, i, up, downs[i]),
                name=f"robustmq-bench-worker-{i}",
                daemon=True,
            )
            for i in range(self.n)
        ]
        for process in processes:
            process.start()

        def pump() -> None:
            # Results can be large (latency buckets, sequence bitmaps); they are unpickled
            # here, off the event loop.
            while len(finished) < self.n:
                try:
                    item = up.get(timeout=0.5)
                except queue.Empty:
                    for i, process in enumerate(processes):
                        if i not in finished and not process.is_alive():
                            finished.add(i)
                            died = f"worker {i} exited with code {process.exitcode}"
                            loop.call_soon_threadsafe(inbox.put_nowait, (i, ("error", died)))
                    continue
                if item[1][0] in ("result", "error"):
                    finished.add(item[0])
                loop.call_soon_threadsafe(inbox.put_nowait, item)

        threading.Thread(target=pump, name="robustmq-bench-pump", daemon=True).start()
        return processes

    async def _walk(self, inbox: asyncio.Queue[tuple[int, Message]], finished: set[int]) -> None:
        ready: set[int] = set()
        published: dict[int, dict[int, int]] = {}
        done: set[int] = set()
        results: dict[int, Any] = {}
        went = 0.0
        deadline = 0.0
        while len(done) < self.n:
            index, message = await inbox.get()
            kind = message[0]
            if kind == "ready":
                ready.add(index)
                if len(ready) == self.n and not self.outcome.interrupted and not self.failure:
                    duration = self.cfg.duration
                    went = time.monotonic()
                    deadline = went + duration if duration else 0.0
                    self.broadcast(("go", deadline))
            elif kind == "progress":
                self.snapshots[index] = message[1:]
            elif kind == "published":
                published[index] = message[1]
                if len(published) == self.n:
                    ended = time.monotonic()
                    if deadline and not self.outcome.interrupted:
                        ended = min(ended, deadline)
                    self.outcome.window_s = ended - went
                    sent: dict[int, int] = {}
                    for part in published.values():
                        sent.update(part)
                    self.broadcast(("drain", sent))
            elif kind == "result":
                done.add(index)
                results[index] = message[1]
            elif kind == "error":
                done.add(index)
                finished.add(index)
                if not self.failure:
                    self.failure = message[1]
                    self.broadcast(("stop",))
        if went and not self.outcome.window_s:
            self.outcome.window_s = time.monotonic() - went
        self.outcome.results = [results[i] for i in sorted(results)]

    async def _print_progress(self) -> None:
        assert self.progress is not None
        start = time.monotonic()
        last = (0, 0)
        while True:
            await asyncio.sleep(1.0)
            sent = sum(s[0] for s in self.snapshots.values())
            received = sum(s[1] for s in self.snapshots.values())
            errors = sum(s[2] for s in self.snapshots.values())
            elapsed = time.monotonic() - start
            if self.cfg.mode == "conn":
                line = f"connected {sent:>9,} ({sent - last[0]:>7,}/s)"
            else:
                line = f"sent {sent - last[0]:>10,}/s  recv {received - last[1]:>10,}/s"
            self.progress.write(f"\r{elapsed:6.1f} s  {line}  errors {errors}   ")
            self.progress.flush()
            last = (sent, received)
