"""Pod readiness that follows the node: a pod whose infra process died, or
one of whose pinned namespaces was unmounted, is NOT_READY at once.

kubelet only recreates a sandbox it sees NOT_READY; a pod that stays
READY after losing its PID namespace's init (no process can join the
namespace any more) or its network namespace pin (nothing to enter) is
wedged: every CreateContainer in it fails. Both losses are watched on the
event loop rather than checked in ListPodSandbox, which kubelet calls every
second for every pod:

- the infra: a pidfd, readable the moment the process exits;
- the pins: the mount table. /proc/self/mountinfo signals POLLPRI on every
  mount or unmount in crispy's mount namespace; on one, each ready pod's
  pins are stat'ed (a pin is intact while it is an nsfs file with the inode
  it had when the pod was tracked).

`problem` is the same check done synchronously, for CreateContainer and
PodSandboxStatus, which must not act on a pod between the loss and the
event's delivery.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import select
from dataclasses import dataclass, field

from runtime import namespaces
from runtime.events import EventBus, EventKind
from runtime.index import RecordIndex
from runtime.pod_view import pinned_of
from runtime.states import PodState
from runtime.store import RecordStore, SandboxRecord

log = logging.getLogger("crispy.pods")

# Seconds from a mount table change to the scan of the pins.
SCAN_DELAY = 0.02


def _nsfs_dev() -> int:
    """The device number every nsfs file carries."""
    return os.stat("/proc/self/ns/net").st_dev


@dataclass
class _Tracked:
    infra_fd: int = -1
    # pin path -> inode of the namespace it held when tracked
    pins: dict[str, int] = field(default_factory=dict)


class PodHealth:
    def __init__(self, index: RecordIndex, store: RecordStore, events: EventBus | None = None) -> None:
        self._index = index
        self._events = events if events is not None else EventBus(index)
        self._store = store
        self._tracked: dict[str, _Tracked] = {}
        self._nsfs = _nsfs_dev()
        self._mounts: io.BufferedReader | None = None
        self._epoll: select.epoll | None = None
        self._scan_pending = False
        self._loop: asyncio.AbstractEventLoop | None = None

    # ---- set-up ---------------------------------------------------------

    def open(self) -> None:
        self._loop = asyncio.get_running_loop()
        try:
            self._mounts = open("/proc/self/mountinfo", "rb")
            self._epoll = select.epoll()
            self._epoll.register(self._mounts.fileno(), select.EPOLLPRI)
        except OSError as e:
            log.warning("cannot watch the mount table; lost namespace pins are only noticed on use",
                        extra={"fields": {"error": str(e)}})
            self._close_mount_watch()
            return
        self._loop.add_reader(self._epoll.fileno(), self._mounts_changed)

    def close(self) -> None:
        for pod_id in list(self._tracked):
            self.untrack(pod_id)
        if self._epoll is not None and self._loop is not None:
            self._loop.remove_reader(self._epoll.fileno())
        self._close_mount_watch()

    def _close_mount_watch(self) -> None:
        if self._epoll is not None:
            self._epoll.close()
            self._epoll = None
        if self._mounts is not None:
            self._mounts.close()
            self._mounts = None

    # ---- tracking -------------------------------------------------------

    def track(self, rec: SandboxRecord) -> None:
        """Watches a ready pod. A pod that is already broken is marked at once."""
        if rec.id in self._tracked or rec.state != PodState.READY:
            return
        pinned = pinned_of(rec)
        t = _Tracked()
        for path in (pinned.net, pinned.ipc, pinned.uts, pinned.pid):
            if path:
                try:
                    st = os.stat(path)
                except OSError:
                    st = None
                # -1: never an nsfs inode, so the first check reports it.
                t.pins[path] = st.st_ino if st is not None and st.st_dev == self._nsfs else -1
        if pinned.infra_pid:
            try:
                fd = os.pidfd_open(pinned.infra_pid)
            except OSError:
                fd = -1
            # Checked after the open: a pid reused before it would not be ours.
            if fd >= 0 and not namespaces.infra_alive(pinned):
                os.close(fd)
                fd = -1
            t.infra_fd = fd
            if fd >= 0 and self._loop is not None:
                self._loop.add_reader(fd, self._infra_exited, rec.id)
        self._tracked[rec.id] = t
        reason = self.problem(rec)
        if reason:
            self._schedule_mark(rec, reason)

    def untrack(self, pod_id: str) -> None:
        t = self._tracked.pop(pod_id, None)
        if t is not None and t.infra_fd >= 0:
            if self._loop is not None:
                self._loop.remove_reader(t.infra_fd)
            os.close(t.infra_fd)

    # ---- checks ---------------------------------------------------------

    def problem(self, rec: SandboxRecord) -> str:
        """Why a ready pod can no longer take containers, or ""."""
        pinned = pinned_of(rec)
        if pinned.infra_pid and not namespaces.infra_alive(pinned):
            return f"its infra process (pid {pinned.infra_pid}, init of the pod's PID namespace) is gone"
        t = self._tracked.get(rec.id)
        for kind in ("net", "ipc", "uts", "pid"):
            path = getattr(pinned, kind)
            if not path:
                continue
            try:
                st = os.stat(path)
            except OSError:
                return f"its pinned {kind} namespace {path} is gone"
            known = t.pins.get(path) if t is not None else None
            if st.st_dev != self._nsfs or (known is not None and st.st_ino != known):
                return f"its pinned {kind} namespace {path} is no longer mounted"
        return ""

    async def refresh(self, rec: SandboxRecord) -> None:
        """The synchronous check, acted on: marks the pod if it is broken."""
        if rec.state == PodState.READY:
            reason = self.problem(rec)
            if reason:
                await self.mark_not_ready(rec, reason)

    async def mark_not_ready(self, rec: SandboxRecord, reason: str) -> None:
        if rec.state != PodState.READY or rec.id not in self._index.sandboxes:
            return
        self.untrack(rec.id)
        log.warning("pod sandbox is not ready any more: " + reason, extra={"fields": {"id": rec.id}})
        await self._store.move_pod(rec, PodState.NOT_READY)
        self._events.pod(EventKind.STOPPED, rec)
        pinned = pinned_of(rec)
        if pinned.infra_pid and not namespaces.infra_alive(pinned):
            # Collects the infra's exit if it was our child (a zombie
            # otherwise lingers until the pod is stopped). A live infra is
            # left to StopPodSandbox: it may still hold containers.
            await namespaces.kill_infra(pinned)

    # ---- events ---------------------------------------------------------

    def _schedule_mark(self, rec: SandboxRecord, reason: str) -> None:
        task = asyncio.ensure_future(self.mark_not_ready(rec, reason))
        task.add_done_callback(_log_failure)

    def _infra_exited(self, pod_id: str) -> None:
        t = self._tracked.get(pod_id)
        if t is not None and t.infra_fd >= 0 and self._loop is not None:
            # Level-triggered: stop listening before anything else runs.
            self._loop.remove_reader(t.infra_fd)
        rec = self._index.sandboxes.get(pod_id)
        if rec is None:
            self.untrack(pod_id)
            return
        self._schedule_mark(rec, "its infra process (init of the pod's PID namespace) exited")

    def _mounts_changed(self) -> None:
        if self._epoll is not None:
            self._epoll.poll(0)  # the outer poll usually consumed the event already
        # Mounts come in bursts (a pod pins several namespaces, a container
        # mounts its rootfs): one scan per burst.
        if not self._scan_pending and self._loop is not None:
            self._scan_pending = True
            self._loop.call_later(SCAN_DELAY, self._scan_pins)

    def _scan_pins(self) -> None:
        """One stat per pin (a few microseconds each); the infra has its own pidfd."""
        self._scan_pending = False
        for pod_id, t in list(self._tracked.items()):
            for path, ino in t.pins.items():
                try:
                    st = os.stat(path)
                    intact = st.st_dev == self._nsfs and st.st_ino == ino
                except OSError:
                    intact = False
                if not intact:
                    rec = self._index.sandboxes.get(pod_id)
                    if rec is not None and rec.state == PodState.READY:
                        self._schedule_mark(rec, f"its pinned namespace {path} is no longer mounted")
                    break


def _log_failure(task: "asyncio.Future[None]") -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("marking a pod not ready failed", extra={"fields": {"error": str(task.exception())}})
