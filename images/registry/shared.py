"""Work that every caller asking for the same key shares (one pull per
image reference, one download per blob), cancelled once no caller waits
for it any more: a pull whose kubelet call was cancelled or timed out
stops downloading and frees its slots. What it wrote stays in the ingest
directory, so a later pull of the same content resumes from there."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Generic, Hashable, TypeVar

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


def _retrieve(fut: asyncio.Future[Any]) -> None:
    # Every waiter may have given up; the outcome is logged by the work
    # itself, so mark it seen instead of warning at GC time.
    if not fut.cancelled():
        fut.exception()


@dataclass(eq=False)
class _Entry(Generic[T]):
    task: asyncio.Future[T]
    waiters: int = 0


class SharedWork(Generic[K, T]):
    def __init__(self) -> None:
        self._work: dict[K, _Entry[T]] = {}

    def running(self, key: K) -> bool:
        return key in self._work

    def _drop(self, key: K, entry: _Entry[T]) -> None:
        if self._work.get(key) is entry:
            del self._work[key]

    async def join(self, key: K, start: Callable[[], Awaitable[T]]) -> T:
        entry = self._work.get(key)
        if entry is None:
            entry = _Entry(asyncio.ensure_future(start()))
            self._work[key] = entry
            def settled(f: asyncio.Future[T], e: _Entry[T] = entry) -> None:
                self._drop(key, e)
                _retrieve(f)

            entry.task.add_done_callback(settled)
        entry.waiters += 1
        try:
            # Shielded: one caller giving up must not cancel the others' work.
            return await asyncio.shield(entry.task)
        finally:
            entry.waiters -= 1
            if entry.waiters == 0 and not entry.task.done():
                # The last caller left. Forget the work at once, so that a
                # new caller starts afresh rather than joining a cancelled task.
                self._drop(key, entry)
                entry.task.cancel()
