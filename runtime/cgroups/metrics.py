"""The detailed readings of one cgroup that the CRI metrics RPCs report
(cAdvisor's set): CPU split and throttling, memory by kind, page faults,
failure counts, tasks, block I/O per device and the limits set. Both
layouts give the same record; a value the kernel does not offer is None.
crispy explain's cgroup section is arranged from this record too
(runtime/explain/cgroup.py), read with `tolerant` set.

Blocking (cgroupfs reads); the daemon calls it through asyncio.to_thread.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from runtime.cgroups.manager import CgroupManager, read_flat_keyed, read_int, read_text, v1_limit
from runtime.cgroups.v1 import V1Manager
from runtime.cgroups.v2 import V2Manager, weight_to_shares

# cpuacct.stat counts in USER_HZ ticks.
_TICK_NS = 1_000_000_000 // os.sysconf("SC_CLK_TCK")


@dataclass
class DeviceIo:
    major: int
    minor: int
    read_bytes: int = 0
    write_bytes: int = 0
    reads: int = 0
    writes: int = 0


@dataclass
class CgroupMetrics:
    timestamp_ns: int
    cpu_usage_ns: int | None = None
    cpu_user_ns: int | None = None
    cpu_system_ns: int | None = None
    cfs_periods: int | None = None
    cfs_throttled_periods: int | None = None
    cfs_throttled_ns: int | None = None
    memory_usage: int | None = None
    memory_max_usage: int | None = None
    memory_working_set: int | None = None
    memory_rss: int | None = None
    memory_cache: int | None = None
    memory_mapped_file: int | None = None
    memory_kernel: int | None = None
    memory_swap: int | None = None
    memory_failcnt: int | None = None
    # page faults of the cgroup alone and of it with its descendants
    pgfault: int | None = None
    pgmajfault: int | None = None
    pgfault_hierarchy: int | None = None
    pgmajfault_hierarchy: int | None = None
    oom_events: int | None = None  # OOM kills (cAdvisor's name)
    # v2 memory.events "oom": times memory.max was hit and reclaim failed
    ooms: int | None = None
    under_oom: int | None = None  # v1 memory.oom_control: 1 while stuck at the limit
    pids_current: int | None = None
    tasks: list[int] = field(default_factory=list)  # thread ids (v1 tasks, v2 cgroup.threads)
    threads_max: int | None = None  # None = no limit
    cpu_period: int | None = None
    cpu_quota: int | None = None  # None = no limit
    cpu_shares: int | None = None
    cpu_weight: int | None = None  # v2 only (cpu_shares holds it as shares)
    memory_limit: int | None = None  # None = no limit
    memory_swap_limit: int | None = None
    memory_reservation: int | None = None  # soft limit (v1) or memory.low (v2); None = none
    memory_high: int | None = None  # v2 memory.high; None = no limit (v1 has none)
    io: list[DeviceIo] = field(default_factory=list)


def read(mgr: CgroupManager, path: str) -> CgroupMetrics | None:
    """The cgroup's readings, None when it does not exist."""
    if not mgr.exists(path):
        return None
    if isinstance(mgr, V2Manager):
        return read_v2(mgr.root / mgr.rel(path))
    if isinstance(mgr, V1Manager):
        rel = mgr.rel(path)
        return read_v1({c: base / rel for c, base in mgr.hierarchies.items()})
    return None


def _ids(text: str | None) -> list[int]:
    return [int(t) for t in (text or "").split() if t.isdigit()]


