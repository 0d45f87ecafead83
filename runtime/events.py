"""Container and pod lifecycle events for any number of subscribers
(GetContainerEvents, kubelet's evented PLEG), and for listeners inside the
daemon (the metrics).

Publishing never blocks and never fails: each subscriber has a bounded
queue, and a subscriber that falls that far behind is cut off, its stream
ended with a status saying so (kubelet then relists and subscribes again),
rather than slowing the lifecycle or growing without bound.

An event carries copies of the pod record and of its containers' records as
they were when it was published, so a subscriber reads the state the event
announced even when it is slow; a pod's events use the pod's id as the
container id, as containerd does.

Events published before the daemon serves (exits of containers that ended
while crispy was down, pods found broken, recorded at start-up) are held,
and every subscriber that arrives within `backlog_window` seconds of
`serving()` gets them first: kubelet reconnects right after a restart.
Exits (STOPPED) are held after `serving()` too, until the first
subscriber arrives: the exit watchers that recovery restarts find exits
that happened while crispy was down a moment after it serves, and such an
exit published before kubelet has reconnected would otherwise reach nobody.
What kubelet's own calls cause after serving is not held: it sees that in
its relist.

A container's events come in lifecycle order: an exit the watcher sees
while StartContainer is still under way (a process that ends at once) is
announced after the STARTED event, not before it.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import enum
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from runtime.errors import ResourceExhausted, Unavailable
from runtime.index import RecordIndex
from runtime.store import ContainerRecord, SandboxRecord

# Events one subscriber may have waiting. kubelet reads them as they come;
# 1024 is a burst of ~250 pods started at once.
QUEUE_SIZE = 1024
# Events held from start-up for the first subscribers.
BACKLOG_SIZE = 4096
BACKLOG_WINDOW_S = 60.0


class EventKind(enum.Enum):
    """The CRI's ContainerEventType, by name."""
    CREATED = "created"
    STARTED = "started"
    STOPPED = "stopped"
    DELETED = "deleted"


@dataclass(frozen=True)
class Event:
    kind: EventKind
    # The container's id, or the pod's for a pod's own event.
    container_id: str
    created_at: int  # ns since the epoch
    # Snapshots: the pod (None if it is already gone) and its containers.
    pod: SandboxRecord | None
    containers: tuple[ContainerRecord, ...]
    is_pod: bool = False


class EventsOverflow(ResourceExhausted):
    """A subscriber fell `QUEUE_SIZE` events behind and was cut off."""


