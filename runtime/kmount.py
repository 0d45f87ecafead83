"""The mount(2) and umount2(2) system calls, for pod and container mounts.

Python 3.11 has no binding for them and spawning mount(8) per call costs a
process; these are blocking syscalls, so async callers run them through
asyncio.to_thread.
"""

from __future__ import annotations

import ctypes
import errno
import os

from runtime.libc import check, libc

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MNT_DETACH = 0x2
_EINVAL_NOT_MOUNTED = (errno.EINVAL, errno.ENOENT)


def mount(source: str, target: str, fstype: str | None, flags: int = 0, data: str | None = None) -> None:
    check(libc.mount(source.encode(), target.encode(), fstype.encode() if fstype else None, flags,
                     data.encode() if data is not None else None), f"mount {fstype or 'bind'} {source} on {target}")


def umount(target: str, detach: bool = True) -> bool:
    """Unmounts `target`; False if nothing was mounted there (idempotent)."""
    rc = libc.umount2(target.encode(), MNT_DETACH if detach else 0)
    if rc != 0:
        err = ctypes.get_errno()
        if err in _EINVAL_NOT_MOUNTED:
            return False
        raise OSError(err, f"umount {target}: {os.strerror(err)}")
    return True


def umount_all(target: str) -> None:
    """Unmounts `target` until nothing is stacked on it any more."""
    for _ in range(64):
        if not umount(target):
            return


def mounts_under(prefix: str, mountinfo: str = "/proc/self/mountinfo") -> list[str]:
    """Mount points at or below `prefix`, deepest first."""
    prefix = prefix.rstrip("/")
    found = []
    with open(mountinfo) as f:
        for line in f:
            point = line.split()[4].replace("\\040", " ")
            if point == prefix or point.startswith(prefix + "/"):
                found.append(point)
    return sorted(found, key=len, reverse=True)
