"""Timers, percentiles and memory read from /proc.

Percentiles use linear interpolation between closest ranks (the same
definition as numpy's default), so small sample sets give stable values.
"""

from __future__ import annotations

import math
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

PROC = Path("/proc")


def percentile(samples: list[float], q: float) -> float:
    if not samples:
        raise ValueError("percentile of no samples")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is outside 0..100")
    ordered = sorted(samples)
    pos = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


@dataclass
class Summary:
    n: int
    p50: float
    p95: float
    max: float
    mean: float

    @classmethod
    def of(cls, samples: list[float]) -> "Summary":
        return cls(len(samples), percentile(samples, 50), percentile(samples, 95), max(samples),
                   sum(samples) / len(samples))


def ratio(ours: float | None, theirs: float | None) -> float | None:
    """ours/theirs, or None when either side is missing or theirs is zero."""
    if ours is None or theirs is None or theirs == 0:
        return None
    return ours / theirs


class Stopwatch:
    """Wall-clock seconds of a block: `with sw: ...; sw.seconds`."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def __enter__(self) -> "Stopwatch":
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._t0


@contextmanager
def timed(into: list[float]) -> Iterator[None]:
    t0 = time.perf_counter()
    yield
    into.append(time.perf_counter() - t0)


# ---- memory -----------------------------------------------------------------

@dataclass
class ProcMem:
    pid: int
    comm: str
    rss_kib: int
    pss_kib: int


def _status_field(pid: int, name: str, proc: Path) -> int:
    for line in (proc / str(pid) / "status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    return 0


def proc_mem(pid: int, proc: Path = PROC) -> ProcMem | None:
    """RSS from status and PSS from smaps_rollup (PSS splits shared pages
    between their users, so summing it over many processes does not count a
    shared library once per process). None if the process is gone."""
    try:
        comm = (proc / str(pid) / "comm").read_text().strip()
        rss = _status_field(pid, "VmRSS", proc)
        pss = 0
        try:
            for line in (proc / str(pid) / "smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    pss = int(line.split()[1])
                    break
        except OSError:
            pss = rss
        return ProcMem(pid, comm, rss, pss)
    except (OSError, ValueError, IndexError):
        return None


def _all_pids(proc: Path) -> list[int]:
    return [int(d) for d in os.listdir(proc) if d.isdigit()]


def _ppid(pid: int, proc: Path) -> int:
    stat = (proc / str(pid) / "stat").read_text()
    # comm may contain spaces and parentheses: fields start after the last ')'.
    return int(stat.rsplit(")", 1)[1].split()[1])


def _cmdline(pid: int, proc: Path) -> str:
    return (proc / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")


def helper_pids(marker: str, exclude: set[int], proc: Path = PROC) -> set[int]:
    """Processes whose command line names `marker` (a runtime's private temp
    root or socket), plus all their descendants, minus `exclude` (the daemon).

    Shims and conmon double-fork away from the daemon, so ancestry alone
    cannot find them; their command lines do name the daemon's own paths."""
    parents: dict[int, int] = {}
    roots: set[int] = set()
    for pid in _all_pids(proc):
        try:
            parents[pid] = _ppid(pid, proc)
            if marker in _cmdline(pid, proc):
                roots.add(pid)
        except (OSError, ValueError, IndexError):
            continue
    roots -= exclude
    found = set(roots)
    changed = True
    while changed:
        changed = False
        for pid, ppid in parents.items():
            if ppid in found and pid not in found and pid not in exclude:
                found.add(pid)
                changed = True
    return found


@dataclass
class MemorySnapshot:
    daemon: ProcMem | None
    helpers: list[ProcMem] = field(default_factory=list)

    def helper_total(self, kind: str = "pss", skip_comms: frozenset[str] = frozenset()) -> int:
        return sum(getattr(p, f"{kind}_kib") for p in self.helpers if p.comm not in skip_comms)

    def by_comm(self, kind: str = "pss") -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for p in self.helpers:
            entry = out.setdefault(p.comm, {"count": 0, "kib": 0})
            entry["count"] += 1
            entry["kib"] += getattr(p, f"{kind}_kib")
        return out


def snapshot(daemon_pid: int, marker: str, proc: Path = PROC) -> MemorySnapshot:
    pids = helper_pids(marker, {daemon_pid}, proc)
    helpers = [m for m in (proc_mem(p, proc) for p in sorted(pids)) if m is not None]
    return MemorySnapshot(proc_mem(daemon_pid, proc), helpers)
