"""Where a path in a container comes from: a mount (a bind of a host path,
a tmpfs...), the container's own writes (the overlay's upper dir), or the
image layer that holds it — the answer overlayfs would give, found by
looking in each layer top-most first, as overlayfs does, with its
whiteouts and opaque directories. Blocking; needs root (the layers are
root-only)."""

from __future__ import annotations

import os
import posixpath
import stat
from dataclasses import asdict, dataclass
from typing import Any

from runtime.errors import InvalidArgument
from runtime.untrusted_files import resolve_in_root

OPAQUE_XATTR = "trusted.overlay.opaque"


@dataclass
class PathOrigin:
    path: str  # as asked
    resolved: str  # with symlinks in its parent directories followed, inside the container
    kind: str  # "mount" | "upper" | "layer" | "deleted" | "missing"
    answer: str  # one sentence
    layer: int = 0  # 1 = the bottom layer, for kind "layer"
    digest: str = ""
    host_path: str = ""  # where the file is on the node
    readonly: bool = False
    symlink_to: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolve_parents(root: str, path: str) -> str:
    """`path` with symlinks among its parent directories followed as the
    container would (absolute links from the container's root); the last
    component is left as it is. `root`: the container's root as the node
    sees it (/proc/<pid>/root)."""
    if not path.startswith("/"):
        raise InvalidArgument(f"--path {path!r} must be absolute (a path inside the container)")
    host = resolve_in_root(root, path, follow_last=False)
    return host[len(root.rstrip("/")):] or "/"


def _lstat(p: str) -> os.stat_result | None:
    try:
        return os.lstat(p)
    except OSError:
        return None


def _is_whiteout(st: os.stat_result | None) -> bool:
    return st is not None and stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _is_opaque(d: str) -> bool:
    try:
        return os.getxattr(d, OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError:
        return False


def _search_layer(layer_dir: str, rel: str) -> str:
    """"found", "whiteout" (deleted here), "opaque" (an ancestor hides
    everything below) or "" (not here, look lower)."""
    parts = rel.split("/")
    for i in range(1, len(parts) + 1):
        here = os.path.join(layer_dir, *parts[:i])
        st = _lstat(here)
        if _is_whiteout(st):
            return "whiteout"
        if st is None:
            # An opaque parent hides the name in every lower layer.
            parent = os.path.join(layer_dir, *parts[:i - 1])
            return "opaque" if i > 1 and _is_opaque(parent) else ""
        if i == len(parts):
            return "found"
        if not stat.S_ISDIR(st.st_mode):
            return ""
    return ""


def origin(path: str, root: str, mounts: list[dict[str, Any]], upper: str,
           layers: list[dict[str, Any]], image: str) -> PathOrigin:
    """`mounts`: the report's mount table (mountpoint, fstype, source,
    host_path for binds, readonly); `layers`: the report's, bottom first."""
    resolved = posixpath.normpath(resolve_parents(root, path))
    found = PathOrigin(path=path, resolved=resolved, kind="missing", answer="")
    st = _lstat(root + resolved)
    if st is not None and stat.S_ISLNK(st.st_mode):
        try:
            found.symlink_to = os.readlink(root + resolved)
        except OSError:
            pass
    best = None
    for m in mounts:
        mp = m["mountpoint"]
        if resolved == mp or resolved.startswith(mp.rstrip("/") + "/"):
            if best is None or len(mp) > len(best["mountpoint"]):
                best = m
    if best is not None:
        rest = resolved[len(best["mountpoint"]):].lstrip("/")
        found.kind, found.readonly = "mount", bool(best.get("readonly"))
        access = "read-only" if found.readonly else "read-write"
        if best.get("host_path"):
            found.host_path = os.path.join(best["host_path"], rest) if rest else best["host_path"]
            found.answer = f"bind mount of {found.host_path}, {access}"
        else:
            found.answer = f"{best['fstype']} mounted at {best['mountpoint']} (source {best['source']}), {access}"
        return found
    rel = resolved.lstrip("/")
    if not rel:
        found.kind, found.answer = "upper", "the container's root directory (its upper dir)"
        found.host_path = upper
        return found
    # Top-most first, as overlayfs looks: the upper dir (layer None), then the image's.
    stack: list[tuple[str, dict[str, Any] | None]] = [(upper, None)] if upper else []
    stack += [(layer["dir"], layer) for layer in reversed(layers)]
    changed_by_container = False
    for d, layer in stack:
        result = _search_layer(d, rel)
        where = "by the container" if layer is None else f"in layer {layer['index']} of {image}"
        if result == "whiteout":
            found.kind, found.answer = "deleted", f"deleted {where}: a whiteout hides it from the layers below"
            return found
        if result == "opaque":
            break
        if result != "found":
            continue
        host = os.path.join(d, rel)
        hst = _lstat(host)
        if layer is None:
            if hst is not None and stat.S_ISDIR(hst.st_mode):
                changed_by_container = True  # a directory copied up: say which layer made it
                continue
            found.kind, found.host_path = "upper", host
            found.answer = f"written by the container (its upper dir: {host})"
            return found
        found.kind, found.host_path = "layer", host
        found.layer, found.digest = layer["index"], layer.get("digest", "")
        found.answer = f"layer {layer['index']} of {image} ({found.digest or layer.get('chain_id', '')})"
        if changed_by_container:
            found.answer += ", a directory the container has written in"
        return found
    if changed_by_container:
        found.kind, found.host_path = "upper", os.path.join(upper, rel)
        found.answer = f"a directory made by the container (its upper dir: {found.host_path})"
        return found
    found.answer = "does not exist in the container"
    return found
