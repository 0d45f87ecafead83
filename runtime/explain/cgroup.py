"""A process's cgroup as the kernel has it: which cgroup /proc/<pid>/cgroup
puts it in, its limits next to current usage (memory max/high vs current
and peak, CPU quota/period/weight vs usage and throttling, pids max vs
current, OOM kills), on v1 and v2; and where the limits differ from what
the OCI spec asked for."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from runtime.cgroups.manager import read_flat_keyed, v1_limit
from runtime.cgroups.v2 import shares_to_weight
from runtime.explain.sources import read, read_int

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

    dirs = {c: str(d) for c in ("memory", "cpu", "cpuacct", "pids", "devices") if (d := where(c)) is not None}
    facts = CgroupFacts(version=1, path=paths.get("memory") or paths.get("pids") or paths.get("cpu") or "", dirs=dirs)
    mem = where("memory")
    if mem is not None:
        oom = read_flat_keyed(mem / "memory.oom_control")
        facts.memory = {"max": v1_limit(read_int(mem / "memory.limit_in_bytes")),
                        # v1's soft limit is the nearest thing to memory.high.
                        "high": v1_limit(read_int(mem / "memory.soft_limit_in_bytes")),
                        "current": read_int(mem / "memory.usage_in_bytes"),
                        "peak": read_int(mem / "memory.max_usage_in_bytes"),
                        "swap_max": v1_limit(read_int(mem / "memory.memsw.limit_in_bytes")),
                        "oom_kills": oom.get("oom_kill"), "under_oom": oom.get("under_oom")}
    cpu = where("cpu")
    if cpu is not None:
        quota = read_int(cpu / "cpu.cfs_quota_us")
        stat = read_flat_keyed(cpu / "cpu.stat")
        facts.cpu = {"quota_us": quota if quota is not None and quota > 0 else None,
                     "period_us": read_int(cpu / "cpu.cfs_period_us"), "shares": read_int(cpu / "cpu.shares"),
                     "periods": stat.get("nr_periods"), "throttled_periods": stat.get("nr_throttled"),
                     "throttled_ns": stat.get("throttled_time")}
    acct = where("cpuacct")
    if acct is not None:
        facts.cpu["usage_ns"] = read_int(acct / "cpuacct.usage")
    pids = where("pids")
    if pids is not None:
        facts.pids = {"max": read_int(pids / "pids.max"), "current": read_int(pids / "pids.current")}
    devices = where("devices")
    if devices is not None:
        facts.devices = (read(devices / "devices.list") or "").split("\n")[:-1]
    return facts


def read_v2(path: str, unified: Path) -> CgroupFacts:
    d = unified / path.lstrip("/")
    facts = CgroupFacts(version=2, path=path, dirs={"unified": str(d)})
    events = read_flat_keyed(d / "memory.events")
    facts.memory = {"max": read_int(d / "memory.max"), "high": read_int(d / "memory.high"),
                    "current": read_int(d / "memory.current"), "peak": read_int(d / "memory.peak"),
                    "swap_max": read_int(d / "memory.swap.max"), "oom_kills": events.get("oom_kill"),
                    "oom_events": events.get("oom")}
    quota_text = (read(d / "cpu.max") or "").split()
    stat = read_flat_keyed(d / "cpu.stat")
    usage_us, throttled_us = stat.get("usage_usec"), stat.get("throttled_usec")
    facts.cpu = {"quota_us": int(quota_text[0]) if quota_text and quota_text[0].isdigit() else None,
                 "period_us": int(quota_text[1]) if len(quota_text) > 1 and quota_text[1].isdigit() else None,
                 "weight": read_int(d / "cpu.weight"), "usage_ns": usage_us * 1000 if usage_us is not None else None,
                 "periods": stat.get("nr_periods"), "throttled_periods": stat.get("nr_throttled"),
                 "throttled_ns": throttled_us * 1000 if throttled_us is not None else None}
    facts.pids = {"max": read_int(d / "pids.max"), "current": read_int(d / "pids.current")}
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
