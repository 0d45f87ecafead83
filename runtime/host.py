"""Facts about the node that decide how crispy runs containers: which cgroup
layout the kernel presents and which OCI runtime works on it."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from runtime.oci import probe

CGROUP_ROOT = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class CgroupLayout:
    # "v2" (unified), "hybrid" (v1 controllers plus a v2 tree) or "v1".
    mode: str
    # Where the v2 tree is mounted, if there is one.
    unified_path: str | None

    @property
    def version(self) -> int:
        return 2 if self.mode == "v2" else 1


@dataclass(frozen=True)
class OciRuntimeChoice:
    name: str
    path: str
    version: str
    reason: str


def _fs_type(path: Path) -> str | None:
    best: tuple[int, str] | None = None
    try:
        with open("/proc/self/mounts") as f:
            for line in f:
                parts = line.split()
                mnt = parts[1].replace("\\040", " ")
                if mnt == str(path):
                    best = (len(mnt), parts[2])
    except OSError:
        return None
    return best[1] if best else None


def detect_cgroup_layout(root: Path = CGROUP_ROOT) -> CgroupLayout:
    if _fs_type(root) == "cgroup2":
        return CgroupLayout("v2", str(root))
    unified = root / "unified"
    if _fs_type(unified) == "cgroup2":
        return CgroupLayout("hybrid", str(unified))
    return CgroupLayout("v1", None)


def _version_of(path: str) -> str:
    # The same answer the runtime factory reads later: one run per binary.
    return probe.probe(path).version


def crun_blocker(layout: CgroupLayout) -> str | None:
    """Why crun cannot run containers here, or None.

    crun (1.8 at least) refuses a hybrid host whose v2 tree has any controller
    enabled, since it cannot tell which hierarchy owns it."""
    if layout.mode != "hybrid" or not layout.unified_path:
        return None
    try:
        controllers = Path(layout.unified_path, "cgroup.controllers").read_text().split()
    except OSError:
        return None
    if controllers:
        return (f"crun refuses hybrid cgroup hosts whose v2 tree holds controllers "
                f"({', '.join(controllers)} in {layout.unified_path}); mount them as v1 hierarchies to use crun")
    return None


def choose_oci_runtime(wanted: str, layout: CgroupLayout) -> OciRuntimeChoice | None:
    """`wanted` is "auto", a name on PATH or an absolute path."""
    if wanted != "auto":
        path = wanted if os.path.isabs(wanted) else shutil.which(wanted)
        if not path or not os.access(path, os.X_OK):
            return None
        return OciRuntimeChoice(os.path.basename(path), path, _version_of(path), "chosen by config")
    crun = shutil.which("crun")
    runc = shutil.which("runc")
    blocker = crun_blocker(layout) if crun else "crun is not installed"
    if crun and not blocker:
        return OciRuntimeChoice("crun", crun, _version_of(crun), "crun is installed and supports this cgroup layout")
    if runc:
        return OciRuntimeChoice("runc", runc, _version_of(runc), f"runc, because {blocker}")
    return None
