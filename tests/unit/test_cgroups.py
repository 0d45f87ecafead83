"""Cgroup managers on fixture trees written by the tests (no kernel): the
files v1 and v2 read and write, stats and OOM detection."""

from __future__ import annotations

from pathlib import Path

import pytest

from cri.proto import api_pb2 as pb
from runtime.cgroups import V1Manager, V2Manager, fs_path, open_layout, shares_to_weight, slice_path, weight_to_shares
from runtime.cgroups.manager import read_flat_keyed, read_int, read_text
from runtime.errors import InvalidArgument
from runtime.host import CgroupLayout

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def write_tree(base: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        p = base / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


# ---- v2 -----------------------------------------------------------------------------

@pytest.fixture
def v2(tmp_path: Path) -> V2Manager:
    root = tmp_path / "cg2"
    write_tree(root, {"cgroup.controllers": "cpuset cpu io memory hugetlb pids rdma misc\n",
                      "cgroup.subtree_control": "cpu\n", "cgroup.procs": "1\n"})
    mgr = open_layout(root, layout=CgroupLayout("v2", str(root)))
    assert isinstance(mgr, V2Manager)
    return mgr


def v2_container(mgr: V2Manager, rel: str, extra: dict[str, str] | None = None) -> Path:
    files = {"cpu.weight": "100\n", "cpu.max": "max 100000\n", "memory.max": "max\n", "memory.swap.max": "max\n",
             "cpuset.cpus": "\n", "cpuset.mems": "\n", "hugetlb.2MB.max": "max\n", "hugetlb.2MB.rsvd.max": "max\n",
             "cgroup.procs": "", "memory.events": "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n"}
    files.update(extra or {})
    write_tree(mgr.root / rel, files)
    return mgr.root / rel


def test_v2_create_enables_controllers_down_the_chain(v2):
    v2.create("/crispy/pod1")
    assert (v2.root / "crispy/pod1").is_dir()
    # Only what the parent lacked is added; "+" syntax as the kernel wants.
    assert (v2.root / "cgroup.subtree_control").read_text() == "+cpuset +memory +pids +hugetlb +io"


def test_v2_update_and_read_back(v2):
    cg = v2_container(v2, "crispy/pod1/crispy-c1")
    res = pb.LinuxContainerResources(cpu_shares=1024, cpu_quota=50000, cpu_period=100000, cpuset_cpus="0-1",
                                     cpuset_mems="0", memory_limit_in_bytes=64 << 20,
                                     memory_swap_limit_in_bytes=128 << 20,
                                     hugepage_limits=[pb.HugepageLimit(page_size="2MB", limit=4 << 20)],
                                     unified={"memory.high": "50000000", "pids.max": "32"})
    v2.update("/crispy/pod1/crispy-c1", res)
    assert (cg / "cpu.weight").read_text() == "39"
    assert (cg / "cpu.max").read_text() == "50000 100000"
    assert (cg / "memory.max").read_text() == str(64 << 20)
    assert (cg / "memory.swap.max").read_text() == str(64 << 20)  # CRI counts memory+swap; v2 swap alone
    assert (cg / "cpuset.cpus").read_text() == "0-1"
    assert (cg / "hugetlb.2MB.max").read_text() == str(4 << 20)
    assert (cg / "memory.high").read_text() == "50000000"
    assert (cg / "pids.max").read_text() == "32"
    back = v2.read_resources("/crispy/pod1/crispy-c1")
    assert back.cpu_quota == 50000 and back.cpu_period == 100000
    assert back.memory_limit_in_bytes == 64 << 20 and back.memory_swap_limit_in_bytes == 128 << 20
    assert back.cpuset_cpus == "0-1" and back.cpuset_mems == "0"
    assert abs(back.cpu_shares - 1024) < 30  # the weight scale is coarser than shares
    assert [(h.page_size, h.limit) for h in back.hugepage_limits] == [("2MB", 4 << 20)]


def test_v2_quota_only_keeps_period_and_unlimited(v2):
    cg = v2_container(v2, "c", {"cpu.max": "max 50000\n"})
    v2.update("/c", pb.LinuxContainerResources(cpu_quota=20000))
    assert (cg / "cpu.max").read_text() == "20000 50000"
    v2.update("/c", pb.LinuxContainerResources(cpu_quota=-1))
    assert (cg / "cpu.max").read_text() == "max 50000"
    back = v2.read_resources("/c")
    assert back.cpu_quota == 0 and back.memory_limit_in_bytes == 0  # "max" = no limit


def test_v2_refuses_bad_unified_keys(v2):
    v2_container(v2, "c")
    for key in ("../../etc/passwd", "cgroup.procs", "nodot"):
        with pytest.raises(InvalidArgument, match="not a cgroup v2 controller file"):
            v2.update("/c", pb.LinuxContainerResources(unified={key: "1"}))


def test_v2_stats(v2, tmp_path):
    v2_container(v2, "c", {
        "cpu.stat": "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n",
        "memory.current": str(52428800) + "\n",
        "memory.stat": (FIXTURES / "cgroupv2/memory.stat").read_text(),
        "memory.swap.current": "4096\n", "pids.current": "3\n", "memory.max": "67108864\n",
        "memory.pressure": "some avg10=1.50 avg60=0.25 avg300=0.00 total=12345\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=10\n",
    })
    st = v2.stats("/c")
    assert st.cpu_usage_ns == 1_500_000
    assert st.memory_usage_bytes == 52428800
    assert st.memory_working_set_bytes == 52428800 - 16777216
    assert st.memory_rss_bytes == 31457280
    assert (st.page_faults, st.major_page_faults) == (17701, 73)
    assert st.pids_current == 3 and st.swap_usage_bytes == 4096 and st.memory_limit_bytes == 64 << 20
    assert st.oom_kills == 0 and st.timestamp_ns > 0
    assert st.psi["memory"]["some"] == {"avg10": 1.5, "avg60": 0.25, "avg300": 0.0, "total": 12345.0}
    assert st.psi["memory"]["full"]["total"] == 10.0 and "cpu" not in st.psi


def test_v2_oom_killed_and_pids(v2):
    cg = v2_container(v2, "c", {"cgroup.procs": "42\n7\n42\n"})
    assert not v2.oom_killed("/c")
    (cg / "memory.events").write_text("low 0\nhigh 0\nmax 5\noom 1\noom_kill 1\noom_group_kill 0\n")
    assert v2.oom_killed("/c")
    assert v2.pids("/c") == [7, 42]
    assert v2.pids("/gone") == []
    assert not v2.oom_killed("/gone")


def test_v2_systemd_driver_paths(tmp_path):
    root = tmp_path / "cg2"
    write_tree(root, {"cgroup.controllers": "cpu memory\n", "cgroup.subtree_control": ""})
    mgr = V2Manager(root, driver="systemd")
    mgr.create("kubepods-besteffort-pod1.slice")
    assert (root / "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice").is_dir()
    v2_container(mgr, "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice/crispy-c1.scope",
                 {"cgroup.procs": "9\n"})
    assert mgr.pids("kubepods-besteffort-pod1.slice:crispy:c1") == [9]


def test_weight_conversion():
    assert shares_to_weight(2) == 1 and shares_to_weight(262144) == 10000
    assert shares_to_weight(1024) == 39 and shares_to_weight(0) == 0
    assert weight_to_shares(1) == 2 and weight_to_shares(10000) == 262144


def test_slice_paths():
    assert slice_path("kubepods-burstable-pod12.slice") == "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod12.slice"
    assert slice_path("-.slice") == "/"
    assert fs_path("system.slice:crispy:abc", "systemd") == "/system.slice/crispy-abc.scope"
    assert fs_path("/crispy/pod1", "cgroupfs") == "/crispy/pod1"
    for bad in ("/not/a/slice", "a--b.slice", "x.service"):
        with pytest.raises(InvalidArgument):
            slice_path(bad)


# ---- v1 -----------------------------------------------------------------------------

@pytest.fixture
def v1(tmp_path: Path) -> V1Manager:
    root = tmp_path / "cg1"
    for h in ("cpu,cpuacct", "cpuset", "memory", "pids", "systemd"):
        write_tree(root / h, {"cgroup.procs": ""})
    write_tree(root / "cpuset", {"cpuset.cpus": "0-3\n", "cpuset.mems": "0\n"})
    (root / "cpu").symlink_to("cpu,cpuacct")
    (root / "cpuacct").symlink_to("cpu,cpuacct")
    mgr = open_layout(root, layout=CgroupLayout("v1", None))
    assert isinstance(mgr, V1Manager)
    return mgr


def v1_container(mgr: V1Manager, rel: str, extra: dict[str, dict[str, str]] | None = None) -> None:
    files = {
        "cpu,cpuacct": {"cpu.shares": "1024\n", "cpu.cfs_period_us": "100000\n", "cpu.cfs_quota_us": "-1\n",
                        "cpuacct.usage": "0\n", "cgroup.procs": ""},
        "cpuset": {"cpuset.cpus": "\n", "cpuset.mems": "\n", "cgroup.procs": ""},
        "memory": {"memory.limit_in_bytes": "9223372036854771712\n", "memory.memsw.limit_in_bytes": "9223372036854771712\n",
                   "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n", "cgroup.procs": ""},
        "pids": {"pids.current": "0\n", "cgroup.procs": ""},
    }
    for h, more in (extra or {}).items():
        files[h].update(more)
    for h, fs in files.items():
        write_tree(mgr.root / h / rel, fs)


def test_v1_finds_comounted_hierarchies(v1):
    assert v1.hierarchies["cpu"].name == "cpu,cpuacct"
    assert v1.hierarchies["cpuacct"].name == "cpu,cpuacct"
    assert set(v1.hierarchies) == {"cpu", "cpuacct", "cpuset", "memory", "pids", "name=systemd"}
    # Each hierarchy once, even though cpu and cpuacct share one.
    assert len(v1._dirs()) == 5


def test_v1_create_copies_cpuset_from_parent(v1):
    # Pretend the kernel made the files empty on mkdir, as it does.
    write_tree(v1.root / "cpuset/crispy", {"cpuset.cpus": "", "cpuset.mems": ""})
    write_tree(v1.root / "cpuset/crispy/pod1", {"cpuset.cpus": "", "cpuset.mems": ""})
    v1.create("/crispy/pod1")
    for h in ("cpu,cpuacct", "cpuset", "memory", "pids", "systemd"):
        assert (v1.root / h / "crispy/pod1").is_dir(), h
    assert (v1.root / "cpuset/crispy/pod1/cpuset.cpus").read_text() == "0-3"
    assert (v1.root / "cpuset/crispy/cpuset.mems").read_text() == "0"


def test_v1_update_and_read_back(v1):
    v1_container(v1, "pod/c")
    v1.update("/pod/c", pb.LinuxContainerResources(cpu_shares=512, cpu_quota=25000, cpu_period=50000, cpuset_cpus="1",
                                                   cpuset_mems="0", memory_limit_in_bytes=32 << 20,
                                                   memory_swap_limit_in_bytes=64 << 20))
    assert (v1.root / "cpu,cpuacct/pod/c/cpu.shares").read_text() == "512"
    assert (v1.root / "cpu,cpuacct/pod/c/cpu.cfs_quota_us").read_text() == "25000"
    assert (v1.root / "memory/pod/c/memory.limit_in_bytes").read_text() == str(32 << 20)
    assert (v1.root / "memory/pod/c/memory.memsw.limit_in_bytes").read_text() == str(64 << 20)
    back = v1.read_resources("/pod/c")
    assert (back.cpu_shares, back.cpu_quota, back.cpu_period) == (512, 25000, 50000)
    assert (back.memory_limit_in_bytes, back.memory_swap_limit_in_bytes) == (32 << 20, 64 << 20)
    assert (back.cpuset_cpus, back.cpuset_mems) == ("1", "0")


def test_v1_unlimited_reads_as_zero(v1):
    v1_container(v1, "c")
    back = v1.read_resources("/c")
    assert back.memory_limit_in_bytes == 0 and back.cpu_quota == 0 and back.memory_swap_limit_in_bytes == 0


def test_v1_refuses_unified(v1):
    v1_container(v1, "c")
    with pytest.raises(InvalidArgument, match="cgroup v2"):
        v1.update("/c", pb.LinuxContainerResources(unified={"memory.high": "1"}))


def test_v1_hugetlb_when_mounted_or_skipped(v1):
    v1_container(v1, "c")
    hp = pb.LinuxContainerResources(hugepage_limits=[pb.HugepageLimit(page_size="2MB", limit=2 << 20)])
    v1.update("/c", hp)  # no hugetlb hierarchy: nothing applied, and nothing reported
    assert list(v1.read_resources("/c").hugepage_limits) == []
    write_tree(v1.root / "hugetlb", {"cgroup.procs": ""})
    write_tree(v1.root / "hugetlb/c", {"hugetlb.2MB.limit_in_bytes": "9223372036854771712\n", "cgroup.procs": "",
                                       "hugetlb.2MB.rsvd.limit_in_bytes": "9223372036854771712\n"})
    mgr = V1Manager(v1.root)
    mgr.update("/c", hp)
    assert (v1.root / "hugetlb/c/hugetlb.2MB.limit_in_bytes").read_text() == str(2 << 20)
    assert [(h.page_size, h.limit) for h in mgr.read_resources("/c").hugepage_limits] == [("2MB", 2 << 20)]


def test_v1_bad_values_refused_before_writing(v1):
    v1_container(v1, "c")
    with pytest.raises(InvalidArgument, match="at least"):
        v1.update("/c", pb.LinuxContainerResources(memory_limit_in_bytes=100, memory_swap_limit_in_bytes=50))
    assert (v1.root / "memory/c/memory.limit_in_bytes").read_text() == "9223372036854771712\n"


def test_v1_stats_and_oom(v1):
    v1_container(v1, "c", {
        "cpu,cpuacct": {"cpuacct.usage": "123456789\n"},
        "memory": {"memory.usage_in_bytes": "52428800\n", "memory.memsw.usage_in_bytes": "52432896\n",
                   "memory.stat": (FIXTURES / "cgroupv1/memory.stat").read_text(),
                   "memory.limit_in_bytes": "67108864\n", "cgroup.procs": "5\n6\n"},
        "pids": {"pids.current": "2\n", "cgroup.procs": "5\n6\n"},
    })
    st = v1.stats("/c")
    assert st.cpu_usage_ns == 123456789
    assert st.memory_usage_bytes == 52428800
    assert st.memory_working_set_bytes == 52428800 - 16777216  # total_inactive_file, hierarchical
    assert st.memory_rss_bytes == 31457280
    assert (st.page_faults, st.major_page_faults) == (17701, 73)
    assert st.memory_limit_bytes == 64 << 20 and st.pids_current == 2 and st.swap_usage_bytes == 4096
    assert v1.pids("/c") == [5, 6]
    assert not v1.oom_killed("/c")
    (v1.root / "memory/c/memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
    assert v1.oom_killed("/c") and v1.stats("/c").oom_kills == 2


def test_v1_add_process_writes_every_hierarchy(v1):
    v1.create("/pod")
    v1.add_process("/pod", 4242)
    for h in ("cpu,cpuacct", "cpuset", "memory", "pids", "systemd"):
        assert (v1.root / h / "pod/cgroup.procs").read_text() == "4242", h


def test_v2_add_process_uses_a_leaf(v2):
    v2.create("/pod")
    v2.add_process("/pod", 4242)
    assert (v2.root / "pod/crispy-infra/cgroup.procs").read_text() == "4242"


@pytest.mark.parametrize("name", ["/", "", "//"])
def test_remove_refuses_the_root(v1, v2, name):
    for mgr in (v1, v2):
        with pytest.raises(InvalidArgument):
            mgr.remove(name)
    systemd = V2Manager(v2.root, driver="systemd")
    with pytest.raises(InvalidArgument, match="root cgroup"):
        systemd.remove("-.slice")


def test_v1_hierarchies_from_the_mount_table(tmp_path):
    from runtime.cgroups.v1 import mounted_hierarchies
    mi = tmp_path / "mountinfo"
    mi.write_text(
        "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
        "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct\n"
        "33 31 0:30 / /sys/fs/cgroup/memory rw,relatime shared:9 - cgroup cgroup rw,memory\n"
        "34 31 0:31 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd\n"
        "35 31 0:32 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n"
        "36 22 0:33 / /elsewhere/pids rw - cgroup cgroup rw,pids\n")
    pc = tmp_path / "cgroups"
    pc.write_text("#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpu\t1\t1\t1\ncpuacct\t1\t1\t1\nmemory\t2\t1\t1\n"
                  "pids\t3\t1\t1\nhugetlb\t0\t1\t1\n")
    got = mounted_hierarchies(Path("/sys/fs/cgroup"), str(mi), str(pc))
    assert got == {"cpu": Path("/sys/fs/cgroup/cpu,cpuacct"), "cpuacct": Path("/sys/fs/cgroup/cpu,cpuacct"),
                   "memory": Path("/sys/fs/cgroup/memory"), "name=systemd": Path("/sys/fs/cgroup/systemd")}


def test_v1_unmounted_hierarchy_is_skipped(v1):
    # What an unmounted hierarchy leaves: a plain directory, no cgroup files.
    (v1.root / "pids/cgroup.procs").unlink()
    v1.create("/pod")
    assert not (v1.root / "pids/pod").exists()
    assert v1.stats("/pod").pids_current is None


# ---- file reads -----------------------------------------------------------------------

def test_read_tolerant_takes_any_oserror_and_bad_bytes_as_absent_strict_only_missing(tmp_path):
    (tmp_path / "a_dir").mkdir()
    (tmp_path / "bytes").write_bytes(b"12\xff\n")
    (tmp_path / "file").write_text("7\n")
    for tolerant in (False, True):
        assert read_text(tmp_path / "missing", tolerant) is None
        assert read_text(tmp_path / "file" / "below", tolerant) is None  # ENOTDIR: a cgroup gone
        assert read_int(tmp_path / "file", tolerant) == 7
    # EISDIR stands for any other error (ENODEV, ESRCH): the managers and the
    # CRI metrics raise it, explain reports the fact as absent.
    with pytest.raises(IsADirectoryError):
        read_text(tmp_path / "a_dir")
    with pytest.raises(UnicodeDecodeError):
        read_text(tmp_path / "bytes")
    assert read_text(tmp_path / "a_dir", tolerant=True) is None
    assert read_flat_keyed(tmp_path / "a_dir", tolerant=True) == {}
    assert read_text(tmp_path / "bytes", tolerant=True) == "12\ufffd\n"
    assert read_int(tmp_path / "bytes", tolerant=True) is None