def read_v1(dirs: dict[str, Path], tolerant: bool = False) -> CgroupMetrics:
    """`dirs`: controller ("cpu", "cpuacct", "memory", "pids", "blkio") ->
    the cgroup's directory in that hierarchy. `tolerant`: see read_text."""
    num, keyed = partial(read_int, tolerant=tolerant), partial(read_flat_keyed, tolerant=tolerant)
    text = partial(read_text, tolerant=tolerant)
    m = CgroupMetrics(timestamp_ns=time.time_ns())
    acct = dirs.get("cpuacct")
    if acct is not None:
        m.cpu_usage_ns = num(acct / "cpuacct.usage")
        st = keyed(acct / "cpuacct.stat")
        if "user" in st:
            m.cpu_user_ns = st["user"] * _TICK_NS
        if "system" in st:
            m.cpu_system_ns = st["system"] * _TICK_NS
    cpu = dirs.get("cpu")
    if cpu is not None:
        st = keyed(cpu / "cpu.stat")
        m.cfs_periods = st.get("nr_periods")
        m.cfs_throttled_periods = st.get("nr_throttled")
        m.cfs_throttled_ns = st.get("throttled_time")
        m.cpu_period = num(cpu / "cpu.cfs_period_us")
        quota = num(cpu / "cpu.cfs_quota_us")
        m.cpu_quota = quota if quota is not None and quota > 0 else None
        m.cpu_shares = num(cpu / "cpu.shares")
    mem = dirs.get("memory")
    if mem is not None:
        usage = num(mem / "memory.usage_in_bytes")
        ms = keyed(mem / "memory.stat")
        m.memory_usage = usage
        m.memory_max_usage = num(mem / "memory.max_usage_in_bytes")
        if usage is not None:
            m.memory_working_set = max(usage - ms.get("total_inactive_file", ms.get("inactive_file", 0)), 0)
        m.memory_rss = ms.get("total_rss", ms.get("rss"))
        m.memory_cache = ms.get("total_cache", ms.get("cache"))
        m.memory_mapped_file = ms.get("total_mapped_file", ms.get("mapped_file"))
        m.memory_kernel = num(mem / "memory.kmem.usage_in_bytes")
        memsw = num(mem / "memory.memsw.usage_in_bytes")
        if memsw is not None and usage is not None:
            m.memory_swap = max(memsw - usage, 0)
        m.memory_failcnt = num(mem / "memory.failcnt")
        m.pgfault, m.pgmajfault = ms.get("pgfault"), ms.get("pgmajfault")
        m.pgfault_hierarchy = ms.get("total_pgfault", m.pgfault)
        m.pgmajfault_hierarchy = ms.get("total_pgmajfault", m.pgmajfault)
        oom = keyed(mem / "memory.oom_control")
        m.oom_events, m.under_oom = oom.get("oom_kill"), oom.get("under_oom")
        m.memory_limit = v1_limit(num(mem / "memory.limit_in_bytes"))
        m.memory_swap_limit = v1_limit(num(mem / "memory.memsw.limit_in_bytes"))
        m.memory_reservation = v1_limit(num(mem / "memory.soft_limit_in_bytes"))
    pids = dirs.get("pids")
    if pids is not None:
        m.threads_max = num(pids / "pids.max")
        m.pids_current = num(pids / "pids.current")
    for controller in ("pids", "memory", "cpu"):
        d = dirs.get(controller)
        if d is not None and d.is_dir():
            m.tasks = _ids(text(d / "tasks"))
            break
    blkio = dirs.get("blkio")
    if blkio is not None:
        m.io = _blkio_v1(text(blkio / "blkio.throttle.io_service_bytes_recursive"),
                         text(blkio / "blkio.throttle.io_serviced_recursive"))
    return m


def _blkio_v1(service_bytes: str | None, serviced: str | None) -> list[DeviceIo]:
    """"8:0 Read 4096" lines (and a "Total" line) per file."""
    devices: dict[tuple[int, int], DeviceIo] = {}
    for text, unit in ((service_bytes, "bytes"), (serviced, "ios")):
        for line in (text or "").splitlines():
            parts = line.split()
            if len(parts) != 3 or ":" not in parts[0]:
                continue
            major, _, minor = parts[0].partition(":")
            try:
                key, value = (int(major), int(minor)), int(parts[2])
            except ValueError:
                continue
            dev = devices.setdefault(key, DeviceIo(*key))
            op = parts[1]
            if op == "Read":
                if unit == "bytes":
                    dev.read_bytes = value
                else:
                    dev.reads = value
            elif op == "Write":
                if unit == "bytes":
                    dev.write_bytes = value
                else:
                    dev.writes = value
    return [devices[k] for k in sorted(devices)]


