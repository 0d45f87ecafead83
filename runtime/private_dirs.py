"""Directories only crispy (root) may enter.

Unpacked layers keep the image's own modes (setuid binaries, a 1777 /tmp)
and a container's writable layer holds whatever the container wrote, so a
host user who can reach either can run a setuid-root binary, read a
container's files or plant a file every later container of an image sees.
Nothing that is not root ever needs to walk crispy's trees: the OCI runtime
and conmon run as root, overlayfs reaches its lower and upper dirs with the
mounter's credentials (root, at mount time), and a container's process
only sees its own root after pivot_root. So every directory above a layer,
a writable layer or a pod's files is 0700. (A pod with its own user
namespace gets its containers' roots mounted outside these trees, in
`<state_root>-userns`, see runtime/rootfs.py; its layers stay here and are
reached through an ID-mapped view that root mounts for the overlay mount.)

`mkdir(mode=..., exist_ok=True)` leaves an existing directory (from an
older crispy, or made by hand) as it is, and the umask may have narrowed a
new one in ways we do not want either; start-up therefore sets the mode
explicitly. Blocking."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import Callable

log = logging.getLogger("crispy.dirs")

PRIVATE = 0o700
# What a root directory may not keep: write for its group, anything for
# others. Group read and search stay (the socket's directory is 0750 so that
# an operator's group can reach the socket, and it may be the state root).
ROOT_FORBIDDEN = 0o027


def ensure_private(path: str | os.PathLike[str]) -> bool:
    """Creates `path` as 0700, or makes an existing one 0700 and ours (its
    parent must exist). True if an existing directory had to be changed."""
    return _ensure(Path(path), lambda mode: PRIVATE)


def ensure_root(path: str | os.PathLike[str]) -> bool:
    """For data_root and state_root, which an operator may have made (and
    may share with the socket): created 0700 (missing parents the usual
    way); an existing one loses group write and all access for others, and
    becomes ours."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return _ensure(path, lambda mode: mode & ~ROOT_FORBIDDEN)


def tighten_children(path: str | os.PathLike[str]) -> int:
    """Start-up, for the per-object dirs an older crispy made loose (a pod's
    dir, a container's scratch dir): each directory directly in `path`
    becomes 0700 and ours; symlinks and files are left alone. Their parent
    is private already; this is the second wall. Returns how many changed."""
    changed = 0
    with os.scandir(path) as entries:
        for e in entries:
            if not e.is_dir(follow_symlinks=False):
                continue
            st = e.stat(follow_symlinks=False)
            if stat.S_IMODE(st.st_mode) != PRIVATE or st.st_uid != os.geteuid():
                changed += _ensure(Path(e.path), lambda mode: PRIVATE)
    return changed


def make_private(path: str | os.PathLike[str]) -> None:
    """The per-object form (a container's scratch dir) for hot paths: one
    mkdir. The umask can only take bits away from 0700, so the result is
    private whatever it is. A missing parent is made private first."""
    try:
        os.mkdir(path, PRIVATE)
    except FileNotFoundError:
        ensure_private(Path(path).parent)
        os.mkdir(path, PRIVATE)


def _ensure(path: Path, wanted_of: Callable[[int], int]) -> bool:
    try:
        os.mkdir(path, PRIVATE)
        created = True
    except FileExistsError:
        created = False
    # Follows a symlink: an operator may point a root (or images/) at another
    # disk, and only root can plant a symlink inside these directories.
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        changed = False
        if st.st_uid != os.geteuid():
            # Its owner could open it up again. The group stays: it has no
            # write access left, and an operator may use it for the socket.
            os.fchown(fd, os.geteuid(), -1)
            changed = not created
            if changed:
                log.warning("took ownership of a crispy directory", extra={"fields": {
                    "path": str(path), "uid": st.st_uid, "gid": st.st_gid}})
            st = os.fstat(fd)  # chown may clear set-id bits
        mode = stat.S_IMODE(st.st_mode)
        # A new one may have lost bits to the umask; it gets exactly 0700.
        wanted = PRIVATE if created else wanted_of(mode)
        if mode != wanted:
            os.fchmod(fd, wanted)
            if not created:
                changed = True
                log.info("tightened permissions of a crispy directory", extra={"fields": {
                    "path": str(path), "mode": f"{mode:04o}", "now": f"{wanted:04o}"}})
        return changed
    finally:
        os.close(fd)
