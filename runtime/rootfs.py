"""A container's root filesystem: an overlay of the image's layer
snapshots (read-only lower dirs) under a per-container upper dir, mounted at
the bundle's rootfs.

A read-only root (readonly_rootfs) is mounted the same way and made
read-only by the OCI runtime (`root.readonly` in the spec): the runtime
must first create mount points that the image may lack (/etc/hostname,
/dev/shm, volume targets), which needs a writable upper dir.

In a pod with its own user namespace the container's root must look owned
by the container's root, which is host ID `host_uid` there. The layers are
not copied or chown'd: the lower dirs are an ID-mapped view
(runtime/idmapped.py) of the layer store, mounted for the moment of the
overlay mount only (overlayfs keeps private clones of its layers, so the
view is unmounted right after). Only the empty upper dir is chown'd, as it
is the container's "/"; what the container writes lands there with its
host IDs, as the kernel maps them anyway.

Such a root is mounted outside the state root, in `<state_root>-userns/`
(0711): the OCI runtime bind-mounts the root onto itself from inside the
user namespace, where the container's root is an unprivileged host ID
that must be able to search every directory on the way, and the state
root's trees are root-only (runtime/private_dirs.py). Others may only
search that directory, not list it, and what a root mounted there holds
is owned by the pod's host IDs, so a setuid file in it grants no more than
the pod's own (unprivileged) IDs.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from runtime import idmapped, kmount, private_dirs
from runtime.errors import FailedPrecondition, InvalidArgument

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


USERNS_ROOTS_MODE = 0o711


@dataclass(frozen=True)
class RootIdmap:
    """The pod's pinned user namespace and the host IDs of its root."""
    userns_path: str
    host_uid: int
    host_gid: int
    # Where the layers' ID-mapped view is mounted for the moment of the
    # overlay mount: in the (root-only) bundle, which the sweep unmounts
    # before deleting anything.
    view_dir: str


def userns_roots(state_root: Path) -> Path:
    """The directory user-namespaced container roots are mounted in."""
    return state_root.with_name(state_root.name + "-userns")


def userns_root_of(state_root: Path, container_id: str) -> Path:
    """Blocking: the mount point for a user-namespaced container's root,
    its directory made searchable (see the module doc). FailedPrecondition
    if a directory above it is not searchable by others: the container's
    root could not reach its own root filesystem."""
    roots = userns_roots(state_root)
    for parent in roots.parents:
        if not os.stat(parent).st_mode & stat.S_IXOTH:
            raise FailedPrecondition(
                f"pods with their own user namespace need {parent} searchable by every user: their containers' "
                f"roots are mounted in {roots}, which the container's root (an unprivileged host ID) must reach; "
                f"run `chmod o+x {parent}` or put the state root under a directory like /run")
    roots.mkdir(mode=USERNS_ROOTS_MODE, exist_ok=True)
    os.chmod(roots, USERNS_ROOTS_MODE)
    return roots / container_id


def remove_userns_root(path: str) -> None:
    """Blocking, idempotent: unmounts and removes a mount point made by
    userns_root_of (never recursing into it)."""
    kmount.umount_all(path)
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass


def mount(layers: list[str], target: str, scratch: Path, idmap: RootIdmap | None = None) -> None:
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
    if idmap is None:
        kmount.mount("overlay", target, "overlay", 0, overlay_options(layers, str(upper), str(work)))
        return
    os.chown(upper, idmap.host_uid, idmap.host_gid)
    _mount_idmapped(layers, target, str(upper), str(work), idmap)


def _mount_idmapped(layers: list[str], target: str, upper: str, work: str, idmap: RootIdmap) -> None:
    # One view of the layers' common parent (the layer store) rather than
    # one per layer: a single mount whatever the image's depth.
    store = os.path.commonpath(layers)
    view = idmap.view_dir
    os.makedirs(view, mode=0o700, exist_ok=True)
    mapped = [os.path.join(view, os.path.relpath(d, store)) if d != store else view for d in layers]
    idmapped.bind(store, view, idmap.userns_path)
    try:
        kmount.mount("overlay", target, "overlay", 0, overlay_options(mapped, upper, work))
    finally:
        kmount.umount_all(view)
    os.rmdir(view)


def unmount(target: str) -> None:
    """Blocking; idempotent."""
    kmount.umount_all(target)
