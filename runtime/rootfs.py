"""A container's root filesystem: an overlay of the image's layer
snapshots (read-only lower dirs) under a per-container upper dir, mounted at
the bundle's rootfs.

A read-only root (readonly_rootfs) is mounted the same way and made
read-only by the OCI runtime (`root.readonly` in the spec): the runtime
must first create mount points that the image may lack (/etc/hostname,
/dev/shm, volume targets), which needs a writable upper dir.
"""

from __future__ import annotations

import os
from pathlib import Path

from runtime import kmount, private_dirs
from runtime.errors import InvalidArgument

# overlayfs takes its options from one page.
_MAX_OPTIONS = 4000


def lower_option(lowers_lowest_first: list[str]) -> str:
    """The `lowerdir=` option for an image's layers (also the whole option
    string of a read-only overlay, runtime/image_volumes.py)."""
    # overlayfs lists lower dirs top-most first; images list layers lowest first.
    lowers = list(reversed(lowers_lowest_first))
    for d in lowers:
        if "," in d or ":" in d:
            raise InvalidArgument(f"layer directory {d} contains ',' or ':', which overlayfs cannot take")
    opts = "lowerdir=" + ":".join(lowers)
    if len(opts) > _MAX_OPTIONS:
        raise InvalidArgument(f"the image has too many layers ({len(lowers)}) for one overlay mount")
    return opts


def overlay_options(lowers_lowest_first: list[str], upper: str, work: str) -> str:
    opts = lower_option(lowers_lowest_first) + f",upperdir={upper},workdir={work}"
    if len(opts) > _MAX_OPTIONS:
        raise InvalidArgument(f"the image has too many layers ({len(lowers_lowest_first)}) for one overlay mount")
    return opts


def mount(layers: list[str], target: str, scratch: Path) -> None:
    """Blocking. `scratch` (on the data root) holds upper/ and work/."""
    if not layers:
        raise InvalidArgument("the image has no layers to make a root filesystem from")
    os.makedirs(target, mode=0o755, exist_ok=True)  # in the 0700 bundle
    upper, work = scratch / "upper", scratch / "work"
    try:
        # What the container writes (setuid binaries too) lives below: no
        # one but root may pass (runtime/private_dirs.py).
        private_dirs.make_private(scratch)
    except FileExistsError:
        pass
    try:
        upper.mkdir(mode=0o755)
        # overlayfs shows the upper dir's mode as the container's "/", which a
        # non-root process must be able to search.
        os.chmod(upper, 0o755)
    except FileExistsError:
        pass
    work.mkdir(mode=0o700, exist_ok=True)
    kmount.mount("overlay", target, "overlay", 0, overlay_options(layers, str(upper), str(work)))


def unmount(target: str) -> None:
    """Blocking; idempotent."""
    kmount.umount_all(target)
