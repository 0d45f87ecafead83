"""What /proc/<pid>/stat says about a process: its state and start time;
and what /proc/<pid>/status says about who it runs as.

A pid alone names a process only until it exits; the start time (field 22,
clock ticks since boot) tells a process from a later one that got its pid,
and the state tells a zombie, which `kill(pid, 0)` calls alive, from a
running process.
"""

from __future__ import annotations

from dataclasses import dataclass

DEAD_STATES = ("Z", "X")


def stat_fields(stat: str) -> list[str]:
    """Sans-IO: /proc/<pid>/stat's fields from the state (field 3) on. The
    command name before them may hold spaces and parentheses, so they
    follow the last ')'."""
    return stat[stat.rfind(")") + 2:].split()


def state_and_start(pid: int) -> tuple[str, int] | None:
    """(state letter, start time) of `pid`, None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat_fields(stat)
    try:
        return fields[0], int(fields[19])
    except (IndexError, ValueError):
        return None


def process_start_time(pid: int) -> int | None:
    """Start time of a live, non-zombie `pid`; None otherwise."""
    st = state_and_start(pid)
    if st is None or st[0] in DEAD_STATES:
        return None
    return st[1]


def gone(pid: int) -> bool:
    """True once `pid` has exited (a zombie counts as exited)."""
    st = state_and_start(pid)
    return st is None or st[0] in DEAD_STATES


@dataclass(frozen=True)
class ProcessIds:
    """Who a process is: effective uid and gid, supplementary groups."""
    uid: int
    gid: int
    groups: tuple[int, ...]


def parse_ids(status: str) -> ProcessIds | None:
    """Sans-IO: /proc/<pid>/status' Uid, Gid and Groups lines (each id line
    is real, effective, saved, filesystem; the effective one decides access)."""
    lines: dict[str, list[str]] = {}
    for line in status.splitlines():
        key, sep, rest = line.partition(":")
        if sep and key in ("State", "Uid", "Gid", "Groups"):
            lines[key] = rest.split()
    if lines.get("State", [""])[0] in DEAD_STATES:
        return None  # an exited process keeps no credentials worth reporting
    try:
        return ProcessIds(int(lines["Uid"][1]), int(lines["Gid"][1]), tuple(int(g) for g in lines.get("Groups", [])))
    except (KeyError, IndexError, ValueError):
        return None


def ids(pid: int) -> ProcessIds | None:
    """Who `pid` runs as now; None once it has exited (a zombie has no ids)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return parse_ids(f.read())
    except OSError:
        return None
