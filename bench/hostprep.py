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
        """Unmounts the hierarchy so the controller goes back to the v2 tree.

        Other programs (tests running at the same time) may make cgroups in
        it while it is mounted. Empty ones exist only because of this mount
        and are removed; populated ones get `wait` seconds to empty. An
        unmount only frees the hierarchy if it has no cgroup left at that
        instant; one made in between keeps it alive, hidden, with the
        controller stuck outside v2 — so the result is checked, and on a lost
        race the hierarchy is mounted again (which reattaches it) and the
        whole step retried."""
        if not self.hugetlb_mounted:
            return
        deadline = time.monotonic() + wait
        while True:
            others = _prune_empty(HUGETLB_V1)
            if not others:
                r = subprocess.run(["umount", str(HUGETLB_V1)], capture_output=True, text=True)
                if r.returncode != 0:
                    self.log.append(f"could not unmount {HUGETLB_V1}: {r.stderr.strip()}")
                    return
                if _back_in_v2(deadline=time.monotonic() + 2.0):
                    self.hugetlb_mounted = False
                    if self.hugetlb_dir_created:
                        try:
                            HUGETLB_V1.rmdir()
                        except OSError:
                            pass
                    self.log.append(f"unmounted {HUGETLB_V1}: hugetlb is back in the v2 tree")
                    return
                subprocess.run(["mount", "-t", "cgroup", "-o", "hugetlb", "cgroup", str(HUGETLB_V1)],
                               capture_output=True)
            if time.monotonic() > deadline:
                self.log.append(f"left {HUGETLB_V1} mounted: processes of other programs are in its cgroups "
                                f"{others or '(made while unmounting)'}; once they are gone, undo by hand with "
                                f"'umount {HUGETLB_V1} && rmdir {HUGETLB_V1}' and check that "
                                f"/sys/fs/cgroup/unified/cgroup.controllers lists hugetlb again")
                return
            time.sleep(0.5)


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
