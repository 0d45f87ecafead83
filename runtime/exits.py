"""Container exits: a watcher per container waits on its conmon (a pidfd)
and records how the container ended, from conmon's exit file, or, with
conmon gone before it, after killing the container ("monitor lost").

The watcher never takes the container's lifecycle lock (StopContainer holds
it while waiting for the exit); it only fills in the exit fields and wakes
the waiters.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from pathlib import Path
from typing import Callable, Protocol

from runtime.cgroups import CgroupManager
from runtime.errors import Internal
from runtime.events import EventBus, EventKind
from runtime.index import RecordIndex
from runtime.oci import conmon
from runtime.oci.factory import RuntimeFactory
from runtime.oci.interface import OciRuntime
from runtime.procfs import process_start_time
from runtime.reservations import Reservations, container_key_of
from runtime.states import ContainerState, set_container_state
from runtime.store import ContainerRecord, RecordStore

log = logging.getLogger("crispy.container")

# How long a killed container may take to be reaped before we give up.
KILL_WAIT = 30.0

# Reason of a container whose conmon died before it: its output and exit
# status could no longer be collected, so crispy killed it.
MONITOR_LOST = "MonitorLost"
_KILLED_CODE = 128 + int(signal.SIGKILL)


def exit_file(ctr: ContainerRecord) -> Path:
    return Path(ctr.bundle) / "exit"


def read_exit(path: Path) -> tuple[int | None, int]:
    """Blocking: conmon's exit code and the file's time, (None, 0) if none."""
    try:
        text = path.read_text().strip()
        finished = path.stat().st_mtime_ns
    except FileNotFoundError:
        return None, 0
    try:
        return int(text), finished
    except ValueError:
        return None, 0


def read_container_pid(ctr: ContainerRecord) -> int:
    """Blocking: the container's pid from the runtime's pid file, 0 if none."""
    try:
        return conmon.read_pidfile(str(Path(ctr.bundle) / "pidfile"))
    except (OSError, ValueError):
        return 0


async def readable(fd: int, timeout: float | None = None) -> bool:
    """Waits for a pidfd to turn readable (its process exited); False on timeout."""
    loop = asyncio.get_running_loop()
    gone = loop.create_future()
    def exited() -> None:
        if not gone.done():
            gone.set_result(None)

    loop.add_reader(fd, exited)
    try:
        async with asyncio.timeout(timeout):
            await gone
        return True
    except TimeoutError:
        return False
    finally:
        loop.remove_reader(fd)


class Monitors(Protocol):
    """A container's monitor (conmon) as a process. Tests without root stand
    in for conmon here."""

    def alive(self, pid: int, start_time: int) -> bool:
        """Whether the monitor started as (`pid`, `start_time`) still runs."""

    async def wait_gone(self, pid: int, start_time: int) -> None:
        """Returns once that monitor has ended (at once if it has already)."""


class ConmonProcesses:
    """The monitors as processes on this node. A pid alone could name a
    later process; its start time (ticks since boot) tells them apart."""

    def alive(self, pid: int, start_time: int) -> bool:
        return bool(pid) and process_start_time(pid) == start_time

    async def wait_gone(self, pid: int, start_time: int) -> None:
        try:
            fd = os.pidfd_open(pid) if pid else -1
        except (ProcessLookupError, OSError):
            fd = -1
        try:
            # Checked after opening the pidfd: a pid reused since then would not
            # be the process the pidfd refers to.
            if fd >= 0 and process_start_time(pid) == start_time:
                await readable(fd)
        finally:
            if fd >= 0:
                os.close(fd)


class ExitWatcher:
    def __init__(self, index: RecordIndex, store: RecordStore, runtimes: RuntimeFactory,
                 cgroups: CgroupManager | None, reservations: Reservations,
                 monitors: Monitors | None = None, events: EventBus | None = None,
                 on_exit: Callable[[ContainerRecord], None] | None = None) -> None:
        self._index = index
        self._bus = events if events is not None else EventBus(index)
        self._store = store
        self._runtimes = runtimes
        self._cgroups = cgroups
        self._reservations = reservations
        self._monitors: Monitors = monitors if monitors is not None else ConmonProcesses()
        # Told of every recorded exit (NRI plugins see a container that ended
        # on its own stopped); must not block.
        self._on_exit = on_exit
        # Per container: the task watching its conmon, and an event set once
        # its exit is recorded.
        self._watchers: dict[str, asyncio.Task[None]] = {}
        self._events: dict[str, asyncio.Event] = {}

    def event(self, container_id: str) -> asyncio.Event:
        ev = self._events.get(container_id)
        if ev is None:
            ev = self._events[container_id] = asyncio.Event()
        return ev

    def watch(self, ctr: ContainerRecord) -> None:
        """Starts the exit watcher of a container not yet known to have exited.
        Idempotent; with conmon already gone, the watcher deals with the lost
        monitor at once."""
        if ctr.id in self._watchers or ctr.state == ContainerState.EXITED:
            return
        self._events.setdefault(ctr.id, asyncio.Event())
        task = asyncio.create_task(self._watch(ctr), name=f"watch-{ctr.id[:12]}")
        self._watchers[ctr.id] = task

        def _done(t: "asyncio.Task[None]") -> None:
            if self._watchers.get(ctr.id) is t:
                del self._watchers[ctr.id]
            if not t.cancelled() and t.exception() is not None:
                log.error("container exit watcher failed",
                          extra={"fields": {"id": ctr.id, "error": str(t.exception())}})
        task.add_done_callback(_done)

    def stop_watching(self, container_id: str) -> None:
        task = self._watchers.pop(container_id, None)
        if task is not None:
            task.cancel()

    def forget(self, container_id: str) -> None:
        self._events.pop(container_id, None)

    async def wait(self, ctr: ContainerRecord, timeout: float) -> bool:
        """True once the container's exit is recorded, False on timeout."""
        if ctr.state == ContainerState.EXITED:
            return True
        try:
            async with asyncio.timeout(timeout):
                await self.event(ctr.id).wait()
            return True
        except TimeoutError:
            return False

    def monitor_alive(self, ctr: ContainerRecord) -> bool:
        """Whether the container's conmon still runs."""
        return self._monitors.alive(ctr.conmon_pid, ctr.conmon_start_time)

    async def _watch(self, ctr: ContainerRecord) -> None:
        await self._monitors.wait_gone(ctr.conmon_pid, ctr.conmon_start_time)
        await self.record_exit(ctr)

    async def record_exit(self, ctr: ContainerRecord) -> None:
        """conmon is gone: fill in how the container ended."""
        if ctr.state == ContainerState.EXITED:
            self.event(ctr.id).set()
            return
        # One thread hop for both reads: subscribers wait on this for the exit.
        code, finished, oom = await asyncio.to_thread(self._exit_and_oom, ctr)
        lost = never_read = code is None
        never_started = False
        message = ctr.message
        if lost:
            code, finished, message, status = await self._monitor_lost(ctr)
            never_started = ctr.state == ContainerState.CREATED and status == "created"
            # conmon may have written the exit file just before it died, after
            # the first look.
            late, late_finished = await asyncio.to_thread(read_exit, exit_file(ctr))
            if late is not None:
                lost, code, finished, message = False, late, late_finished, ""
        ctr.message = message
        if never_read:
            oom = await asyncio.to_thread(self._oom_killed, ctr)
        # The exit file's mtime comes from the kernel's coarse clock, which can
        # trail the start time taken just before.
        if ctr.started_at and finished < ctr.started_at:
            finished = ctr.started_at
        assert code is not None
        if lost:
            reason = MONITOR_LOST
        elif ctr.reason != "StartError":
            reason = "OOMKilled" if oom else ("Completed" if code == 0 else "Error")
        else:
            reason = ctr.reason
        if ctr.state == ContainerState.EXITED:
            # StartContainer gave up waiting meanwhile and recorded its guess;
            # what conmon reported is better.
            ctr.exit_code, ctr.finished_at, ctr.reason = code, finished, reason
        else:
            set_container_state(ctr, ContainerState.EXITED, at=finished, exit_code=code, reason=reason)
        if ctr.id in self._index.containers:
            # Announced before the save (two fsyncs) without harm: the exit is
            # the record's state in memory already, and should crispy die
            # before the save lands, the next start records it again and
            # announces it to the subscribers that come then.
            self._bus.container(EventKind.STOPPED, ctr)
            await self._store.save(ctr)
            if never_started:
                # Most likely a create that crispy's crash cut short (conmon dies
                # when it cannot report the pid): a retried CreateContainer must
                # make a fresh container, not get this dead one back.
                self._reservations.release(container_key_of(ctr), ctr.id)
        self.event(ctr.id).set()
        if self._on_exit is not None:
            self._on_exit(ctr)
        log.info("container exited", extra={"fields": {"id": ctr.id, "exit_code": code, "reason": ctr.reason}})

    async def _monitor_lost(self, ctr: ContainerRecord) -> tuple[int, int, str, str]:
        """conmon died without recording an exit (OOM killer, an operator, or
        its sync pipe broken by a crispy crash during the create).

        conmon cannot adopt a process that already runs, and nothing else holds
        the container's stdio or would collect its exit status, so the
        container is killed and reported exited, as containerd does when a
        shim dies (SIGKILL, exit 137); kubelet then restarts it by its restart
        policy, under a new monitor. The wait is on the container's own init
        (a pidfd, else the runtime's state), never on conmon.

        Returns exit code, time, message and the runtime's status when found."""
        runtime = self._runtimes.for_record(ctr)
        pid = ctr.pid or await asyncio.to_thread(read_container_pid, ctr)
        fd = -1
        if pid:
            try:
                fd = os.pidfd_open(pid)
            except OSError:
                fd = -1
        try:
            try:
                state = await runtime.state(ctr.id)
            except Internal:
                state = None
            status = state.get("status") if state else None
            if not state or status not in ("running", "created", "paused"):
                return (255, time.time_ns(),
                        "conmon, the container's monitor, exited without recording the container's exit status",
                        status or "")
            # The runtime checks the init's start time: the same pid, alive
            # after the pidfd was opened, means the pidfd is the container's.
            if fd >= 0 and int(state.get("pid") or 0) != pid:
                os.close(fd)
                fd = -1
            log.error("conmon is gone but the container still runs; killing it", extra={"fields": {
                "id": ctr.id, "status": status}})
            try:
                await runtime.kill(ctr.id, int(signal.SIGKILL), all_processes=True)
            except Internal as e:
                log.error("killing a container whose monitor is gone failed",
                          extra={"fields": {"id": ctr.id, "error": e.message}})
            if fd >= 0:
                dead = await readable(fd, KILL_WAIT)
            else:
                dead = await _wait_stopped(runtime, ctr.id, KILL_WAIT)
            if not dead:
                log.error("container whose monitor is gone did not die after SIGKILL", extra={"fields": {"id": ctr.id}})
            return (_KILLED_CODE, time.time_ns(),
                    "conmon, the container's monitor, exited while the container ran; crispy killed the container "
                    "because its output and exit status could no longer be collected", status)
        finally:
            if fd >= 0:
                os.close(fd)

    def _exit_and_oom(self, ctr: ContainerRecord) -> tuple[int | None, int, bool]:
        code, finished = read_exit(exit_file(ctr))
        return code, finished, code is not None and self._oom_killed(ctr)

    def _oom_killed(self, ctr: ContainerRecord) -> bool:
        """conmon's oom file, else the cgroup's own count; read before the
        runtime deletes the cgroup (RemoveContainer)."""
        if (Path(ctr.bundle) / "oom").exists():
            return True
        cg = self._cgroups
        if cg is not None and ctr.cgroup_path:
            try:
                return bool(cg.oom_killed(ctr.cgroup_path))
            except (OSError, ValueError):
                return False
        return False


async def _wait_stopped(runtime: OciRuntime, container_id: str, timeout: float) -> bool:
    """Polls the runtime's state (no pid to wait on): True once not running."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    delay = 0.005
    while True:
        try:
            state = await runtime.state(container_id)
        except Internal:
            state = None
        if state is None or state.get("status") not in ("running", "created", "paused"):
            return True
        if loop.time() > deadline:
            return False
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.2)
