"""The libc calls Python 3.11 has no binding for (mount, umount2, unshare,
setns, sethostname), loaded once, and the namespace flags they take."""

from __future__ import annotations

import ctypes
import os

libc = ctypes.CDLL(None, use_errno=True)
libc.mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p)
libc.umount2.argtypes = (ctypes.c_char_p, ctypes.c_int)
libc.unshare.argtypes = (ctypes.c_int,)
libc.setns.argtypes = (ctypes.c_int, ctypes.c_int)
libc.sethostname.argtypes = (ctypes.c_char_p, ctypes.c_size_t)

CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000


def check(rc: int, what: str) -> None:
    """A call's -1 as OSError(errno, "<what>: <strerror>")."""
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


M_MMAP_THRESHOLD = -3


def pin_mmap_threshold(size: int) -> bool:
    """Makes glibc serve every allocation of `size` bytes or more with its own
    mmap, given back to the kernel when freed. By default the threshold
    rises to the size of the largest block freed so far (up to 32 MiB): after
    one 15 MiB ExecSync reply, later ones come from the heap, which keeps the
    memory long after the replies are gone (measured: 245 MiB RSS left after
    ten parallel 100 MB execs, 50 MiB with the threshold pinned). False where
    mallopt is not glibc's."""
    try:
        mallopt = libc.mallopt
    except AttributeError:
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return bool(mallopt(M_MMAP_THRESHOLD, size))
