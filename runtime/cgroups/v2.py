"""cgroup v2: one tree; a controller works in a cgroup only if every
ancestor enables it in cgroup.subtree_control."""

from __future__ import annotations

import re
import time
from pathlib import Path

from cri.proto import api_pb2 as pb
from runtime.cgroups.manager import (
    CgroupManager,
    CgroupStats,
    check_values,
    parse_pids,
    read_flat_keyed,
    read_int,
    read_psi,
    read_text,
    rmdir_tree,
    write,
    write_procs,
)
from runtime.errors import FailedPrecondition, InvalidArgument, NotFound

DEFAULT_PERIOD = 100000
INFRA_LEAF = "crispy-infra"
_UNIFIED_KEY = re.compile(r"^[a-z_]+\.[a-z0-9_.]+$")
# The controllers crispy limits; others are left as the parent has them.
WANTED = ("cpu", "cpuset", "memory", "pids", "hugetlb", "io")


def shares_to_weight(shares: int) -> int:
    """v1 cpu.shares (2..262144) onto v2 cpu.weight (1..10000), linearly,
    the mapping kubelet and the OCI runtimes agree on."""
    if shares <= 0:
        return 0
    shares = min(max(shares, 2), 262144)
    return 1 + ((shares - 2) * 9999) // 262142


def weight_to_shares(weight: int) -> int:
    if weight <= 0:
        return 0
    return 2 + ((weight - 1) * 262142) // 9999