class Subscription:
    def __init__(self, bus: "EventBus", size: int) -> None:
        self._bus = bus
        self._size = size
        self._queue: deque[Event] = deque()
        self._wakeup = asyncio.Event()
        self.overflowed = False
        self.closed = False
        self.dropped = 0

    def _offer(self, event: Event) -> None:
        if self.overflowed:
            self.dropped += 1
            return
        if len(self._queue) >= self._size:
            # What is queued is stale anyway: the subscriber relists.
            self.overflowed = True
            self.dropped = len(self._queue) + 1
            self._queue.clear()
        else:
            self._queue.append(event)
        self._wakeup.set()

    async def next(self) -> Event:
        """The next event; raises EventsOverflow once the subscriber has been
        cut off."""
        while True:
            if self.closed:
                raise Unavailable("crispy is shutting down; subscribe to events again once it is back")
            if self.overflowed:
                raise EventsOverflow(
                    f"this events subscriber fell more than {self._size} events behind and was cut off "
                    f"({self.dropped} events dropped); list pods and containers again, then subscribe again")
            if self._queue:
                return self._queue.popleft()
            self._wakeup.clear()
            await self._wakeup.wait()

    def close(self) -> None:
        self._bus._unsubscribe(self)

    def __enter__(self) -> "Subscription":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EventBus:
    def __init__(self, index: RecordIndex, queue_size: int = QUEUE_SIZE, backlog_size: int = BACKLOG_SIZE,
                 backlog_window: float = BACKLOG_WINDOW_S, clock: Callable[[], float] = time.monotonic) -> None:
        self._index = index
        self._queue_size = queue_size
        self._subs: list[Subscription] = []
        self._listeners: list[Callable[[Event], None]] = []
        self._clock = clock
        self._window = backlog_window
        # Until serving(): events are held here (bounded: the oldest go).
        self._backlog: deque[Event] | None = deque(maxlen=backlog_size)
        self._backlog_until: float | None = None
        self._subscribed = False
        # Containers being started, with the exits held until their STARTED.
        self._starting: dict[str, list[ContainerRecord]] = {}
        self.published = 0
        self.overflows = 0

    # ---- publishing (the lifecycle services, the exit watcher, pod health) ----

    def container(self, kind: EventKind, ctr: ContainerRecord) -> None:
        held = self._starting.get(ctr.id)
        if held is not None and kind is EventKind.STOPPED:
            held.append(ctr)
            return
        self._publish(kind, ctr.id, self._index.sandboxes.get(ctr.sandbox_id), ctr.sandbox_id, False)

    @contextlib.contextmanager
    def starting(self, ctr: ContainerRecord) -> Iterator[None]:
        """Around a StartContainer: an exit announced meanwhile is published
        when it ends, after the STARTED event published inside (or alone,
        when the start failed)."""
        held: list[ContainerRecord] = []
        self._starting[ctr.id] = held
        try:
            yield
        finally:
            del self._starting[ctr.id]
            for stopped in held:
                self.container(EventKind.STOPPED, stopped)

    def pod(self, kind: EventKind, rec: SandboxRecord) -> None:
        self._publish(kind, rec.id, rec, rec.id, True)

    def _publish(self, kind: EventKind, container_id: str, pod: SandboxRecord | None, sandbox_id: str,
                 is_pod: bool) -> None:
        self.published += 1
        if self._backlog_until is not None and self._backlog is not None and self._clock() >= self._backlog_until:
            self._backlog = None  # nobody came for it in time
        holding = self._backlog is not None and (
            self._backlog_until is None or (kind is EventKind.STOPPED and not self._subscribed))
        if not self._subs and not self._listeners and not holding:
            return
        event = Event(kind, container_id, time.time_ns(), copy.copy(pod) if pod is not None else None,
                      tuple(copy.copy(c) for c in self._index.containers_of(sandbox_id)), is_pod)
        for listener in self._listeners:
            listener(event)
        if holding:
            assert self._backlog is not None
            self._backlog.append(event)
        for sub in self._subs:
            was = sub.overflowed
            sub._offer(event)
            if sub.overflowed and not was:
                self.overflows += 1

    # ---- the daemon ----------------------------------------------------------

    def serving(self) -> None:
        """Start-up is over: what was held goes to subscribers arriving
        within the window."""
        self._backlog_until = self._clock() + self._window

    def close(self) -> None:
        """Ends every subscriber's stream (the daemon is stopping)."""
        for sub in self._subs:
            sub.closed = True
            sub._wakeup.set()

    def listen(self, listener: Callable[[Event], None]) -> None:
        """`listener` is called inline with every event; it must be quick and
        must not raise."""
        self._listeners.append(listener)

    # ---- subscribers (GetContainerEvents) ------------------------------------

    def subscribe(self) -> Subscription:
        sub = Subscription(self, self._queue_size)
        self._subscribed = True
        if self._backlog is not None and self._backlog_until is not None:
            if self._clock() < self._backlog_until:
                # Past the queue's bound if need be: it limits falling behind
                # live events, not what start-up found.
                sub._queue.extend(self._backlog)
                sub._size += len(self._backlog)
                sub._wakeup.set()
            else:
                self._backlog = None
        self._subs.append(sub)
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        if sub in self._subs:
            self._subs.remove(sub)

    def subscribers(self) -> int:
        return len(self._subs)

    def info(self) -> dict[str, int]:
        return {"subscribers": len(self._subs), "published": self.published, "overflows": self.overflows,
                "queueSize": self._queue_size}
