"""Host changes a bench run may need, each undone at the end: moving the
`hugetlb` controller out of the cgroup v2 tree so that crun 1.8 accepts this
hybrid host, and removing the cgroups the bench's pods leave behind."""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from runtime import host

CGROUP_ROOT = Path("/sys/fs/cgroup")
HUGETLB_V1 = CGROUP_ROOT / "hugetlb"


def crun_blocker() -> str | None:
    return host.crun_blocker(host.detect_cgroup_layout())


@dataclass
class HostChanges:
    """What this run changed, so that it can be reported and undone."""
    hugetlb_mounted: bool = False
    hugetlb_dir_created: bool = False
    log: list[str] = field(default_factory=list)

    def move_hugetlb(self) -> None:
        """Mounts a v1 hugetlb hierarchy, which takes the controller away from
        the v2 tree (a controller lives in one hierarchy at a time)."""
        if not HUGETLB_V1.exists():
            HUGETLB_V1.mkdir()
            self.hugetlb_dir_created = True
        subprocess.run(["mount", "-t", "cgroup", "-o", "hugetlb", "cgroup", str(HUGETLB_V1)],
                       check=True, capture_output=True, text=True)
        self.hugetlb_mounted = True
        self.log.append(f"mounted a cgroup v1 hugetlb hierarchy on {HUGETLB_V1} so that crun accepts this host")

    def undo(self, wait: float = 60.0) -> None:
        if self.hugetlb_mounted:
            # Other programs (tests running at the same time) may have made
            # cgroups in the hierarchy while it was mounted. Empty ones exist
            # only because of this mount and are removed; populated ones get
            # `wait` seconds to empty.
            deadline = time.monotonic() + wait
            others = _prune_empty(HUGETLB_V1)
            while others and time.monotonic() < deadline:
                time.sleep(1.0)
                others = _prune_empty(HUGETLB_V1)
            if others:
                # Unmounting would hide, not free, the hierarchy: the
                # controller would stay out of the v2 tree until a reboot.
                self.log.append(f"left {HUGETLB_V1} mounted: processes of other programs are in its cgroups "
                                f"{others}; undo by hand with 'umount {HUGETLB_V1} && rmdir {HUGETLB_V1}' "
                                f"once they are gone")
                return
            r = subprocess.run(["umount", str(HUGETLB_V1)], capture_output=True, text=True)
            if r.returncode != 0:
                self.log.append(f"could not unmount {HUGETLB_V1}: {r.stderr.strip()}")
                return
            if not _back_in_v2(deadline=time.monotonic() + 2.0):
                # A cgroup was made between the prune and the unmount: the
                # hierarchy lives on hidden. Mounting again reattaches it.
                subprocess.run(["mount", "-t", "cgroup", "-o", "hugetlb", "cgroup", str(HUGETLB_V1)],
                               capture_output=True)
                self.log.append(f"{HUGETLB_V1} was in use again while being unmounted; it is mounted again "
                                f"and must be unmounted by hand once empty")
                return
            self.hugetlb_mounted = False
            if self.hugetlb_dir_created:
                HUGETLB_V1.rmdir()
            self.log.append(f"unmounted {HUGETLB_V1}: hugetlb is back in the v2 tree")


def _back_in_v2(deadline: float) -> bool:
    """A freed v1 hierarchy gives its controller back to v2 asynchronously."""
    while True:
        if "hugetlb" in (CGROUP_ROOT / "unified" / "cgroup.controllers").read_text().split():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def _prune_empty(hierarchy: Path) -> list[str]:
    """rmdir every empty cgroup below `hierarchy`, deepest first; returns the
    top-level names still there (populated)."""
    dirs = [Path(d) for d, _, _ in os.walk(hierarchy) if Path(d) != hierarchy]
    for d in sorted(dirs, key=lambda p: len(p.parts), reverse=True):
        try:
            d.rmdir()
        except OSError:
            pass
    return sorted(p.name for p in hierarchy.iterdir() if p.is_dir())


def remove_cgroup_tree(name: str, root: Path = CGROUP_ROOT) -> list[str]:
    """rmdir, deepest first, every cgroup directory named `name` (and below)
    in each mounted hierarchy. Returns the paths that could not be removed
    (still populated: a leak worth reporting)."""
    failed: list[str] = []
    for hierarchy in sorted(root.iterdir()):
        top = hierarchy / name
        if not top.is_dir():
            continue
        dirs = [Path(d) for d, _, _ in os.walk(top)]
        for d in sorted(dirs, key=lambda p: len(p.parts), reverse=True):
            try:
                d.rmdir()
            except OSError:
                failed.append(str(d))
    return failed
