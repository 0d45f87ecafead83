"""The container's process tree: host PIDs and the PIDs the container sees,
each process's command and who it runs as, in the container and on the
host (they differ when a user namespace maps them)."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from runtime import procfs
from runtime.explain.sources import PROC, read, status_fields

# A runaway fork loop must not make the report unbounded.
MAX_PROCESSES = 200


@dataclass
class ProcessFacts:
    pid: int  # on the host
    ns_pid: int  # in the container's own PID namespace
    ppid: int  # on the host
    depth: int  # 0 for the container's init
    state: str
    command: list[str]
    uid: int | None  # in the container's user namespace
    gid: int | None
    host_uid: int
    host_gid: int
    groups: list[int]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_stat(text: str) -> tuple[str, int] | None:
    """Sans-IO: (state, ppid) from /proc/<pid>/stat."""
    fields = procfs.stat_fields(text)
    try:
        return fields[0], int(fields[1])
    except (IndexError, ValueError):
        return None


def parse_id_map(text: str) -> list[tuple[int, int, int]]:
    """Sans-IO: uid_map/gid_map lines as (inside, outside, count)."""
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and all(p.isdigit() for p in parts):
            out.append((int(parts[0]), int(parts[1]), int(parts[2])))
    return out


def to_inside(host_id: int, mapping: list[tuple[int, int, int]]) -> int | None:
    """The ID a host ID has inside the namespace; None if it is unmapped
    (the container sees it as the overflow ID, nobody)."""
    for inside, outside, count in mapping:
        if outside <= host_id < outside + count:
            return inside + host_id - outside
    return None


def _parents(proc: Path) -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    try:
        names = os.listdir(proc)
    except OSError:
        return children
    for name in names:
        if not name.isdigit():
            continue
        parsed = parse_stat(read(proc / name / "stat") or "")
        if parsed is not None:
            children.setdefault(parsed[1], []).append(int(name))
    return children


def one(proc: Path, pid: int, depth: int) -> ProcessFacts | None:
    st = status_fields(proc, pid)
    if not st:
        return None
    stat = parse_stat(read(proc / str(pid) / "stat") or "")
    cmdline = [a for a in (read(proc / str(pid) / "cmdline") or "").split("\0") if a]
    uids, gids = st.get("Uid", "").split(), st.get("Gid", "").split()
    # The effective IDs decide access; status shows them as the host sees them.
    host_uid = int(uids[1]) if len(uids) > 1 else -1
    host_gid = int(gids[1]) if len(gids) > 1 else -1
    uid_map = parse_id_map(read(proc / str(pid) / "uid_map") or "")
    gid_map = parse_id_map(read(proc / str(pid) / "gid_map") or "")
    ns_pids = st.get("NSpid", str(pid)).split()
    return ProcessFacts(
        pid=pid, ns_pid=int(ns_pids[-1]) if ns_pids else pid, ppid=stat[1] if stat else 0, depth=depth,
        state=stat[0] if stat else "?", command=cmdline or [f"[{st.get('Name', '?')}]"],
        uid=to_inside(host_uid, uid_map), gid=to_inside(host_gid, gid_map), host_uid=host_uid, host_gid=host_gid,
        groups=[int(g) for g in st.get("Groups", "").split() if g.isdigit()])


def tree(pid: int, proc: Path = PROC) -> list[ProcessFacts]:
    """`pid` and its descendants, depth first, children by PID. Empty when
    `pid` is gone."""
    children = _parents(proc)
    out: list[ProcessFacts] = []
    stack = [(pid, 0)]
    while stack and len(out) < MAX_PROCESSES:
        current, depth = stack.pop()
        facts = one(proc, current, depth)
        if facts is None:
            continue
        out.append(facts)
        stack.extend((c, depth + 1) for c in sorted(children.get(current, []), reverse=True))
    return out
