"""Who owns a temporary file or directory in the image store, in a form
that survives pid reuse.

Temp names carry `<pid>.<start time>` of the process writing them (the
start time is field 22 of /proc/<pid>/stat, clock ticks since boot). At
start-up a temp whose owner is gone is removed. `kill(pid, 0)` alone is not
enough to say the owner is gone: a dead daemon's pid may still be a zombie
(its parent has not reaped it) or may belong to an unrelated process by
now, and then an interrupted pull's unpacked layers would stay forever.
"""

from __future__ import annotations

import os

from runtime import procfs

_mine: tuple[int, str] | None = None


def token_of(pid: int) -> str:
    """`<pid>.<start time>` of a live process; `<pid>` alone if it is gone."""
    st = procfs.state_and_start(pid)
    return f"{pid}.{st[1]}" if st is not None else str(pid)


def current() -> str:
    """This process's token (computed once per process)."""
    global _mine
    pid = os.getpid()
    if _mine is None or _mine[0] != pid:
        _mine = (pid, token_of(pid))
    return _mine[1]


def alive(token: str) -> bool:
    """True while the process that wrote `token` runs (zombies do not count).
    A token without a start time (written by an older crispy) can only be
    checked by pid; an unparsable one is treated as dead."""
    pid_text, _, start_text = token.partition(".")
    try:
        pid = int(pid_text)
        start = int(start_text) if start_text else None
    except ValueError:
        return False
    if pid <= 0:
        return False
    st = procfs.state_and_start(pid)
    if st is None or st[0] in ("Z", "X"):
        return False
    return start is None or st[1] == start
