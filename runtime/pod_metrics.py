"""Readings for the CRI metrics RPCs (ListPodSandboxMetrics): per running
container its cgroup in detail (runtime/cgroups/metrics.py), its open file
descriptors and sockets, its writable layer and the filesystem under it;
per pod the counters of its network namespace's interfaces.

What the readings are called and labelled as (cAdvisor's names) is the
CRI face's business (cri/servicers/metrics.py); here they are just read.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from runtime import container_stats, namespaces
from runtime.cgroups import CgroupManager
from runtime.cgroups import metrics as cgroup_metrics
from runtime.index import RecordIndex
from runtime.pod_view import pinned_of
from runtime.states import ContainerState, PodState
from runtime.store import ContainerRecord, SandboxRecord


@dataclass
class FilesystemReading:
    device: str
    used_bytes: int
    inodes_used: int
    limit_bytes: int
    inodes_total: int
    inodes_free: int


@dataclass
class ContainerReading:
    ctr: ContainerRecord
    cgroup: cgroup_metrics.CgroupMetrics | None
    processes: int
    fds: int
    sockets: int
    fs: FilesystemReading | None


@dataclass
class PodReading:
    pod: SandboxRecord
    timestamp_ns: int
    interfaces: list[container_stats.InterfaceUsage] = field(default_factory=list)
    containers: list[ContainerReading] = field(default_factory=list)


def open_files(pids: list[int]) -> tuple[int, int]:
    """Blocking. (file descriptors, of which sockets) of `pids`."""
    fds = sockets = 0
    for pid in pids:
        base = f"/proc/{pid}/fd"
        try:
            names = os.listdir(base)
        except OSError:
            continue
        fds += len(names)
        for n in names:
            try:
                if os.readlink(f"{base}/{n}").startswith("socket:"):
                    sockets += 1
            except OSError:
                pass
    return fds, sockets


def _mount_sources() -> dict[int, str]:
    """st_dev -> the mount source of the filesystem (/dev/sda1, overlay)."""
    out: dict[int, str] = {}
    try:
        with open("/proc/self/mountinfo") as f:
            lines = f.read().splitlines()
    except OSError:
        return out
    for line in lines:
        fields = line.split()
        try:
            sep = fields.index("-")
            major, minor = fields[2].split(":")
            out.setdefault(os.makedev(int(major), int(minor)), fields[sep + 2])
        except (ValueError, IndexError):
            continue
    return out


def filesystem(upper: Path, sources: dict[int, str]) -> FilesystemReading | None:
    """Blocking. The writable layer's usage and the filesystem it is on."""
    layer = container_stats.layer_usage(upper)
    if layer is None:
        return None
    try:
        st, vfs = os.stat(upper), os.statvfs(upper)
    except OSError:
        return None
    device = sources.get(st.st_dev) or f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
    return FilesystemReading(device, layer.used_bytes, layer.inodes_used, vfs.f_blocks * vfs.f_frsize,
                             vfs.f_files, vfs.f_ffree)


class PodMetricsSampler:
    def __init__(self, index: RecordIndex, cgroups: CgroupManager | None) -> None:
        self._index = index
        self._cgroups = cgroups

    async def pods(self) -> list[PodReading]:
        """Every ready pod, oldest first."""
        pods = sorted((p for p in self._index.sandboxes.values() if p.state == PodState.READY),
                      key=lambda p: p.created_at)
        jobs = [(p, self._live_pids(p), [c for c in self._index.containers_of(p.id)
                                         if c.state == ContainerState.RUNNING]) for p in pods]
        return await asyncio.to_thread(self._read_all, jobs)

    def _live_pids(self, rec: SandboxRecord) -> list[int]:
        if rec.host_network:
            return []
        pinned = pinned_of(rec)
        pids = [pinned.infra_pid] if pinned.infra_pid and namespaces.infra_alive(pinned) else []
        return pids + [c.pid for c in self._index.containers_of(rec.id)
                       if c.state == ContainerState.RUNNING and c.pid]

    def _read_all(self, jobs: list[tuple[SandboxRecord, list[int], list[ContainerRecord]]]) -> list[PodReading]:
        """Blocking: one thread hop for every pod."""
        sources = _mount_sources()
        out = []
        for pod, pids, ctrs in jobs:
            reading = PodReading(pod, time.time_ns())
            for pid in pids:
                counters = container_stats.network_usage(pid)
                if counters is not None:
                    reading.interfaces = counters
                    break
            reading.containers = [self._container(c, sources) for c in ctrs]
            out.append(reading)
        return out

    def _container(self, ctr: ContainerRecord, sources: dict[int, str]) -> ContainerReading:
        cg = None
        procs: list[int] = []
        if self._cgroups is not None and ctr.cgroup_path:
            try:
                cg = cgroup_metrics.read(self._cgroups, ctr.cgroup_path)
                procs = self._cgroups.pids(ctr.cgroup_path) if cg is not None else []
            except (OSError, ValueError):
                cg = None
        fds, sockets = open_files(procs)
        fs = filesystem(Path(ctr.container_dir) / "upper", sources) if ctr.container_dir else None
        return ContainerReading(ctr, cg, len(procs), fds, sockets, fs)
