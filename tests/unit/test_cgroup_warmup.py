"""runtime/cgroups/warmup.py: which cgroup.procs the warm-up writes to
(fixture /proc/self/cgroup texts), and that on this host the write is a
move into the cgroup crispy is already in."""

from __future__ import annotations

import time
from pathlib import Path

from runtime.cgroups.warmup import MigrationWarmup, own_procs_file
from runtime.host import CgroupLayout, detect_cgroup_layout

HYBRID = """12:pids:/system.slice/crispy.service
11:memory:/system.slice/crispy.service
4:cpu,cpuacct:/system.slice/crispy.service
1:name=systemd:/system.slice/crispy.service
0::/system.slice/crispy.service
"""


def test_v1_and_hybrid_use_the_pids_hierarchy() -> None:
    layout = CgroupLayout("hybrid", "/sys/fs/cgroup/unified")
    assert own_procs_file(layout, HYBRID, Path("/cg")) == Path("/cg/pids/system.slice/crispy.service/cgroup.procs")
    no_pids = "\n".join(line for line in HYBRID.splitlines() if ":pids:" not in line)
    assert own_procs_file(CgroupLayout("v1", None), no_pids, Path("/cg")) == \
        Path("/cg/memory/system.slice/crispy.service/cgroup.procs")


def test_v2_uses_the_unified_entry() -> None:
    assert own_procs_file(CgroupLayout("v2", None), "0::/kubepods.slice/crispy\n", Path("/cg")) == \
        Path("/cg/kubepods.slice/crispy/cgroup.procs")
    assert own_procs_file(CgroupLayout("v2", None), "0::/\n", Path("/cg")) == Path("/cg/cgroup.procs")


def test_nothing_to_write_to() -> None:
    assert own_procs_file(CgroupLayout("v1", None), "1:name=systemd:/x\n", Path("/cg")) is None
    assert own_procs_file(CgroupLayout("v2", None), "", Path("/cg")) is None


def wait_done(w: MigrationWarmup) -> None:
    for _ in range(500):
        if w._busy.acquire(blocking=False):
            w._busy.release()
            return
        time.sleep(0.01)
    raise AssertionError("the warm-up thread did not finish")


def test_kick_on_a_tree_without_our_cgroup_is_harmless(tmp_path: Path) -> None:
    w = MigrationWarmup(CgroupLayout("v2", None), tmp_path)  # no cgroup.procs there
    w.kick()
    wait_done(w)
    assert list(tmp_path.iterdir()) == []


def test_kick_on_this_host_keeps_us_in_our_cgroup() -> None:
    before = Path("/proc/self/cgroup").read_text()
    w = MigrationWarmup(detect_cgroup_layout())
    w.kick()
    w.kick()  # a second kick while one is in flight is dropped, not queued
    wait_done(w)
    assert Path("/proc/self/cgroup").read_text() == before
