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


M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

# The daemon's pinned mmap threshold (pin_mmap_threshold). Buffers the daemon
# allocates over and over (the image pull's pieces) stay below it, so they are
# reused from the heap instead of being mapped and faulted in afresh each time.
MMAP_THRESHOLD = 1024 * 1024


def pin_mmap_threshold(size: int) -> bool:
    """Makes glibc serve every allocation of `size` bytes or more with its own
    mmap, given back to the kernel when freed. By default the threshold
    rises to the size of the largest block freed so far (up to 32 MiB): after
    one 15 MiB ExecSync reply, later ones come from the heap, which keeps the
    memory long after the replies are gone (measured: 245 MiB RSS left after
    ten parallel 100 MB execs, 50 MiB with the threshold pinned). False where
    mallopt is not glibc's.

    Pinning also stops glibc from raising its trim threshold (free memory at
    a heap's top it keeps rather than hands back) from 128 KiB to twice the
    mmap threshold, as it does on its own. At 128 KiB every freed buffer of a
    few hundred KiB at the top was handed back and faulted in again by the
    next allocation (tests/unit/test_pull_memory.py: 40 rounds of a 600 KiB
    buffer fault in ~5,900 pages that way, ~140 under this policy). So the
    trim threshold is set to what glibc pairs with `size`; what it keeps is
    bounded (2 x `size` per arena), unlike the heap growth the pin prevents."""
    try:
        mallopt = libc.mallopt
    except AttributeError:
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return bool(mallopt(M_MMAP_THRESHOLD, size)) and bool(mallopt(M_TRIM_THRESHOLD, 2 * size))