def read_v2(cg: Path, tolerant: bool = False) -> CgroupMetrics:
    """`tolerant`: see read_text."""
    num, keyed = partial(read_int, tolerant=tolerant), partial(read_flat_keyed, tolerant=tolerant)
    text = partial(read_text, tolerant=tolerant)
    m = CgroupMetrics(timestamp_ns=time.time_ns())
    cpu = keyed(cg / "cpu.stat")
    for key, attr in (("usage_usec", "cpu_usage_ns"), ("user_usec", "cpu_user_ns"),
                      ("system_usec", "cpu_system_ns"), ("throttled_usec", "cfs_throttled_ns")):
        if key in cpu:
            setattr(m, attr, cpu[key] * 1000)
    m.cfs_periods = cpu.get("nr_periods")
    m.cfs_throttled_periods = cpu.get("nr_throttled")
    cpu_max = (text(cg / "cpu.max") or "").split()
    if len(cpu_max) == 2:
        m.cpu_quota = int(cpu_max[0]) if cpu_max[0].isdigit() else None
        m.cpu_period = int(cpu_max[1]) if cpu_max[1].isdigit() else None
    m.cpu_weight = num(cg / "cpu.weight")
    if m.cpu_weight is not None:
        # cAdvisor reports shares on both layouts.
        m.cpu_shares = weight_to_shares(m.cpu_weight)
    usage = num(cg / "memory.current")
    ms = keyed(cg / "memory.stat")
    m.memory_usage = usage
    m.memory_max_usage = num(cg / "memory.peak")
    if usage is not None:
        m.memory_working_set = max(usage - ms.get("inactive_file", 0), 0)
    m.memory_rss = ms.get("anon")
    m.memory_cache = ms.get("file")
    m.memory_mapped_file = ms.get("file_mapped")
    m.memory_kernel = ms.get("kernel", ms.get("kernel_stack", 0) + ms.get("slab", 0) + ms.get("sock", 0)
                             if "kernel_stack" in ms else None)
    m.memory_swap = num(cg / "memory.swap.current")
    events = keyed(cg / "memory.events")
    # v2 counts hits of memory.max, not failed charges: the nearest thing.
    m.memory_failcnt = events.get("max")
    m.oom_events, m.ooms = events.get("oom_kill"), events.get("oom")
    # v2's memory.stat is hierarchical: the cgroup and its descendants alike.
    m.pgfault = m.pgfault_hierarchy = ms.get("pgfault")
    m.pgmajfault = m.pgmajfault_hierarchy = ms.get("pgmajfault")
    m.memory_limit = num(cg / "memory.max")
    m.memory_swap_limit = num(cg / "memory.swap.max")
    m.memory_reservation = num(cg / "memory.low") or None
    m.memory_high = num(cg / "memory.high")
    m.threads_max = num(cg / "pids.max")
    m.pids_current = num(cg / "pids.current")
    m.tasks = _threads_v2(cg, tolerant)
    m.io = _io_v2(text(cg / "io.stat"))
    return m


def _threads_v2(cg: Path, tolerant: bool) -> list[int]:
    """Threads of the cgroup and its children (a pod's infra leaf, a
    container's own sub-cgroups)."""
    out: list[int] = []
    for dirpath, _dirs, files in os.walk(cg):
        if "cgroup.threads" in files:
            out += _ids(read_text(Path(dirpath) / "cgroup.threads", tolerant))
    return out


def _io_v2(text: str | None) -> list[DeviceIo]:
    """"8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0" lines."""
    out = []
    for line in (text or "").splitlines():
        dev, *pairs = line.split()
        major, _, minor = dev.partition(":")
        if not major.isdigit() or not minor.isdigit():
            continue
        values = {}
        for pair in pairs:
            k, _, v = pair.partition("=")
            if v.isdigit():
                values[k] = int(v)
        out.append(DeviceIo(int(major), int(minor), values.get("rbytes", 0), values.get("wbytes", 0),
                            values.get("rios", 0), values.get("wios", 0)))
    return sorted(out, key=lambda d: (d.major, d.minor))
