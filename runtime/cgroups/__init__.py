"""Control groups: names in both driver forms, and managers for the v1
(and hybrid) and v2 layouts.

    mgr = open_layout(driver="cgroupfs")
    mgr.create("/crispy/pod-abc", resources)   # a pod's cgroup
    mgr.stats("/crispy/pod-abc/crispy-<id>")   # a container's, by its cgroupsPath
"""

from __future__ import annotations

from pathlib import Path

from runtime.cgroups.manager import CgroupManager, CgroupStats, ProcessGone
from runtime.cgroups.paths import cgroups_path, fs_path, slice_path
from runtime.cgroups.v1 import V1Manager
from runtime.cgroups.v2 import V2Manager, shares_to_weight, weight_to_shares
from runtime.host import CGROUP_ROOT, CgroupLayout, detect_cgroup_layout

__all__ = ["open_layout", "manager_for", "CgroupManager", "CgroupStats", "ProcessGone", "V1Manager", "V2Manager",
           "cgroups_path", "fs_path", "slice_path", "shares_to_weight", "weight_to_shares"]


def manager_for(layout: CgroupLayout, root: Path = CGROUP_ROOT, driver: str = "cgroupfs") -> CgroupManager:
    if layout.mode == "v2":
        return V2Manager(Path(layout.unified_path or root), driver)
    unified = Path(layout.unified_path) if layout.mode == "hybrid" and layout.unified_path else None
    return V1Manager(root, driver, unified=unified)


def open_layout(root: Path = CGROUP_ROOT, driver: str = "cgroupfs",
                layout: CgroupLayout | None = None) -> CgroupManager:
    """The manager for the layout the kernel presents at `root`; tests pass
    a fixture tree and its `layout` (detection reads the mount table)."""
    return manager_for(layout or detect_cgroup_layout(root), root, driver)
