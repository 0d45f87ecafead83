"""ID-mapped bind mounts (Linux 5.12+): a view of a directory tree in which
file owners are shifted by a user namespace's mappings, without touching
the files. A pod with its own user namespace sees the image's layers
(owned by the node's root) owned by its own root this way, instead of
chown'd copies per pod.

Python 3.11 has no binding for the new mount API, so the three syscalls
are made through libc's syscall(2); syscalls numbered from 424 on (Linux
5.1) have the same number on every architecture.
"""

from __future__ import annotations

import ctypes
import os

from runtime.libc import libc

SYS_OPEN_TREE = 428
SYS_MOVE_MOUNT = 429
SYS_MOUNT_SETATTR = 442

OPEN_TREE_CLONE = 1
OPEN_TREE_CLOEXEC = os.O_CLOEXEC
AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOUNT_ATTR_IDMAP = 0x00100000


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def _call(rc: int, what: str) -> int:
    if rc < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return rc


def bind(source: str, target: str, userns_path: str) -> None:
    """Mounts `source` (recursively) at the existing `target`, its owners
    mapped through the user namespace pinned at `userns_path`. Blocking."""
    userns_fd = os.open(userns_path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        tree = _call(libc.syscall(SYS_OPEN_TREE, AT_FDCWD, os.fsencode(source),
                                  OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE), f"open_tree({source})")
        try:
            attr = _MountAttr(MOUNT_ATTR_IDMAP, 0, 0, userns_fd)
            _call(libc.syscall(SYS_MOUNT_SETATTR, tree, b"", AT_EMPTY_PATH | AT_RECURSIVE, ctypes.byref(attr),
                               ctypes.sizeof(attr)), f"mount_setattr(idmap) of {source}")
            _call(libc.syscall(SYS_MOVE_MOUNT, tree, b"", AT_FDCWD, os.fsencode(target), MOVE_MOUNT_F_EMPTY_PATH),
                  f"move_mount to {target}")
        finally:
            # A detached tree that was never attached goes with its last fd.
            os.close(tree)
    finally:
        os.close(userns_fd)


def supported() -> bool:
    """Whether this kernel has mount_setattr(2), asked without privileges:
    an invalid fd gets EBADF where the call exists, ENOSYS where not."""
    attr = _MountAttr(0, 0, 0, 0)
    rc = libc.syscall(SYS_MOUNT_SETATTR, -1, b"", AT_EMPTY_PATH, ctypes.byref(attr), ctypes.sizeof(attr))
    return not (rc < 0 and ctypes.get_errno() == 38)  # ENOSYS
