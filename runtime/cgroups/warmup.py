"""Starting the kernel's wait for a cgroup move before the move is needed.

Every move of a process into a cgroup (a write to cgroup.procs, v1 or v2)
takes the kernel's global cgroup threadgroup lock for writing. When no move
happened in the last RCU grace period, taking it first waits for one (~10 ms
on this kind of VM); a move soon after another is quick. CreateContainer
needs moves: conmon into the pod's cgroup, then the OCI runtime's move of
the container's init. So at the start of the request crispy writes its own
pid into the cgroup it is already in: a move that changes nothing, whose
wait overlaps parsing the request and spawning conmon instead of coming
after them. Best effort: if the write fails, the later moves simply wait.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from runtime.host import CGROUP_ROOT, CgroupLayout


def own_procs_file(layout: CgroupLayout, self_cgroup: str, root: Path = CGROUP_ROOT) -> Path | None:
    """The cgroup.procs of the cgroup this process is in, in one hierarchy
    that moves can be made in (`self_cgroup` is /proc/self/cgroup's text)."""
    entries = []
    for line in self_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            entries.append((parts[1], parts[2]))
    if layout.mode == "v2":
        return next((root / path.lstrip("/") / "cgroup.procs" for ctrls, path in entries if ctrls == ""), None)
    # v1 or hybrid: a controller hierarchy every cgroupfs host mounts.
    for wanted in ("pids", "memory", "cpu,cpuacct"):
        for ctrls, path in entries:
            if ctrls == wanted:
                return root / ctrls / path.lstrip("/") / "cgroup.procs"
    return None


class MigrationWarmup:
    """One write in flight at a time: concurrent requests share its wait."""

    def __init__(self, layout: CgroupLayout, root: Path = CGROUP_ROOT) -> None:
        self.layout, self.root = layout, root
        self._busy = threading.Lock()

    def kick(self) -> None:
        """Returns at once; the write (and its wait) happens in a thread of
        its own, never a pool thread another step may be waiting for. The
        cgroup is looked up and opened here, a few quick syscalls, so that
        the thread goes straight to the write once it gets the interpreter:
        the wait starts ~0.25 ms after the kick instead of ~1 ms (each
        syscall in the thread meant another wait for the GIL)."""
        if not self._busy.acquire(blocking=False):
            return
        try:
            fd = self._open_own_procs()
        except OSError:
            fd = -1  # a read-only or foreign cgroup tree: the later moves just wait
        if fd < 0:
            self._busy.release()
            return
        try:
            threading.Thread(target=self._write, args=(fd,), name="cgroup-warmup", daemon=True).start()
        except RuntimeError:  # no thread to be had (interpreter shutting down)
            os.close(fd)
            self._busy.release()

    def _open_own_procs(self) -> int:
        # Read at each kick, not once at start: whoever manages crispy's own
        # cgroup may have moved it since, and it must stay where it is.
        with open("/proc/self/cgroup") as f:
            procs = own_procs_file(self.layout, f.read(), self.root)
        return os.open(procs, os.O_WRONLY | os.O_CLOEXEC) if procs is not None else -1

    def _write(self, fd: int) -> None:
        try:
            os.write(fd, str(os.getpid()).encode())
        except OSError:
            pass
        finally:
            os.close(fd)
            self._busy.release()
