"""Cgroup managers on this node's real hierarchies: temporary cgroups named
crispy-test-*, limits applied and read back, a process inside, a real OOM
kill, and removal (also on failure)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from cri.proto import api_pb2 as pb
from runtime.cgroups import ProcessGone, V1Manager, V2Manager, open_layout
from runtime.errors import FailedPrecondition, InvalidArgument
from runtime.host import detect_cgroup_layout

pytestmark = pytest.mark.integration

LAYOUT = detect_cgroup_layout()
v1_only = pytest.mark.skipif(LAYOUT.version != 1 or os.geteuid() != 0, reason="needs root on a cgroup v1 host")


def _force_remove(mgr, path: str) -> None:
    for pid in mgr.pids(path):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        mgr.remove(path)
    except Exception:
        pass


@pytest.fixture
def v1() -> Iterator[tuple[V1Manager, str]]:
    mgr = open_layout()
    assert isinstance(mgr, V1Manager)
    base = f"/crispy-test-{uuid.uuid4().hex[:10]}"
    yield mgr, base
    _force_remove(mgr, base + "/c")
    _force_remove(mgr, base)
    for d in mgr._dirs():
        assert not (d / base.lstrip("/")).exists(), f"left {d / base.lstrip('/')}"


def spawn_in(dirs: list[Path], code: str) -> subprocess.Popen:
    def join() -> None:
        for d in dirs:
            with open(d / "cgroup.procs", "w") as f:
                f.write(str(os.getpid()))
    return subprocess.Popen([sys.executable, "-c", code], preexec_fn=join, stdout=subprocess.PIPE)


@v1_only
def test_v1_create_limits_read_back_remove(v1):
    mgr, base = v1
    res = pb.LinuxContainerResources(cpu_shares=256, cpu_quota=20000, cpu_period=100000, cpuset_cpus="0",
                                     memory_limit_in_bytes=64 << 20, memory_swap_limit_in_bytes=64 << 20)
    mgr.create(base, res)
    for d in mgr._dirs():
        assert (d / base.lstrip("/")).is_dir(), d
    back = mgr.read_resources(base)
    assert (back.cpu_shares, back.cpu_quota, back.cpu_period) == (256, 20000, 100000)
    assert back.memory_limit_in_bytes == 64 << 20 and back.memory_swap_limit_in_bytes == 64 << 20
    assert back.cpuset_cpus == "0" and back.cpuset_mems != ""
    # A live update, raising the limit past the current memsw (order matters).
    mgr.update(base, pb.LinuxContainerResources(memory_limit_in_bytes=128 << 20, memory_swap_limit_in_bytes=256 << 20))
    back = mgr.read_resources(base)
    assert back.memory_limit_in_bytes == 128 << 20 and back.memory_swap_limit_in_bytes == 256 << 20
    mgr.update(base, pb.LinuxContainerResources(memory_limit_in_bytes=16 << 20, memory_swap_limit_in_bytes=16 << 20))
    assert mgr.read_resources(base).memory_limit_in_bytes == 16 << 20
    # The memory limit alone, above the current memsw: memsw follows.
    mgr.update(base, pb.LinuxContainerResources(memory_limit_in_bytes=32 << 20))
    back = mgr.read_resources(base)
    assert back.memory_limit_in_bytes == 32 << 20 and back.memory_swap_limit_in_bytes == 32 << 20
    with pytest.raises(InvalidArgument, match="cpuset.cpus"):
        mgr.update(base, pb.LinuxContainerResources(cpuset_cpus="999"))
    mgr.remove(base)
    assert not mgr.exists(base)
    mgr.remove(base)  # already gone is fine


@v1_only
def test_v1_process_stats_pids_and_busy_remove(v1):
    mgr, base = v1
    child = base + "/c"
    mgr.create(child, pb.LinuxContainerResources(memory_limit_in_bytes=256 << 20))
    dirs = [d / child.lstrip("/") for d in mgr._dirs()]
    proc = spawn_in(dirs, "import sys,time; b = b'x' * (8 << 20); print('ready', flush=True); time.sleep(60)")
    try:
        assert proc.stdout.readline().strip() == b"ready"
        assert mgr.pids(child) == [proc.pid]
        assert mgr.pids(base) == []  # cgroup.procs lists only direct members
        st = mgr.stats(child)
        assert st.memory_usage_bytes and st.memory_usage_bytes >= 8 << 20
        assert st.memory_working_set_bytes and st.cpu_usage_ns and st.cpu_usage_ns > 0
        assert st.pids_current == 1 and st.memory_limit_bytes == 256 << 20
        with pytest.raises(FailedPrecondition, match=str(proc.pid)):
            mgr.remove(base)  # the pod cgroup with a live process below it
    finally:
        proc.kill()
        proc.wait()
    assert not mgr.oom_killed(child)
    mgr.remove(base)  # removes the child cgroup too
    assert not mgr.exists(child) and not mgr.exists(base)


@v1_only
def test_v1_real_oom_kill_detected(v1):
    mgr, base = v1
    child = base + "/c"
    mgr.create(child, pb.LinuxContainerResources(memory_limit_in_bytes=48 << 20, memory_swap_limit_in_bytes=48 << 20))
    dirs = [d / child.lstrip("/") for d in mgr._dirs()]
    proc = spawn_in(dirs, "b = b'x' * (512 << 20)")
    assert proc.wait(timeout=60) == -signal.SIGKILL
    assert mgr.oom_killed(child)
    assert mgr.stats(child).oom_kills >= 1
    mgr.remove(base)


@pytest.fixture
def v2_real() -> Iterator[V2Manager]:
    """A real cgroup2 tree: the hybrid host's unified mount, under a test
    directory we own so no host-level subtree_control changes."""
    if LAYOUT.mode == "v2":
        unified = Path(LAYOUT.unified_path)
    elif LAYOUT.mode == "hybrid" and os.geteuid() == 0:
        unified = Path(LAYOUT.unified_path)
    else:
        pytest.skip("no cgroup2 tree on this node")
    top = unified / f"crispy-test-{uuid.uuid4().hex[:10]}"
    top.mkdir()
    mgr = V2Manager(top)
    yield mgr
    _force_remove(mgr, "/")
    try:
        top.rmdir()
    except FileNotFoundError:
        pass
    assert not top.exists()


def test_v2_real_tree_create_pids_remove(v2_real):
    mgr = v2_real
    mgr.create("/pod/c")
    assert mgr.exists("/pod/c")
    proc = spawn_in([mgr.root / "pod/c"], "import time; print('ready', flush=True); time.sleep(60)")
    try:
        assert proc.stdout.readline().strip() == b"ready"
        assert mgr.pids("/pod/c") == [proc.pid]
        st = mgr.stats("/pod/c")
        assert st.cpu_usage_ns is not None
        if (mgr.root / "pod/c/cpu.pressure").exists():
            assert "total" in st.psi["cpu"]["some"]
        with pytest.raises(FailedPrecondition):
            mgr.remove("/pod")
    finally:
        proc.kill()
        proc.wait()
    assert not mgr.oom_killed("/pod/c")
    mgr.remove("/pod")
    assert not mgr.exists("/pod")


@v1_only
def test_v1_hugetlb_on_this_host(v1):
    """Whichever way this host mounts hugetlb: as a v1 hierarchy the limit
    is applied and read back, otherwise nothing is claimed."""
    mgr, base = v1
    sizes = sorted(p.name.split("-")[1] for p in Path("/sys/kernel/mm/hugepages").glob("hugepages-*"))
    if not sizes:
        pytest.skip("no huge page sizes on this kernel")
    page = {"2048kB": "2MB", "1048576kB": "1GB"}.get(sizes[-1] if "2048kB" not in sizes else "2048kB")
    mgr.create(base, pb.LinuxContainerResources(hugepage_limits=[pb.HugepageLimit(page_size=page, limit=4 << 20)]))
    got = {h.page_size: h.limit for h in mgr.read_resources(base).hugepage_limits}
    if "hugetlb" in mgr.hierarchies:
        assert got[page] == 4 << 20
    else:
        assert got == {}
    mgr.remove(base)


@v1_only
def test_v1_add_process_real(v1):
    mgr, base = v1
    mgr.create(base)
    proc = subprocess.Popen(["sleep", "60"])
    try:
        mgr.add_process(base, proc.pid)
        assert mgr.pids(base) == [proc.pid]
        own = Path(f"/proc/{proc.pid}/cgroup").read_text()
        assert f"memory:{base}\n" in own and f"pids:{base}\n" in own
    finally:
        proc.kill()
        proc.wait()
    mgr.remove(base)


@v1_only
def test_v1_add_process_of_a_gone_process(v1):
    """A process that exited before the move is told apart from a failure:
    CreateContainer moves conmon's first process, which may have exited."""
    mgr, base = v1
    mgr.create(base)
    proc = subprocess.Popen(["true"])
    proc.wait()
    with pytest.raises(ProcessGone):
        mgr.add_process(base, proc.pid)
    mgr.remove(base)


def test_v2_real_add_process_of_a_gone_process(v2_real):
    mgr = v2_real
    mgr.create("/pod")
    proc = subprocess.Popen(["true"])
    proc.wait()
    with pytest.raises(ProcessGone):
        mgr.add_process("/pod", proc.pid)
    mgr.remove("/pod")


def test_v2_real_add_process_goes_to_leaf(v2_real):
    mgr = v2_real
    mgr.create("/pod")
    proc = subprocess.Popen(["sleep", "60"])
    try:
        mgr.add_process("/pod", proc.pid)
        assert mgr.pids("/pod/crispy-infra") == [proc.pid]
        assert mgr.pids("/pod") == []
    finally:
        proc.kill()
        proc.wait()
    mgr.remove("/pod")
    assert not mgr.exists("/pod")
