"""Container resource usage for ContainerStats and ListContainerStats:
the container's cgroup (CPU, memory, swap) and its writable layer.

CPU rate (usage_nano_cores) needs two readings; the previous one per
container is kept by the caller (the manager) and passed in.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from runtime.cgroups.manager import CgroupManager, CgroupStats
from runtime.store import ContainerRecord


@dataclass
class CpuSample:
    timestamp_ns: int
    usage_ns: int


@dataclass
class LayerUsage:
    used_bytes: int
    inodes_used: int


@dataclass
class ContainerUsage:
    timestamp_ns: int
    cgroup: CgroupStats | None  # None once the cgroup is gone
    nano_cores: int | None
    layer: LayerUsage | None
    layer_mountpoint: str


def layer_usage(upper: Path) -> LayerUsage | None:
    """Blocking: walks the container's upper dir (what it wrote)."""
    if not upper.is_dir():
        return None
    used = inodes = 0
    for dirpath, dirnames, filenames in os.walk(upper):
        for name in (*dirnames, *filenames):
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            inodes += 1
            used += st.st_blocks * 512
    return LayerUsage(used, inodes)


def nano_cores(previous: CpuSample | None, current: CpuSample) -> int | None:
    if previous is None or current.timestamp_ns <= previous.timestamp_ns or current.usage_ns < previous.usage_ns:
        return None
    return (current.usage_ns - previous.usage_ns) * 1_000_000_000 // (current.timestamp_ns - previous.timestamp_ns)


@dataclass
class CgroupUsage:
    timestamp_ns: int
    cgroup: CgroupStats | None
    nano_cores: int | None
    process_count: int | None


def collect_cgroup(cgroups: CgroupManager | None, path: str,
                   previous: CpuSample | None) -> tuple[CgroupUsage, CpuSample | None]:
    """Blocking. A pod's cgroup: usage, CPU rate and process count."""
    stats = None
    if cgroups is not None and path:
        try:
            if cgroups.exists(path):
                stats = cgroups.stats(path)
        except (OSError, ValueError):
            stats = None
    if stats is None or cgroups is None:
        return CgroupUsage(time.time_ns(), None, None, None), None
    sample = CpuSample(stats.timestamp_ns, stats.cpu_usage_ns) if stats.cpu_usage_ns is not None else None
    rate = nano_cores(previous, sample) if sample is not None else None
    procs = stats.pids_current
    if procs is None:
        try:
            procs = len(cgroups.pids(path))
        except (OSError, ValueError):
            procs = None
    return CgroupUsage(stats.timestamp_ns, stats, rate, procs), sample


def collect(cgroups: CgroupManager | None, ctr: ContainerRecord,
            previous: CpuSample | None) -> tuple[ContainerUsage, CpuSample | None]:
    """Blocking. Returns the usage and the CPU sample to keep for next time."""
    stats = None
    if cgroups is not None and ctr.cgroup_path and ctr.state == "running":
        try:
            if cgroups.exists(ctr.cgroup_path):
                stats = cgroups.stats(ctr.cgroup_path)
        except (OSError, ValueError):
            stats = None
    sample = None
    rate = None
    if stats is not None and stats.cpu_usage_ns is not None:
        sample = CpuSample(stats.timestamp_ns, stats.cpu_usage_ns)
        rate = nano_cores(previous, sample)
    upper = Path(ctr.container_dir) / "upper"
    timestamp = stats.timestamp_ns if stats is not None else time.time_ns()
    return ContainerUsage(timestamp, stats, rate, layer_usage(upper), str(upper.parent)), sample


@dataclass
class InterfaceUsage:
    name: str
    rx_bytes: int
    rx_packets: int
    rx_errors: int
    rx_dropped: int
    tx_bytes: int
    tx_packets: int
    tx_errors: int
    tx_dropped: int


def parse_net_dev(text: str) -> list[InterfaceUsage]:
    """/proc/<pid>/net/dev: two header lines, then `name: 16 counters`
    (receive: bytes packets errs drop ..., transmit from the 9th on)."""
    out = []
    for line in text.splitlines()[2:]:
        name, sep, rest = line.partition(":")
        f = rest.split()
        if not sep or len(f) < 16 or not all(x.isdigit() for x in f[:12]):
            continue
        out.append(InterfaceUsage(name.strip(), int(f[0]), int(f[1]), int(f[2]), int(f[3]),
                                  int(f[8]), int(f[9]), int(f[10]), int(f[11])))
    return out


def network_usage(pid: int) -> list[InterfaceUsage] | None:
    """Blocking. The interfaces of the network namespace `pid` is in,
    loopback left out (kubelet reports the pod's traffic, not lo's)."""
    try:
        with open(f"/proc/{pid}/net/dev") as f:
            text = f.read()
    except OSError:
        return None
    return [i for i in parse_net_dev(text) if i.name != "lo"]