class V2Manager(CgroupManager):
    version = 2

    def __init__(self, root: Path, driver: str = "cgroupfs") -> None:
        super().__init__(driver)
        self.root = root

    def _path(self, name: str) -> Path:
        return self.root / self.rel(name)

    def exists(self, path: str) -> bool:
        return self._path(path).is_dir()

    def create(self, path: str, resources: pb.LinuxContainerResources | None = None) -> None:
        target = self._path(path)
        target.mkdir(parents=True, exist_ok=True)
        self._enable_controllers(target)
        if resources is not None:
            self.update(path, resources)

    def _enable_controllers(self, target: Path) -> None:
        # From the root down to target's parent, so target gets the files.
        chain = [p for p in reversed(target.parents) if p == self.root or self.root in p.parents]
        for d in chain:
            available = (read_text(d / "cgroup.controllers") or "").split()
            enabled = set((read_text(d / "cgroup.subtree_control") or "").split())
            missing = [c for c in WANTED if c in available and c not in enabled]
            if missing:
                try:
                    write(d / "cgroup.subtree_control", " ".join(f"+{c}" for c in missing))
                except InvalidArgument:
                    procs = (read_text(d / "cgroup.procs") or "").split()
                    if not procs:
                        raise
                    # v2 allows no processes in a cgroup that hands controllers
                    # to children: a pod's own processes belong in a leaf.
                    raise FailedPrecondition(
                        f"cgroup {d} holds processes ({', '.join(procs[:5])}), so cgroup v2 cannot enable "
                        f"controllers below it; move them into a child cgroup first") from None

    def remove(self, path: str) -> None:
        rmdir_tree(self.root / self.rel_for_removal(path))

    def update(self, path: str, resources: pb.LinuxContainerResources) -> None:
        check_values(resources)
        cg = self._path(path)
        for key in resources.unified:
            if not _UNIFIED_KEY.match(key) or key.startswith("cgroup."):
                raise InvalidArgument(f"resources.unified key {key!r} is not a cgroup v2 controller file")
        if resources.cpu_shares:
            write(cg / "cpu.weight", str(shares_to_weight(resources.cpu_shares)))
        if resources.cpu_quota or resources.cpu_period:
            current = (read_text(cg / "cpu.max") or f"max {DEFAULT_PERIOD}").split()
            quota = (current[0] if resources.cpu_quota == 0
                     else "max" if resources.cpu_quota < 0 else str(resources.cpu_quota))
            period = (str(resources.cpu_period) if resources.cpu_period
                      else current[1] if len(current) > 1 else str(DEFAULT_PERIOD))
            write(cg / "cpu.max", f"{quota} {period}")
        if resources.cpuset_mems:
            write(cg / "cpuset.mems", resources.cpuset_mems)
        if resources.cpuset_cpus:
            write(cg / "cpuset.cpus", resources.cpuset_cpus)
        if resources.memory_limit_in_bytes:
            write(cg / "memory.max", str(resources.memory_limit_in_bytes))
        if resources.memory_swap_limit_in_bytes:
            # CRI's swap limit is memory plus swap; v2 limits swap alone.
            if resources.memory_swap_limit_in_bytes < 0:
                swap = "max"
            else:
                limit = resources.memory_limit_in_bytes or read_int(cg / "memory.max")
                if limit is None:
                    raise InvalidArgument("a swap limit needs a memory limit on cgroup v2")
                swap = str(max(resources.memory_swap_limit_in_bytes - limit, 0))
            if (cg / "memory.swap.max").exists():
                write(cg / "memory.swap.max", swap)
        for h in resources.hugepage_limits:
            write(cg / f"hugetlb.{h.page_size}.max", str(h.limit))
        for key, value in resources.unified.items():
            write(cg / key, value)

    def read_resources(self, path: str) -> pb.LinuxContainerResources:
        cg = self._path(path)
        r = pb.LinuxContainerResources()
        r.cpu_shares = weight_to_shares(read_int(cg / "cpu.weight") or 0)
        cpu_max = (read_text(cg / "cpu.max") or "").split()
        if len(cpu_max) == 2:
            r.cpu_quota = int(cpu_max[0]) if cpu_max[0] != "max" else 0
            r.cpu_period = int(cpu_max[1])
        r.cpuset_cpus = (read_text(cg / "cpuset.cpus") or "").strip()
        r.cpuset_mems = (read_text(cg / "cpuset.mems") or "").strip()
        limit = read_int(cg / "memory.max")
        r.memory_limit_in_bytes = limit or 0
        swap = read_int(cg / "memory.swap.max")
        if limit is not None and swap is not None:
            r.memory_swap_limit_in_bytes = limit + swap
        for f in sorted(cg.glob("hugetlb.*.max")):
            if f.name.endswith(".rsvd.max"):
                continue
            value = read_int(f)
            r.hugepage_limits.append(pb.HugepageLimit(page_size=f.name.split(".")[1],
                                                      limit=value if value is not None else 0xFFFFFFFFFFFFFFFF))
        return r

    def stats(self, path: str) -> CgroupStats:
        cg = self._path(path)
        st = CgroupStats(timestamp_ns=time.time_ns())
        cpu = read_flat_keyed(cg / "cpu.stat")
        if "usage_usec" in cpu:
            st.cpu_usage_ns = cpu["usage_usec"] * 1000
        usage = read_int(cg / "memory.current")
        ms = read_flat_keyed(cg / "memory.stat")
        st.memory_usage_bytes = usage
        if usage is not None:
            st.memory_working_set_bytes = max(usage - ms.get("inactive_file", 0), 0)
        st.memory_rss_bytes = ms.get("anon")
        st.page_faults = ms.get("pgfault")
        st.major_page_faults = ms.get("pgmajfault")
        st.memory_limit_bytes = read_int(cg / "memory.max")
        st.swap_usage_bytes = read_int(cg / "memory.swap.current")
        st.pids_current = read_int(cg / "pids.current")
        events = read_flat_keyed(cg / "memory.events")
        st.oom_kills = events.get("oom_kill")
        for resource in ("cpu", "memory", "io"):
            psi = read_psi(cg / f"{resource}.pressure")
            if psi:
                st.psi[resource] = psi
        return st

    def oom_killed(self, path: str) -> bool:
        events = read_flat_keyed(self._path(path) / "memory.events")
        return events.get("oom_kill", 0) > 0 or events.get("oom_group_kill", 0) > 0

    def add_process(self, path: str, pid: int) -> None:
        """v2 lets no cgroup both hold processes and hand controllers to
        children, and a pod's containers are its children: so a process
        added to a pod cgroup goes into the leaf `INFRA_LEAF` below it."""
        parent = self._path(path)
        if not parent.is_dir():
            raise NotFound(f"cgroup {parent} does not exist; create it first")
        leaf = parent / INFRA_LEAF
        leaf.mkdir(exist_ok=True)
        self._enable_controllers(leaf)
        write_procs(leaf / "cgroup.procs", pid)

    def pids(self, path: str) -> list[int]:
        return parse_pids(read_text(self._path(path) / "cgroup.procs"))
