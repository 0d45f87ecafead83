"""What both cgroup versions offer crispy, and the file plumbing they share.

Managers block (small reads and writes on cgroupfs, a short retry loop in
`remove`); the daemon calls them through asyncio.to_thread.
"""

from __future__ import annotations

import errno
import os
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

from cri.proto import api_pb2 as pb
from runtime.cgroups.paths import fs_path
from runtime.errors import FailedPrecondition, InvalidArgument, NotFound

# v1 reports "no limit" as the largest page-aligned int64.
V1_UNLIMITED = 0x7FFFFFFFFFFFF000
# rmdir of a cgroup whose last task just exited can briefly fail with EBUSY.
REMOVE_ATTEMPTS = 50
REMOVE_DELAY = 0.02


@dataclass
class CgroupStats:
    timestamp_ns: int
    cpu_usage_ns: int | None = None
    memory_usage_bytes: int | None = None
    # usage minus inactive file cache: what kubelet evicts on.
    memory_working_set_bytes: int | None = None
    memory_rss_bytes: int | None = None
    memory_limit_bytes: int | None = None  # None = no limit
    page_faults: int | None = None
    major_page_faults: int | None = None
    pids_current: int | None = None
    oom_kills: int | None = None
    swap_usage_bytes: int | None = None
    # Pressure stall information (v2): {"some"|"full": {"avg10", "avg60", "avg300", "total"}}.
    psi: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)


def v1_limit(value: int | None) -> int | None:
    """A v1 limit file's value, None for "no limit" (or unread)."""
    return value if value is not None and value < V1_UNLIMITED else None


def read_text(path: Path, tolerant: bool = False) -> str | None:
    """The file's text, None when it is missing. `tolerant` takes any other
    OSError (ENODEV, ESRCH, EACCES: a cgroup or process going away mid-read)
    as absent too and replaces undecodable bytes, for readers that report
    what is there rather than act on it (crispy explain); the managers and
    the CRI metrics want those errors raised."""
    try:
        return path.read_text(errors="replace" if tolerant else "strict")
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError:
        if tolerant:
            return None
        raise


def read_int(path: Path, tolerant: bool = False) -> int | None:
    """An integer file; None for "max", missing or garbled."""
    text = read_text(path, tolerant)
    if text is None:
        return None
    text = text.strip()
    if text == "max":
        return None
    try:
        return int(text)
    except ValueError:
        return None


def read_flat_keyed(path: Path, tolerant: bool = False) -> dict[str, int]:
    """"key value" lines (memory.stat, memory.events, cpu.stat)."""
    out: dict[str, int] = {}
    for line in (read_text(path, tolerant) or "").splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                out[parts[0]] = int(parts[1])
            except ValueError:
                pass
    return out


def read_psi(path: Path) -> dict[str, dict[str, float]] | None:
    """"some avg10=0.12 avg60=0.05 avg300=0.00 total=1234" lines."""
    text = read_text(path)
    if text is None:
        return None
    out: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        kind, *pairs = line.split()
        values = {}
        for pair in pairs:
            k, _, v = pair.partition("=")
            try:
                values[k] = float(v)
            except ValueError:
                pass
        if kind in ("some", "full"):
            out[kind] = values
    return out


def write(path: Path, value: str) -> None:
    try:
        with open(path, "w") as f:
            f.write(value)
    except FileNotFoundError:
        if not path.parent.exists():
            raise NotFound(f"cgroup {path.parent} does not exist") from None
        raise InvalidArgument(f"{path.name} is not available on this node "
                              f"(no such cgroup file in {path.parent})") from None
    except OSError as e:
        if e.errno in (errno.EINVAL, errno.ERANGE, errno.EBUSY, errno.EPERM, errno.EACCES, errno.ENOSPC):
            raise InvalidArgument(f"the kernel refused {value!r} for {path.name} in {path.parent}: "
                                  f"{e.strerror}") from None
        raise


class ProcessGone(NotFound):
    """The process to move into a cgroup no longer exists."""


