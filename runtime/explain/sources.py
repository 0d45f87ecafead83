"""Reading kernel files for the explain sections: a missing or unreadable
file is an absent fact (None), never an error, since a process may exit
while it is being explained (runtime/cgroups' reader, `tolerant`)."""

from __future__ import annotations

import os
from pathlib import Path

from runtime.cgroups.manager import read_text

PROC = Path("/proc")


def read(path: Path) -> str | None:
    return read_text(path, tolerant=True)


def status_fields(proc: Path, pid: int) -> dict[str, str]:
    """/proc/<pid>/status as key -> value text."""
    out: dict[str, str] = {}
    for line in (read(proc / str(pid) / "status") or "").splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key] = value.strip()
    return out


def ns_inode(proc: Path, pid: int | str, kind: str) -> int | None:
    """The inode of `pid`'s namespace of `kind` ("net", "pid"...), from the
    "net:[4026531992]" its /proc link reads as."""
    try:
        link = os.readlink(proc / str(pid) / "ns" / kind)
    except OSError:
        return None
    start, end = link.find("["), link.rfind("]")
    try:
        return int(link[start + 1:end]) if start >= 0 and end > start else None
    except ValueError:
        return None


def host_ns_inode(proc: Path, kind: str) -> int | None:
    """The node's namespace of `kind`: PID 1's, or where /proc/1 is
    hidden (hardened or sandboxed nodes), the daemon's own, which crispy
    runs in the node's namespaces."""
    inode = ns_inode(proc, 1, kind)
    return inode if inode is not None else ns_inode(proc, "self", kind)


def path_inode(path: str) -> int | None:
    """The inode of a pinned namespace file (an nsfs bind mount's inode is
    the namespace's)."""
    try:
        return os.stat(path).st_ino
    except OSError:
        return None
