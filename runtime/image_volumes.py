"""Image volumes (KEP-4639, CRI `Mount.image`): an image already in the
store shown read-only at a path inside a container.

The image's unpacked layers are stacked as an overlay with no upper dir,
so nothing is copied and nothing can be written; the mount lives under the
container's bundle (`<bundle>/image-volumes/<n>`) and the OCI spec binds it
(or the `image_sub_path` directory inside it) at the container path. The
record keeps each volume's mount point and image id: RemoveContainer (and
the undo of a failed create) unmounts them, RemoveImage counts them as
users, and a bundle left by a crash is swept with every mount under it
(runtime/sandbox_orphans.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from cri.proto import api_pb2 as pb
from runtime import kmount, rootfs, untrusted_files
from runtime.errors import InvalidArgument
from runtime.untrusted_files import UnreadableFile

# Under the bundle: the runtime's state dir, private to root.
DIR_NAME = "image-volumes"


@dataclass
class VolumeRequest:
    """One `Mount.image` of a ContainerConfig, checked."""
    container_path: str
    image: str  # the reference or id as the caller named it
    sub_path: str  # "" = the whole image


def is_image_mount(m: pb.Mount) -> bool:
    return m.HasField("image") and bool(m.image.image)


def _check_sub_path(dest: str, sub: str) -> str:
    if sub.startswith("/"):
        raise InvalidArgument(f"mount {dest}: image_sub_path {sub!r} must be relative to the image's root")
    parts = [p for p in sub.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise InvalidArgument(f"mount {dest}: image_sub_path {sub!r} must not contain '..'")
    return "/".join(parts)


def requests(config: pb.ContainerConfig) -> list[VolumeRequest]:
    """The image volumes `config` asks for; InvalidArgument for one that
    cannot be honoured, before anything is created."""
    out: list[VolumeRequest] = []
    for m in config.mounts:
        if not is_image_mount(m):
            if m.image_sub_path:
                raise InvalidArgument(f"mount {m.container_path}: image_sub_path is set but no image is named; "
                                      "image_sub_path only applies to image volumes")
            continue
        dest = m.container_path
        if not dest.startswith("/"):
            raise InvalidArgument(f"mount container_path {dest!r} must be an absolute path")
        if not m.readonly:
            raise InvalidArgument(f"mount {dest}: image volumes are read-only; set readonly: true for the "
                                  f"mount of image {m.image.image}")
        if m.host_path:
            raise InvalidArgument(f"mount {dest} names both host_path {m.host_path!r} and image "
                                  f"{m.image.image!r}; give one")
        out.append(VolumeRequest(dest, m.image.image, _check_sub_path(dest, m.image_sub_path)))
    return out


def target_of(bundle: str, index: int) -> str:
    return os.path.join(bundle, DIR_NAME, str(index))


def record_entry(req: VolumeRequest, image_id: str, target: str) -> dict[str, Any]:
    """What ContainerRecord.image_volumes holds for one volume (JSON)."""
    return {"container_path": req.container_path, "image_id": image_id, "sub_path": req.sub_path, "target": target}


def mount(layers: list[str], target: str, sub_path: str) -> str:
    """Blocking. Mounts the image's layers read-only at `target` and
    returns the host path to bind into the container: `target`, or the
    directory `sub_path` names inside it (symlinks resolved with the image's
    root as "/", so none leads out of it). InvalidArgument, with nothing left
    mounted, when `sub_path` is missing or not a directory."""
    if not layers:
        raise InvalidArgument("the image has no layers to make a volume from")
    os.makedirs(target, mode=0o755, exist_ok=True)
    if len(layers) == 1:
        # overlayfs wants two lower dirs when there is no upper one: a
        # single layer is bound read-only instead.
        kmount.mount(layers[0], target, None, kmount.MS_BIND)
        try:
            kmount.mount("none", target, None, kmount.MS_BIND | kmount.MS_REMOUNT | kmount.MS_RDONLY)
        except BaseException:
            kmount.umount_all(target)
            raise
    else:
        kmount.mount("overlay", target, "overlay", kmount.MS_RDONLY, rootfs.lower_option(layers))
    if not sub_path:
        return target
    try:
        return _sub_dir(target, sub_path)
    except BaseException:
        kmount.umount_all(target)
        raise


def _sub_dir(root: str, sub_path: str) -> str:
    try:
        kind = untrusted_files.kind_in_root(root, sub_path)
    except UnreadableFile as e:
        raise InvalidArgument(f"image_sub_path {sub_path!r} {e}") from None
    if kind is None:
        raise InvalidArgument(f"image_sub_path {sub_path!r} does not exist in the image; name a directory the "
                              "image holds")
    if kind != "a directory":
        raise InvalidArgument(f"image_sub_path {sub_path!r} is {kind or 'a regular file'} in the image, not a "
                              "directory")
    # The overlay is read-only and its layers never change: the path found
    # now is the one the runtime binds later.
    host = untrusted_files.resolve_in_root(root, sub_path)
    if not (host == root or host.startswith(root.rstrip("/") + "/")):
        raise InvalidArgument(f"image_sub_path {sub_path!r} leads out of the image")
    return host


def unmount(target: str) -> None:
    """Blocking; idempotent."""
    kmount.umount_all(target)
