"""Sealed in-memory copies of the OCI runtime binaries, made once per daemon.

runc and crun guard against a container overwriting the host's runtime
binary through /proc/self/exe (CVE-2019-5736): unless the file they run from
cannot be written, every run first copies itself somewhere unwritable (a
sealed memfd, or a read-only bind mount) and executes itself again from
there. That second exec and dynamic load costs about a millisecond on each
create, start, kill, exec and delete, and runc copies its 9 MB binary on
each container start.

Both runtimes accept a binary that is already a fully sealed memfd as safe,
so crispy makes that copy once and runs the runtime from it (through
/proc/<crispy's pid>/fd/N, which conmon can exec too). The protection is the
same: no one can write to a sealed memfd. A runtime upgraded on disk is
noticed by its stat and copied again.
"""

from __future__ import annotations

import fcntl
import logging
import os
from dataclasses import dataclass

log = logging.getLogger("crispy.runtime")

# The seals runc and crun check for, all four, before trusting the binary.
SEALS = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE


@dataclass(frozen=True)
class _Copy:
    fd: int
    identity: tuple[int, int, int, int]  # st_dev, st_ino, st_size, st_mtime_ns of the file copied


def _identity(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def seal_copy(path: str) -> int:
    """A sealed memfd holding the file at `path`; the caller owns the fd."""
    fd = os.memfd_create(os.path.basename(path), os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        with open(path, "rb") as src:
            size = os.fstat(src.fileno()).st_size
            done = 0
            while done < size:
                sent = os.sendfile(fd, src.fileno(), done, size - done)
                if sent == 0:
                    break  # the file shrank while copying; the identity check catches it next time
                done += sent
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, SEALS)
    except BaseException:
        os.close(fd)
        raise
    return fd


class SealedBinaries:
    """Maps a runtime's path on disk to the path crispy executes it from."""

    def __init__(self) -> None:
        self._copies: dict[str, _Copy] = {}
        # Copies of a binary that changed on disk stay open: a conmon spawned
        # a moment ago may not have executed its copy yet.
        self._retired: list[int] = []

    def exe(self, path: str) -> str:
        """The path to execute `path` from. Falls back to `path` itself
        (the runtime then makes its own copy per run) if it cannot be copied."""
        try:
            st = os.stat(path)
        except OSError:
            return path  # let the exec report the real path's error
        copy = self._copies.get(path)
        if copy is None or copy.identity != _identity(st):
            try:
                fd = seal_copy(path)
            except OSError as exc:
                log.warning("cannot make a sealed copy of the OCI runtime; it will copy itself on every run",
                            extra={"fields": {"path": path, "error": str(exc)}})
                return path
            if copy is not None:
                self._retired.append(copy.fd)
            copy = self._copies[path] = _Copy(fd, _identity(st))
        return f"/proc/{os.getpid()}/fd/{copy.fd}"

    def close(self) -> None:
        for fd in [c.fd for c in self._copies.values()] + self._retired:
            os.close(fd)
        self._copies.clear()
        self._retired.clear()
