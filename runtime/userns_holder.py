"""The short-lived process that makes a pod's user namespace and the
namespaces it owns (runtime/namespaces.py explains why a process and not
crispy's own thread).

It is util-linux's unshare(1) running a few lines of /bin/sh, talking over
its stdin/stdout (a Python holder cost ~35 ms more per pod, mostly the
interpreter's start and ctypes):

1. unshare(1) makes the user namespace together with the others in one
   unshare(2) call (the kernel makes the user namespace first, the rest
   belong to it); the shell then writes "u";
2. the shell waits for crispy to write the uid/gid maps (which only a
   process of the parent namespace may write) and send "m";
3. with a pod-wide PID namespace, unshare(1) has forked the shell as PID 1
   of the new PID namespace: it writes its pid as the node sees it (the
   node's /proc answers in the node's PID namespace) and becomes the infra
   (catatonit -P) by exec, as a PID namespace has no members (and cannot be
   joined) until that first process exists;
4. without one, it stays until crispy has pinned the namespaces and closes
   its stdin.

crispy ends the holder (unshare(1), the infra's parent, waits for it
forever) once the namespaces are pinned, so the infra is reparented to the
node's init, as a crispy-started infra is when crispy exits. Both carry
CRISPY_POD_DIR, which the start-up sweep looks for.
"""

from __future__ import annotations

import os
import shutil
import signal
from dataclasses import dataclass

from runtime.userns import PodUserns

# $1: the infra to become for a PID namespace, "" for none.
_SCRIPT = r"""
echo u
read -r go || exit 1
[ "$go" = m ] || exit 1
if [ -n "$1" ]; then
    read -r self rest < /proc/self/stat
    echo "$self"
    exec "$1" -P < /dev/null > /dev/null 2>&1
fi
echo 0
read -r done
"""

CLONE_NEWNET = 0x40000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWPID = 0x20000000
_UNSHARE_FLAGS = ((CLONE_NEWNET, "--net"), (CLONE_NEWIPC, "--ipc"), (CLONE_NEWUTS, "--uts"),
                  (CLONE_NEWPID, "--pid"))


def _argv(flags: int, infra: str) -> list[str]:
    unshare = shutil.which("unshare") or "/usr/bin/unshare"
    argv = [unshare, "--user", *(opt for bit, opt in _UNSHARE_FLAGS if flags & bit)]
    if flags & CLONE_NEWPID:
        # The PID namespace is for unshare(1)'s children, not itself.
        argv.append("--fork")
    return [*argv, "--", "/bin/sh", "-c", _SCRIPT, "crispy-userns-holder", infra if flags & CLONE_NEWPID else ""]


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
        argv = _argv(flags, infra)
        pid = os.posix_spawn(argv[0], argv, env, file_actions=actions, setsid=True, setsigmask=(),
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
        if got != b"u\n":
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
    os.write(holder.to_holder, b"m\n")
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
