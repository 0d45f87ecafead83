"""Starting a container crun created, without running `crun start`.

A created crun container waits in its init process, before it executes the
workload, on a FIFO in crun's state directory (`<root>/<id>/exec.fifo`): the
init holds the read end and goes on once a byte arrives. `crun start` is
that write (after unlinking the FIFO, which is how `crun state` tells
"running" from "created") plus two things crispy checks itself: the init is
still waiting (else no one holds the read end and the open fails with
ENXIO), and the spec crun keeps has no poststart hooks (`crun start` runs
them). Writing the byte here saves starting a process, about 2 ms of every
StartContainer. Whatever does not look exactly like that goes through
`crun start` instead: a missing FIFO, hooks, an unreadable spec.
"""

from __future__ import annotations

import json
import os
import stat


class InitGone(Exception):
    """The init stopped waiting between the open and the write."""


def _has_poststart_hooks(state_dir: str) -> bool | None:
    """None if crun's copy of the spec cannot be read."""
    try:
        with open(os.path.join(state_dir, "config.json"), "rb") as f:
            spec = json.load(f)
    except (OSError, ValueError):
        return None
    return bool((spec.get("hooks") or {}).get("poststart"))


def release_init(root: str, container_id: str) -> bool:
    """Lets the container's init run its process. False: do it with
    `crun start` instead (nothing was changed). Blocking but quick (a spec
    read and three syscalls)."""
    state_dir = os.path.join(root, container_id)
    if _has_poststart_hooks(state_dir) is not False:
        return False
    fifo = os.path.join(state_dir, "exec.fifo")
    try:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            return False
        os.unlink(fifo)
        try:
            os.write(fd, b"\0")
        except OSError as exc:  # EPIPE: the reader went away after the open
            raise InitGone(f"the container's init exited before it was started ({exc.strerror})") from None
    finally:
        os.close(fd)
    return True