def write_procs(procs: Path, pid: int) -> None:
    """Moves `pid` (its whole thread group) by writing it to `procs`."""
    try:
        write(procs, str(pid))
    except InvalidArgument:
        if not Path(f"/proc/{pid}").exists():
            raise ProcessGone(f"process {pid} is gone") from None
        raise
    except ProcessLookupError:  # ESRCH
        raise ProcessGone(f"process {pid} is gone") from None


def rmdir_tree(root: Path) -> None:
    """rmdir `root` and any empty cgroups below it, deepest first. Missing is
    fine; a cgroup still busy after a short wait is reported."""
    if not root.exists():
        return
    dirs = [Path(d) for d, _subdirs, _files in os.walk(root)]
    for d in sorted(dirs, key=lambda p: len(p.parts), reverse=True):
        for attempt in range(REMOVE_ATTEMPTS):
            try:
                d.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError as e:
                if e.errno != errno.EBUSY or attempt == REMOVE_ATTEMPTS - 1:
                    procs = (read_text(d / "cgroup.procs") or "").split()
                    why = f"processes {', '.join(procs[:10])} are still in it" if procs else e.strerror
                    raise FailedPrecondition(f"cannot remove cgroup {d}: {why}") from None
                time.sleep(REMOVE_DELAY)


class CgroupManager(ABC):
    """One node's cgroups, for one driver. Paths given to methods are names
    in the driver's form: a pod's cgroup_parent or a spec's cgroupsPath."""

    version: int

    def __init__(self, driver: str = "cgroupfs") -> None:
        self.driver = driver

    def rel(self, name: str) -> str:
        return fs_path(name, self.driver).lstrip("/")

    def rel_for_removal(self, name: str) -> str:
        rel = self.rel(name)
        # remove() takes empty cgroups below the target too: on the root
        # that would be every idle cgroup on the node.
        if not rel:
            raise InvalidArgument(f"refusing to remove the root cgroup (asked for {name!r})")
        return rel

    @abstractmethod
    def create(self, path: str, resources: pb.LinuxContainerResources | None = None) -> None: ...

    @abstractmethod
    def remove(self, path: str) -> None: ...

    @abstractmethod
    def update(self, path: str, resources: pb.LinuxContainerResources) -> None: ...

    @abstractmethod
    def read_resources(self, path: str) -> pb.LinuxContainerResources: ...

    @abstractmethod
    def stats(self, path: str) -> CgroupStats: ...

    @abstractmethod
    def oom_killed(self, path: str) -> bool: ...

    @abstractmethod
    def pids(self, path: str) -> list[int]: ...

    @abstractmethod
    def exists(self, path: str) -> bool: ...

    @abstractmethod
    def add_process(self, path: str, pid: int) -> None:
        """Move `pid` into the cgroup (on v2 into its leaf, see V2Manager)."""


def parse_pids(text: str | None) -> list[int]:
    return sorted({int(p) for p in (text or "").split() if p.isdigit()})


def check_values(resources: pb.LinuxContainerResources) -> None:
    """Refuse what no kernel accepts before touching any file."""
    for name in ("cpu_period", "cpu_shares", "memory_limit_in_bytes"):
        if getattr(resources, name) < 0:
            raise InvalidArgument(f"{name} must not be negative (got {getattr(resources, name)})")
    if resources.cpu_quota < -1:
        raise InvalidArgument(f"cpu_quota must be positive or -1 for no limit (got {resources.cpu_quota})")
    if resources.memory_swap_limit_in_bytes < -1:
        raise InvalidArgument("memory_swap_limit_in_bytes must be positive or -1 for no limit")
    if (resources.memory_swap_limit_in_bytes > 0 and resources.memory_limit_in_bytes
            and resources.memory_swap_limit_in_bytes < resources.memory_limit_in_bytes):
        raise InvalidArgument("memory_swap_limit_in_bytes is memory plus swap, "
                              "so it must be at least memory_limit_in_bytes")

