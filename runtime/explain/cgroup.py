"""A process's cgroup as the kernel has it: which cgroup /proc/<pid>/cgroup
puts it in, its limits next to current usage (memory max/high vs current
and peak, CPU quota/period/weight vs usage and throttling, pids max vs
current, OOM kills), on v1 and v2; and where the limits differ from what
the OCI spec asked for. The files are read and parsed once, by the CRI
metrics' reading (runtime/cgroups/metrics.py); here they are arranged and
compared."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from runtime.cgroups import metrics
from runtime.cgroups.v2 import shares_to_weight
from runtime.explain.sources import read

PAGE = 4096


@dataclass
class CgroupFacts:
    version: int
    path: str  # the process's cgroup ("" when it has none: gone)
    dirs: dict[str, str]  # controller (v1) or "unified" -> directory read
    memory: dict[str, int | None] = field(default_factory=dict)
    cpu: dict[str, int | None] = field(default_factory=dict)
    pids: dict[str, int | None] = field(default_factory=dict)
    devices: list[str] = field(default_factory=list)  # v1 devices.list lines
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """Sans-IO: /proc/<pid>/cgroup as controller -> path; the v2 line
    ("0::/path") is under "unified"; co-mounted controllers each get theirs."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[0] == "0" and not parts[1]:
            out["unified"] = parts[2]
            continue
        for controller in parts[1].split(","):
            out[controller] = parts[2]
    return out


def read_v1(paths: dict[str, str], hierarchies: dict[str, Path]) -> CgroupFacts:
    """`paths` from parse_proc_cgroup; `hierarchies`: controller -> mount."""
    def where(controller: str) -> Path | None:
        base, rel = hierarchies.get(controller), paths.get(controller)
        return base / rel.lstrip("/") if base is not None and rel is not None else None

    dirs = {c: d for c in ("memory", "cpu", "cpuacct", "pids", "devices") if (d := where(c)) is not None}
    facts = CgroupFacts(version=1, path=paths.get("memory") or paths.get("pids") or paths.get("cpu") or "",
                        dirs={c: str(d) for c, d in dirs.items()})
    m = metrics.read_v1(dirs, tolerant=True)
    if "memory" in dirs:
        facts.memory = {"max": m.memory_limit,
                        # v1's soft limit is the nearest thing to memory.high.
                        "high": m.memory_reservation,
                        "current": m.memory_usage, "peak": m.memory_max_usage, "swap_max": m.memory_swap_limit,
                        "oom_kills": m.oom_events, "under_oom": m.under_oom}
    if "cpu" in dirs:
        facts.cpu = {"quota_us": m.cpu_quota, "period_us": m.cpu_period, "shares": m.cpu_shares,
                     "periods": m.cfs_periods, "throttled_periods": m.cfs_throttled_periods,
                     "throttled_ns": m.cfs_throttled_ns}
    if "cpuacct" in dirs:
        facts.cpu["usage_ns"] = m.cpu_usage_ns
    if "pids" in dirs:
        facts.pids = {"max": m.threads_max, "current": m.pids_current}
    if "devices" in dirs:
        # Only explain reads devices.list; the CRI metrics have no use for it.
        facts.devices = (read(dirs["devices"] / "devices.list") or "").split("\n")[:-1]
    return facts


def read_v2(path: str, unified: Path) -> CgroupFacts:
    d = unified / path.lstrip("/")
    facts = CgroupFacts(version=2, path=path, dirs={"unified": str(d)})
    m = metrics.read_v2(d, tolerant=True)
    facts.memory = {"max": m.memory_limit, "high": m.memory_high, "current": m.memory_usage,
                    "peak": m.memory_max_usage, "swap_max": m.memory_swap_limit, "oom_kills": m.oom_events,
                    "oom_events": m.ooms}
    facts.cpu = {"quota_us": m.cpu_quota, "period_us": m.cpu_period, "weight": m.cpu_weight,
                 "usage_ns": m.cpu_usage_ns, "periods": m.cfs_periods, "throttled_periods": m.cfs_throttled_periods,
                 "throttled_ns": m.cfs_throttled_ns}
    facts.pids = {"max": m.threads_max, "current": m.pids_current}
    return facts


def compare(facts: CgroupFacts, requested: dict[str, Any]) -> list[str]:
    """Where the kernel's limits differ from the spec's `linux.resources`
    (OCI names: memory.limit, cpu.quota/period/shares, pids.limit)."""
    out = []
    mem_req = (requested.get("memory") or {}).get("limit")
    if mem_req and mem_req > 0 and facts.memory:
        have = facts.memory.get("max")
        if have is None:
            out.append(f"memory limit NOT applied: the spec asks for {mem_req} bytes, the cgroup has no limit")
        elif abs(have - mem_req) >= PAGE:  # the kernel rounds down to pages
            out.append(f"memory limit differs: the spec asks for {mem_req} bytes, the cgroup has {have}")
    cpu_req = requested.get("cpu") or {}
    if facts.cpu:
        quota = cpu_req.get("quota")
        if quota and quota > 0 and facts.cpu.get("quota_us") != quota:
            out.append(f"CPU quota differs: the spec asks for {quota}us per period, "
                       f"the cgroup has {facts.cpu.get('quota_us') or 'none'}")
        period = cpu_req.get("period")
        if quota and quota > 0 and period and facts.cpu.get("period_us") != period:
            out.append(f"CPU period differs: the spec asks for {period}us, the cgroup has {facts.cpu.get('period_us')}")
        shares = cpu_req.get("shares")
        if shares:
            if facts.version == 1 and facts.cpu.get("shares") not in (shares, max(shares, 2)):
                out.append(f"CPU shares differ: the spec asks for {shares}, the cgroup has {facts.cpu.get('shares')}")
            if facts.version == 2 and facts.cpu.get("weight") != shares_to_weight(shares):
                out.append(f"CPU weight differs: the spec's shares {shares} make weight {shares_to_weight(shares)}, "
                           f"the cgroup has {facts.cpu.get('weight')}")
    pids_req = (requested.get("pids") or {}).get("limit")
    if pids_req and pids_req > 0 and facts.pids and facts.pids.get("max") != pids_req:
        out.append(f"pids limit differs: the spec asks for {pids_req}, the cgroup has {facts.pids.get('max') or 'max'}")
    return out
