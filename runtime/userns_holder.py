"""The short-lived process that makes a pod's user namespace and the
namespaces it owns (runtime/namespaces.py explains why a process and not
crispy's own thread).

It is a few lines of Python run by `python -I -S`, talking over its
stdin/stdout:

1. unshare(2)s the user namespace together with the others in one call
   (the kernel makes the user namespace first, the rest belong to it) and
   writes "u";
2. waits for crispy to write its uid/gid maps (which only a process of the
   parent namespace may write) and send "m";
3. for a pod-wide PID namespace forks the infra (catatonit -P), which is
   PID 1 of the new PID namespace, and writes its pid; a PID namespace has
   no members (and cannot be joined) until that first child exists;
4. stays until crispy has pinned the namespaces and closes its stdin.

The infra is the holder's child, so it is reparented to the node's init
when the holder exits, as a crispy-started infra is when crispy exits.
Both carry CRISPY_POD_DIR, which the start-up sweep looks for.
"""

from __future__ import annotations

import os
import signal
import sys
from dataclasses import dataclass

from runtime.userns import PodUserns

_PROGRAM = r"""
import ctypes, os, signal, sys
flags, infra = int(sys.argv[1]), sys.argv[2]
libc = ctypes.CDLL(None, use_errno=True)
if libc.unshare(flags) != 0:
    os.write(1, ("unshare: " + os.strerror(ctypes.get_errno())).encode())
    sys.exit(1)
os.write(1, b"u")
if os.read(0, 1) != b"m":
    sys.exit(1)
pid = 0
if infra:
    pid = os.fork()
    if pid == 0:
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        for sig in (signal.SIGPIPE, signal.SIGXFSZ):
            signal.signal(sig, signal.SIG_DFL)
        try:
            os.execv(infra, [infra, "-P"])
        finally:
            os._exit(127)
os.write(1, b"%d\n" % pid)
os.read(0, 1)
"""

CLONE_NEWUSER = 0x10000000


@dataclass
class Holder:
    pid: int
    to_holder: int
    from_holder: int


def spawn(flags: int, infra: str, env: dict[str, str]) -> Holder:
    """Blocking: starts the holder and returns once it is in its new
    namespaces (CLONE_NEWUSER plus `flags`); `infra`: the init to start for
    a PID namespace in `flags`, "" for none."""
    to_r, to_w = os.pipe2(os.O_CLOEXEC)
    from_r, from_w = os.pipe2(os.O_CLOEXEC)
    try:
        actions = [(os.POSIX_SPAWN_DUP2, to_r, 0), (os.POSIX_SPAWN_DUP2, from_w, 1),
                   (os.POSIX_SPAWN_DUP2, from_w, 2)]
        pid = os.posix_spawn(sys.executable, [sys.executable, "-I", "-S", "-c", _PROGRAM,
                                              str(flags | CLONE_NEWUSER), infra],
                             env, file_actions=actions, setsid=True, setsigmask=(),
                             setsigdef=(signal.SIGPIPE, signal.SIGXFSZ))
    except BaseException:
        for fd in (to_r, to_w, from_r, from_w):
            os.close(fd)
        raise
    os.close(to_r)
    os.close(from_w)
    holder = Holder(pid, to_w, from_r)
    try:
        got = os.read(from_r, 4096)
        if got != b"u":
            raise OSError(f"the user namespace holder failed: {got.decode(errors='replace').strip() or 'it died'}")
    except BaseException:
        end(holder)
        raise
    return holder


def map_ids(holder: Holder, maps: PodUserns) -> int:
    """Blocking: writes the holder's uid/gid maps and lets it go on; the
    infra's pid (0 without a PID namespace). Root of the parent namespace
    may write any mapping, gids included, without first denying
    setgroups(2) in the child."""
    for name, mapping in (("uid_map", maps.uids), ("gid_map", maps.gids)):
        with open(f"/proc/{holder.pid}/{name}", "w") as f:
            f.write(mapping.line())
    os.write(holder.to_holder, b"m")
    got = b""
    while not got.endswith(b"\n"):
        chunk = os.read(holder.from_holder, 64)
        if not chunk:
            raise OSError(f"the user namespace holder died: {got.decode(errors='replace').strip()}")
        got += chunk
    try:
        return int(got)
    except ValueError:
        raise OSError(f"the user namespace holder said {got!r}") from None


def end(holder: Holder) -> None:
    """Blocking: lets the holder exit (killing it if need be) and reaps it."""
    for fd in (holder.to_holder, holder.from_holder):
        try:
            os.close(fd)
        except OSError:
            pass
    try:
        # Closing its stdin ends it at once; a holder stuck elsewhere is killed.
        done, _ = os.waitpid(holder.pid, os.WNOHANG)
        if not done:
            os.kill(holder.pid, signal.SIGKILL)
            os.waitpid(holder.pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass
