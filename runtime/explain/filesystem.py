"""A container's filesystem as its mount namespace has it: the overlay root
(the writable upper dir and its size, each lower layer in order with the
image layer it unpacks), every mount with its source, type, options and
propagation, and the masked and read-only paths — each checked against
the OCI spec crispy handed the runtime."""

from __future__ import annotations

import os
import posixpath
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from runtime.container_stats import layer_usage


def _unescape(text: str) -> str:
    return text.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


@dataclass
class Mount:
    mount_id: int
    parent_id: int
    mountpoint: str
    root: str  # the part of the source filesystem mounted here
    fstype: str
    source: str
    options: list[str]  # per-mount: ro/rw, nosuid, nodev, noexec, relatime...
    super_options: list[str]  # per-filesystem
    propagation: str  # "private", "shared:N", "master:N", "unbindable" (space-separated when several)

    @property
    def readonly(self) -> bool:
        return "ro" in self.options

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["readonly"] = self.readonly
        return d


def parse_mountinfo(text: str) -> list[Mount]:
    """Sans-IO: /proc/<pid>/mountinfo, mount points as the process sees them."""
    out = []
    for line in text.splitlines():
        fields = line.split()
        try:
            sep = fields.index("-", 6)
        except ValueError:
            continue
        if len(fields) < sep + 3:
            continue
        optional = fields[6:sep]
        out.append(Mount(
            mount_id=int(fields[0]), parent_id=int(fields[1]), root=_unescape(fields[3]),
            mountpoint=_unescape(fields[4]), options=fields[5].split(","), fstype=fields[sep + 1],
            source=_unescape(fields[sep + 2]),
            super_options=fields[sep + 3].split(",") if len(fields) > sep + 3 else [],
            propagation=" ".join(optional) if optional else "private"))
    return out


def visible(mounts: list[Mount]) -> list[Mount]:
    """The mounts on top at each mount point (a later mount on the same
    point hides the earlier one)."""
    top: dict[str, Mount] = {}
    for m in mounts:
        top[m.mountpoint] = m
    return [m for m in mounts if top[m.mountpoint] is m]


def overlay_dirs(root: Mount) -> tuple[list[str], str, str]:
    """(lower dirs top-most first, upper dir, work dir) of an overlay mount.
    The kernel shows its options with ',' and ':' in paths escaped; crispy
    refuses such layer paths, so plain splitting is enough."""
    lowers: list[str] = []
    upper = work = ""
    for opt in root.super_options:
        key, _, value = opt.partition("=")
        if key == "lowerdir":
            lowers = [d for d in value.split(":") if d]
        elif key == "upperdir":
            upper = value
        elif key == "workdir":
            work = value
    return lowers, upper, work


@dataclass
class Layer:
    index: int  # 1 = the bottom layer
    dir: str
    chain_id: str = ""
    digest: str = ""  # the layer blob's digest, as the registry names it
    diff_id: str = ""  # the uncompressed tar's digest
    size: int | None = None  # bytes on disk, unpacked
    image: str = ""  # the image (tag or id) it came from

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RootFacts:
    fstype: str
    readonly: bool
    upper: str = ""
    upper_size: int | None = None
    upper_inodes: int | None = None
    layers: list[Layer] = field(default_factory=list)  # bottom first
    image: str = ""
    image_id: str = ""
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def chain_id_of(layer_dir: str) -> str:
    """Snapshot dirs are named by their chain ID's hex (images/snapshots.py);
    an ID-mapped view keeps the name."""
    name = os.path.basename(layer_dir.rstrip("/"))
    return f"sha256:{name}" if len(name) == 64 else ""


def root_facts(mounts: list[Mount], image: Any | None, image_name: str, spec_root: dict[str, Any],
               sizes: dict[str, int | None]) -> RootFacts:
    """`image`: the container's ImageRecord (or None if it is gone from the
    store); `sizes`: chain ID -> bytes, for layers measured before."""
    root = next((m for m in reversed(visible(mounts)) if m.mountpoint == "/"), None)
    if root is None:
        return RootFacts(fstype="?", readonly=False, warnings=["the process has no root mount (it is gone)"])
    facts = RootFacts(fstype=root.fstype, readonly=root.readonly, image=image_name,
                      image_id=getattr(image, "id", ""))
    if bool(spec_root.get("readonly")) != root.readonly:
        facts.warnings.append(f"the spec asks for a {'read-only' if spec_root.get('readonly') else 'writable'} root, "
                              f"the root is mounted {'ro' if root.readonly else 'rw'}")
    if root.fstype != "overlay":
        facts.warnings.append(f"the root is {root.fstype}, not crispy's overlay")
        return facts
    lowers, upper, _ = overlay_dirs(root)
    facts.upper = upper
    usage = layer_usage(Path(upper)) if upper else None
    if usage is not None:
        facts.upper_size, facts.upper_inodes = usage.used_bytes, usage.inodes_used
    chain = list(getattr(image, "chain_ids", []) or [])
    digests = list(getattr(image, "layer_blobs", []) or [])
    diff_ids = list(getattr(image, "diff_ids", []) or [])
    for i, d in enumerate(reversed(lowers)):
        layer = Layer(index=i + 1, dir=d, chain_id=chain_id_of(d))
        if layer.chain_id in chain:
            at = chain.index(layer.chain_id)
            layer.digest = digests[at] if at < len(digests) else ""
            layer.diff_id = diff_ids[at] if at < len(diff_ids) else ""
            layer.image = image_name
            if at != i:
                facts.warnings.append(f"lower dir {i + 1} is the image's layer {at + 1}: the overlay's layer order "
                                      f"differs from the image's")
        elif chain:
            facts.warnings.append(f"lower dir {d} is not a layer of image {image_name}")
        layer.size = sizes.get(layer.chain_id) if layer.chain_id in sizes else None
        facts.layers.append(layer)
    if chain and len(chain) != len(lowers):
        facts.warnings.append(f"the image has {len(chain)} layers, the overlay {len(lowers)} lower dirs")
    return facts


@dataclass
class PathCheck:
    path: str
    state: str  # "masked" / "read-only" / "absent" (nothing to mask) / "NOT masked" / "NOT read-only"
    how: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _mount_at(mounts: list[Mount], path: str) -> Mount | None:
    return next((m for m in reversed(visible(mounts)) if m.mountpoint == path), None)


def masked_paths(mounts: list[Mount], wanted: list[str], exists: Any) -> list[PathCheck]:
    """`exists(path)`: whether the path exists in the container (runtimes
    skip masking what is not there)."""
    out = []
    for p in wanted:
        m = _mount_at(mounts, p)
        if m is not None:
            # runc masks a directory with a read-only tmpfs and a file with a bind of /dev/null.
            how = f"{m.fstype} {'ro' if m.readonly else 'rw'}" + (f", bind of {m.root}" if m.root != "/" else "")
            out.append(PathCheck(p, "masked", how))
        else:
            out.append(PathCheck(p, "NOT masked" if exists(p) else "absent"))
    return out


def readonly_paths(mounts: list[Mount], wanted: list[str], exists: Any) -> list[PathCheck]:
    out = []
    for p in wanted:
        m = _mount_at(mounts, p)
        if m is not None and m.readonly:
            out.append(PathCheck(p, "read-only", m.fstype))
        elif m is not None:
            out.append(PathCheck(p, "NOT read-only", f"{m.fstype} mounted rw"))
        else:
            out.append(PathCheck(p, "NOT read-only" if exists(p) else "absent"))
    return out


def mount_table(mounts: list[Mount], spec_mounts: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """Every visible mount but the root, with the host path for binds
    (mountinfo names only the device), and the spec's mounts that the
    kernel does not have, or has with another read-only state."""
    by_dest = {posixpath.normpath(m.get("destination", "")): m for m in spec_mounts}
    table, warnings = [], []
    shown = visible(mounts)
    points = {m.mountpoint for m in shown}
    for m in shown:
        if m.mountpoint == "/":
            continue
        d = m.to_dict()
        spec = by_dest.get(m.mountpoint)
        options = (spec or {}).get("options") or []
        if spec is not None and (spec.get("type") == "bind" or "bind" in options or "rbind" in options):
            d["host_path"] = spec.get("source", "")
            if "ro" in options and not m.readonly:
                warnings.append(f"{m.mountpoint}: the spec asks for a read-only bind of {d['host_path']}, "
                                f"the kernel has it read-write")
        table.append(d)
    for dest, spec in by_dest.items():
        if dest not in points:
            warnings.append(f"{dest}: the spec mounts {spec.get('source') or spec.get('type')} there, "
                            f"the container has no mount at that point")
    return table, warnings
