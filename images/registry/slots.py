"""Node-wide download slots (images.max_concurrent_downloads), shared
fairly among registry hosts.

Any host may use every free slot, so a single pull keeps its full
parallelism. When a download for another host has to wait and one host
holds more than its fair share (the slots divided among the hosts that
want some), the newest download of that host is asked to yield: it stops,
keeps what it wrote (it resumes with a Range request later) and queues
again. Freed slots go to the waiting host that holds the fewest. So a
registry dripping bytes cannot keep a healthy registry's pull waiting.

Sans-IO apart from the asyncio futures it hands out; the holder of a slot
watches `Slot.revoked` and gives the slot back when it is set."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass, field


@dataclass(eq=False)
class Slot:
    host: str
    revoked: asyncio.Event = field(default_factory=asyncio.Event)


class DownloadSlots:
    def __init__(self, total: int) -> None:
        self.total = max(1, total)
        self.held: dict[str, list[Slot]] = defaultdict(list)
        self._queue: list[tuple[str, asyncio.Future[Slot]]] = []
        # Slots revoked on a host's behalf that it has not been granted yet.
        self._owed: dict[str, int] = defaultdict(int)

    def in_use(self) -> int:
        return sum(len(s) for s in self.held.values())

    def holding(self, host: str) -> int:
        return len(self.held.get(host, ()))

    def _grant(self, host: str) -> Slot:
        slot = Slot(host)
        self.held[host].append(slot)
        if self._owed.get(host):
            self._owed[host] -= 1
        return slot

    async def acquire(self, host: str) -> Slot:
        if self.in_use() < self.total and not self._queue:
            return self._grant(host)
        fut: asyncio.Future[Slot] = asyncio.get_running_loop().create_future()
        self._queue.append((host, fut))
        self._preempt_for(host)
        try:
            return await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release(fut.result())  # granted just as the caller gave up
            else:
                self._queue = [(h, f) for h, f in self._queue if f is not fut]
                if not any(h == host for h, _ in self._queue):
                    self._owed.pop(host, None)
            raise

    def release(self, slot: Slot) -> None:
        mine = self.held.get(slot.host)
        if mine and slot in mine:
            mine.remove(slot)
            if not mine:
                del self.held[slot.host]
        self._dispatch()

    def _dispatch(self) -> None:
        while self._queue and self.in_use() < self.total:
            # The waiting host holding the fewest slots; first come first served among equals.
            i = min(range(len(self._queue)), key=lambda k: (self.holding(self._queue[k][0]), k))
            host, fut = self._queue.pop(i)
            if not fut.done():
                fut.set_result(self._grant(host))

    def _preempt_for(self, host: str) -> None:
        if self.in_use() < self.total:
            self._dispatch()
            return
        hosts = set(self.held) | {h for h, _ in self._queue}
        share = max(1, self.total // len(hosts))
        if self.holding(host) + self._owed.get(host, 0) >= share:
            return
        active = {h: [s for s in slots if not s.revoked.is_set()] for h, slots in self.held.items() if h != host}
        victim = max(active, key=lambda h: len(active[h]), default=None)
        if victim is None or len(active[victim]) <= share:
            return
        active[victim][-1].revoked.set()
        self._owed[host] += 1
