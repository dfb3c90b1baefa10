"""Group commit for the segment engine: one background task makes writes durable.

Appends write to the page cache on the event loop (a ``pwrite`` of a batch costs less
than a hop to a thread) and mark their file dirty. The syncer then, per fsync policy:

* ``always``: appends await :meth:`Syncer.durable`; each round fsyncs every dirty file in
  one executor call and wakes all appends that were waiting when it started, so N
  concurrent appends share one fsync (group commit) and the loop never blocks on disk.
* ``interval``: a round every ``fsync_interval_ms``; appends do not wait.
* ``never``: rounds only write pending index files; data is fsynced on flush and close.

Whole-file replacements (sealed segment indexes) and directory fsyncs after a file is
created ride the same rounds. Code that closes file descriptors takes ``lock`` first, so
no round fsyncs a descriptor that was closed (and maybe reused) under it.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Protocol

from robustmq.errors import StorageError
from robustmq.storage.segment.format import fsync_dir, write_file_atomic

_log = logging.getLogger(__name__)


class SyncTarget(Protocol):
    fd: int
    path: str


class Syncer:
    def __init__(self, policy: str, interval_ms: int) -> None:
        self.policy = policy
        self.interval = interval_ms / 1000.0
        self.lock = asyncio.Lock()
        self._dirty: dict[int, SyncTarget] = {}
        self._dirs: set[str] = set()
        self._writes: dict[str, bytes] = {}
        self._waiters: list[asyncio.Future[None]] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        # After a failed fsync the page cache may have dropped the dirty pages: nothing
        # written since can be called durable, so the engine refuses work until reopened.
        self.failure: StorageError | None = None
        self.rounds = 0  # for tests and metrics: how many fsync rounds ran

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="segment-syncer")

    def mark(self, target: SyncTarget) -> None:
        self._dirty[id(target)] = target

    def forget(self, target: SyncTarget) -> None:
        """Drop a file that is about to be closed (call with ``lock`` held)."""
        self._dirty.pop(id(target), None)

    def mark_dir(self, path: str) -> None:
        self._dirs.add(path)

    def write_later(self, path: str, data: bytes) -> None:
        """Replace ``path`` whole (write, fsync, rename) in the next round."""
        self._writes[path] = data

    async def durable(self) -> None:
        """Wait until everything written before this call is on disk."""
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        self._wakeup.set()
        await fut

    async def flush(self) -> None:
        await self._round(force=True)

    async def close(self) -> None:
        # Let a round under way finish (cancelling it would strand the appends it took
        # on), then one last forced round for whatever came after it.
        self._closed = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
        await self._round(force=True)

    async def _run(self) -> None:
        while not self._closed:
            if self.policy == "always":
                await self._wakeup.wait()
            else:
                try:
                    await asyncio.wait_for(self._wakeup.wait(), self.interval)
                except asyncio.TimeoutError:
                    pass
            self._wakeup.clear()
            try:
                await self._round(force=self.policy != "never")
            except Exception:  # already handed to the waiters; keep the task alive
                _log.exception("segment fsync round failed")

    async def _round(self, force: bool) -> None:
        async with self.lock:
            waiters, self._waiters = self._waiters, []
            fds = [t.fd for t in self._dirty.values()] if force or waiters else []
            if fds:
                self._dirty.clear()
            dirs, self._dirs = self._dirs, set()
            writes, self._writes = self._writes, {}
            if not (fds or dirs or writes):
                _resolve(waiters, None)
                return
            loop = asyncio.get_running_loop()
            try:
                await loop.run_in_executor(None, _sync_all, fds, dirs, writes, self.policy)
            except OSError as exc:
                err = StorageError(
                    f"fsync failed: {exc}; the engine refuses work until it is reopened "
                    "(recovery rescans what reached the disk)"
                )
                self.failure = err
                _resolve(waiters, err)
                raise err from exc
            self.rounds += 1
            _resolve(waiters, None)


def _resolve(waiters: list[asyncio.Future[None]], exc: BaseException | None) -> None:
    for fut in waiters:
        if not fut.done():
            if exc is None:
                fut.set_result(None)
            else:
                fut.set_exception(exc)


def _sync_all(fds: list[int], dirs: set[str], writes: dict[str, bytes], policy: str) -> None:
    for fd in fds:
        os.fsync(fd)
    for path, data in writes.items():
        try:
            write_file_atomic(path, data, sync=policy != "never")
        except FileNotFoundError:  # its shard or segment was deleted meanwhile
            pass
    for d in dirs:
        try:
            fsync_dir(d)
        except FileNotFoundError:
            pass
