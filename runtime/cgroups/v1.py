"""cgroup v1: one hierarchy per controller (or per co-mounted group, such as
"cpu,cpuacct"); a cgroup is the same relative directory in each of them.
On a hybrid host the v2 tree is one more hierarchy that holds processes."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from cri.proto import api_pb2 as pb
from runtime.cgroups.manager import (
    V1_UNLIMITED,
    CgroupManager,
    CgroupStats,
    check_values,
    parse_pids,
    read_flat_keyed,
    read_int,
    read_text,
    rmdir_tree,
    v1_limit,
    write,
    write_procs,
)
from runtime.errors import InvalidArgument, NotFound

log = logging.getLogger("crispy.cgroups")


def _unescape(field: str) -> str:
    return field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def mounted_hierarchies(root: Path, mountinfo: str = "/proc/self/mountinfo",
                        proc_cgroups: str = "/proc/cgroups") -> dict[str, Path]:
    """controller name -> mount point, for the v1 hierarchies the kernel
    really has mounted right below `root` (a directory left behind by an
    unmounted hierarchy is not one)."""
    try:
        with open(proc_cgroups) as f:
            subsystems = {line.split()[0] for line in f if line.strip() and not line.startswith("#")}
        with open(mountinfo) as f:
            lines = f.readlines()
    except OSError:
        return {}
    out: dict[str, Path] = {}
    for line in lines:
        fields = line.split()
        try:
            sep = fields.index("-")
        except ValueError:
            continue
        if len(fields) < sep + 4 or fields[sep + 1] != "cgroup":
            continue
        mnt = Path(_unescape(fields[4]))
        if mnt.parent != root:
            continue
        for opt in fields[sep + 3].split(","):
            if opt in subsystems or opt.startswith("name="):
                out[opt] = mnt
    return out


def find_hierarchies(root: Path) -> dict[str, Path]:
    """controller name -> mount directory. From the mount table when `root`
    has cgroup mounts in it, else (fixture trees) from the directories under
    `root`: "cpu,cpuacct" serves both, "systemd" is the named hierarchy."""
    mounted = mounted_hierarchies(root)
    if mounted:
        return mounted
    out: dict[str, Path] = {}
    try:
        entries = sorted(root.iterdir())
    except FileNotFoundError:
        return out
    for entry in entries:
        if entry.name == "unified" or not entry.is_dir():
            continue
        if not (entry / "cgroup.procs").exists():
            continue
        for name in entry.name.split(","):
            controller = "name=systemd" if name == "systemd" else name
            # Prefer the real directory over a symlink to it.
            if controller not in out or not entry.is_symlink():
                out[controller] = entry
    return out


class V1Manager(CgroupManager):
    version = 1

    def __init__(self, root: Path, driver: str = "cgroupfs", unified: Path | None = None) -> None:
        super().__init__(driver)
        self.root = root
        self.hierarchies = find_hierarchies(root)
        self.unified = unified
        # Each distinct hierarchy once ("cpu" and "cpuacct" may both be
        # "cpu,cpuacct"), resolved once: every cgroup operation walks them,
        # some (moving a process) on the way to a container's start.
        self._distinct: list[Path] = []
        resolved: set[Path] = set()
        for p in self.hierarchies.values():
            real = p.resolve()
            if real not in resolved:
                resolved.add(real)
                self._distinct.append(p)

    @staticmethod
    def _live(base: Path) -> bool:
        # A hierarchy unmounted since start leaves a plain directory behind;
        # writing there would only make junk.
        return (base / "cgroup.procs").exists()

    def _dirs(self) -> list[Path]:
        """Every distinct live hierarchy (co-mounted controllers once)."""
        seen = [p for p in self._distinct if self._live(p)]
        if self.unified is not None and self._live(self.unified):
            seen.append(self.unified)
        return seen

    def _path(self, controller: str, name: str) -> Path | None:
        base = self.hierarchies.get(controller)
        return base / self.rel(name) if base is not None and self._live(base) else None

    def exists(self, path: str) -> bool:
        p = self._path("memory", path) or self._path("pids", path)
        return bool(p and p.is_dir())

    def create(self, path: str, resources: pb.LinuxContainerResources | None = None) -> None:
        rel = self.rel(path)
        for base in self._dirs():
            (base / rel).mkdir(parents=True, exist_ok=True)
        # A new v1 cpuset starts with no CPUs and no memory nodes, and no task
        # may join it until both are set: fill them from the nearest parent.
        cpuset = self.hierarchies.get("cpuset")
        if cpuset is not None:
            self._init_cpuset(cpuset, cpuset / rel)
        if resources is not None:
            self.update(path, resources)

    def _init_cpuset(self, base: Path, target: Path) -> None:
        chain = []
        p = target
        while p != base and base in p.parents:
            chain.append(p)
            p = p.parent
        for d in reversed(chain):
            for f in ("cpuset.cpus", "cpuset.mems"):
                if (read_text(d / f) or "").strip() == "" and (d / f).exists():
                    parent = (read_text(d.parent / f) or "").strip()
                    if parent:
                        write(d / f, parent)

    def remove(self, path: str) -> None:
        rel = self.rel_for_removal(path)
        for base in self._dirs():
            rmdir_tree(base / rel)

    def update(self, path: str, resources: pb.LinuxContainerResources) -> None:
        check_values(resources)
        if resources.unified:
            raise InvalidArgument(
                f"resources.unified ({', '.join(sorted(resources.unified))}) needs cgroup v2, "
                "but this node runs cgroup v1")
        cpu = self._path("cpu", path)
        if cpu is not None:
            if resources.cpu_shares:
                write(cpu / "cpu.shares", str(resources.cpu_shares))
            period, quota = resources.cpu_period, resources.cpu_quota
            if period or quota:
                writes = []
                if period:
                    writes.append(("cpu.cfs_period_us", str(period)))
                if quota:
                    writes.append(("cpu.cfs_quota_us", str(quota)))
                self._write_either_order(cpu, writes)
        cpuset = self._path("cpuset", path)
        if cpuset is not None:
            if resources.cpuset_mems:
                write(cpuset / "cpuset.mems", resources.cpuset_mems)
            if resources.cpuset_cpus:
                write(cpuset / "cpuset.cpus", resources.cpuset_cpus)
        mem = self._path("memory", path)
        if mem is not None:
            writes = []
            if resources.memory_limit_in_bytes:
                writes.append(("memory.limit_in_bytes", str(resources.memory_limit_in_bytes)))
            memsw = mem / "memory.memsw.limit_in_bytes"
            if resources.memory_swap_limit_in_bytes and memsw.exists():
                writes.append(("memory.memsw.limit_in_bytes", str(resources.memory_swap_limit_in_bytes)))
            elif resources.memory_limit_in_bytes and memsw.exists():
                # A raised memory limit alone must not trip over an older
                # memsw limit (which may not be below it): lift memsw with it,
                # keeping "no swap" when that is what it meant.
                current = read_int(memsw)
                if current is not None and current < V1_UNLIMITED and resources.memory_limit_in_bytes > current:
                    writes.insert(0, ("memory.memsw.limit_in_bytes", str(resources.memory_limit_in_bytes)))
            # memsw may never be below the memory limit: the order that works
            # depends on whether the limits go up or down.
            self._write_either_order(mem, writes)
        if resources.hugepage_limits:
            hugetlb = self._path("hugetlb", path)
            if hugetlb is None:
                # kubelet sends a (zero) limit for every page size the node
                # has, whatever the pod asks; refusing would fail every update
                # on hosts without a v1 hugetlb hierarchy. Like runc, skip it:
                # read_resources then reports no hugepage limits, the truth.
                log.warning("hugetlb controller not mounted as cgroup v1; hugepage limits not applied",
                            extra={"fields": {"cgroup": path}})
            else:
                for h in resources.hugepage_limits:
                    write(hugetlb / f"hugetlb.{h.page_size}.limit_in_bytes", str(h.limit))

    @staticmethod
    def _write_either_order(base: Path, writes: list[tuple[str, str]]) -> None:
        try:
            for f, v in writes:
                write(base / f, v)
        except InvalidArgument:
            if len(writes) < 2:
                raise
            for f, v in reversed(writes):
                write(base / f, v)

    def read_resources(self, path: str) -> pb.LinuxContainerResources:
        r = pb.LinuxContainerResources()
        cpu = self._path("cpu", path)
        if cpu is not None:
            r.cpu_shares = read_int(cpu / "cpu.shares") or 0
            r.cpu_period = read_int(cpu / "cpu.cfs_period_us") or 0
            quota = read_int(cpu / "cpu.cfs_quota_us")
            r.cpu_quota = quota if quota is not None and quota > 0 else 0
        cpuset = self._path("cpuset", path)
        if cpuset is not None:
            r.cpuset_cpus = (read_text(cpuset / "cpuset.cpus") or "").strip()
            r.cpuset_mems = (read_text(cpuset / "cpuset.mems") or "").strip()
        mem = self._path("memory", path)
        if mem is not None:
            limit = read_int(mem / "memory.limit_in_bytes")
            r.memory_limit_in_bytes = limit if limit is not None and limit < V1_UNLIMITED else 0
            swap = read_int(mem / "memory.memsw.limit_in_bytes")
            r.memory_swap_limit_in_bytes = swap if swap is not None and swap < V1_UNLIMITED else 0
        hugetlb = self._path("hugetlb", path)
        if hugetlb is not None and hugetlb.is_dir():
            for f in sorted(hugetlb.glob("hugetlb.*.limit_in_bytes")):
                if f.name.count(".") != 2:
                    continue  # hugetlb.2MB.rsvd.limit_in_bytes: reservations, not the limit
                size = f.name.split(".")[1]
                limit = read_int(f)
                if limit is not None:
                    r.hugepage_limits.append(pb.HugepageLimit(page_size=size, limit=limit))
        return r

    def stats(self, path: str) -> CgroupStats:
        st = CgroupStats(timestamp_ns=time.time_ns())
        acct = self._path("cpuacct", path)
        if acct is not None:
            st.cpu_usage_ns = read_int(acct / "cpuacct.usage")
        mem = self._path("memory", path)
        if mem is not None:
            usage = read_int(mem / "memory.usage_in_bytes")
            ms = read_flat_keyed(mem / "memory.stat")
            st.memory_usage_bytes = usage
            if usage is not None:
                inactive = ms.get("total_inactive_file", ms.get("inactive_file", 0))
                st.memory_working_set_bytes = max(usage - inactive, 0)
            st.memory_rss_bytes = ms.get("total_rss", ms.get("rss"))
            st.page_faults = ms.get("total_pgfault", ms.get("pgfault"))
            st.major_page_faults = ms.get("total_pgmajfault", ms.get("pgmajfault"))
            limit = read_int(mem / "memory.limit_in_bytes")
            st.memory_limit_bytes = v1_limit(limit)
            memsw = read_int(mem / "memory.memsw.usage_in_bytes")
            if memsw is not None and usage is not None:
                st.swap_usage_bytes = max(memsw - usage, 0)
            st.oom_kills = read_flat_keyed(mem / "memory.oom_control").get("oom_kill")
        pids = self._path("pids", path)
        if pids is not None:
            st.pids_current = read_int(pids / "pids.current")
        return st

    def oom_killed(self, path: str) -> bool:
        mem = self._path("memory", path)
        if mem is None:
            return False
        return read_flat_keyed(mem / "memory.oom_control").get("oom_kill", 0) > 0

    def add_process(self, path: str, pid: int) -> None:
        rel = self.rel(path)
        for base in self._dirs():
            target = base / rel
            if not target.is_dir():
                raise NotFound(f"cgroup {target} does not exist; create it first")
            write_procs(target / "cgroup.procs", pid)

    def pids(self, path: str) -> list[int]:
        for controller in ("pids", "memory", "cpu", "name=systemd"):
            p = self._path(controller, path)
            if p is not None and p.is_dir():
                return parse_pids(read_text(p / "cgroup.procs"))
        return []
