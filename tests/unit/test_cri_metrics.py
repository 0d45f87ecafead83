"""The CRI metrics (cri/servicers/metrics.py over runtime/pod_metrics.py
and runtime/cgroups/metrics.py): cgroup v1 and v2 fixture trees read into
the same record, every family critest expects present, one label set per
family in descriptors and samples alike; Stream* paging; CRIU's refusal."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from cri.proto import api_pb2 as pb
from cri.servicers import metrics
from cri.servicers.paging import pages
from runtime.cgroups.metrics import read_v1, read_v2
from runtime.container_stats import parse_net_dev
from runtime.criu import Criu
from runtime.pod_metrics import ContainerReading, FilesystemReading, PodReading
from runtime.store import ContainerRecord, SandboxRecord

TICK_NS = 1_000_000_000 // os.sysconf("SC_CLK_TCK")

# What critest (cri-tools pkg/validate/pod.go) expects, less what it lists as
# not implemented by any runtime yet.
EXPECTED = """container_blkio_device_usage_total container_cpu_cfs_periods_total
container_cpu_cfs_throttled_periods_total container_cpu_cfs_throttled_seconds_total container_cpu_system_seconds_total
container_cpu_usage_seconds_total container_cpu_user_seconds_total container_file_descriptors container_fs_inodes_free
container_fs_inodes_total container_fs_limit_bytes container_fs_reads_bytes_total container_fs_reads_total
container_fs_usage_bytes container_fs_writes_bytes_total container_fs_writes_total container_last_seen
container_memory_cache container_memory_failcnt container_memory_failures_total container_memory_kernel_usage
container_memory_mapped_file container_memory_max_usage_bytes container_memory_rss container_memory_swap
container_memory_usage_bytes container_memory_working_set_bytes container_network_receive_bytes_total
container_network_receive_errors_total container_network_receive_packets_dropped_total
container_network_receive_packets_total container_network_transmit_bytes_total container_network_transmit_errors_total
container_network_transmit_packets_dropped_total container_network_transmit_packets_total container_oom_events_total
container_processes container_sockets container_spec_cpu_period container_spec_cpu_shares
container_spec_memory_limit_bytes container_spec_memory_swap_limit_bytes container_start_time_seconds
container_threads container_threads_max""".split()


def write(d: Path, files: dict[str, str]) -> None:
    d.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (d / name).write_text(text)


def v2_tree(cg: Path) -> Path:
    write(cg, {
        "cpu.stat": "usage_usec 3500000\nuser_usec 2000000\nsystem_usec 1500000\nnr_periods 40\nnr_throttled 4\n"
                    "throttled_usec 2500000\n",
        "cpu.max": "50000 100000\n", "cpu.weight": "100\n",
        "memory.current": "10485760\n", "memory.peak": "20971520\n",
        "memory.stat": "anon 4096000\nfile 3000000\nfile_mapped 12288\nkernel 65536\ninactive_file 1048576\n"
                       "pgfault 900\npgmajfault 9\n",
        "memory.swap.current": "0\n", "memory.max": "268435456\n", "memory.swap.max": "max\n", "memory.low": "1048576\n",
        "memory.events": "low 0\nhigh 0\nmax 5\noom 1\noom_kill 1\n", "pids.max": "max\n",
        "cgroup.threads": "10\n11\n12\n", "io.stat": "8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n",
    })
    write(cg / "sub", {"cgroup.threads": "13\n"})
    return cg


def test_v2_readings(tmp_path: Path) -> None:
    m = read_v2(v2_tree(tmp_path / "cg"))
    assert (m.cpu_usage_ns, m.cpu_user_ns, m.cpu_system_ns) == (3_500_000_000, 2_000_000_000, 1_500_000_000)
    assert (m.cfs_periods, m.cfs_throttled_periods, m.cfs_throttled_ns) == (40, 4, 2_500_000_000)
    assert (m.cpu_quota, m.cpu_period, m.cpu_shares) == (50000, 100000, 2 + (99 * 262142) // 9999)
    assert (m.memory_usage, m.memory_max_usage, m.memory_working_set) == (10485760, 20971520, 10485760 - 1048576)
    assert (m.memory_rss, m.memory_cache, m.memory_mapped_file, m.memory_kernel) == (4096000, 3000000, 12288, 65536)
    assert (m.memory_failcnt, m.oom_events, m.pgfault, m.pgmajfault_hierarchy) == (5, 1, 900, 9)
    assert (m.memory_limit, m.memory_swap_limit, m.threads_max, m.memory_reservation) == (268435456, None, None, 1048576)
    assert sorted(m.tasks) == [10, 11, 12, 13]
    assert [(d.major, d.minor, d.read_bytes, d.write_bytes, d.reads, d.writes) for d in m.io] == [(8, 0, 4096, 8192, 1, 2)]


def test_v1_readings(tmp_path: Path) -> None:
    acct, mem, pids, blkio = (tmp_path / n for n in ("cpuacct", "memory", "pids", "blkio"))
    write(acct, {"cpuacct.usage": "3500000000\n", "cpuacct.stat": "user 200\nsystem 150\n",
                 "cpu.stat": "nr_periods 40\nnr_throttled 4\nthrottled_time 2500000000\n",
                 "cpu.cfs_period_us": "100000\n", "cpu.cfs_quota_us": "-1\n", "cpu.shares": "1024\n"})
    write(mem, {"memory.usage_in_bytes": "10485760\n", "memory.max_usage_in_bytes": "20971520\n",
                "memory.stat": "cache 1\nrss 2\ntotal_cache 3000000\ntotal_rss 4096000\ntotal_mapped_file 12288\n"
                               "total_inactive_file 1048576\npgfault 100\npgmajfault 1\ntotal_pgfault 900\n"
                               "total_pgmajfault 9\n",
                "memory.kmem.usage_in_bytes": "65536\n", "memory.memsw.usage_in_bytes": "10485760\n",
                "memory.failcnt": "5\n", "memory.soft_limit_in_bytes": "67108864\n", "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
                "memory.limit_in_bytes": "9223372036854771712\n", "memory.memsw.limit_in_bytes": "268435456\n",
                "tasks": "1\n"})
    write(pids, {"pids.max": "max\n", "tasks": "10\n11\n12\n"})
    write(blkio, {"blkio.throttle.io_service_bytes_recursive": "8:0 Read 4096\n8:0 Write 8192\n8:0 Sync 0\nTotal 12288\n",
                  "blkio.throttle.io_serviced_recursive": "8:0 Read 1\n8:0 Write 2\nTotal 3\n"})
    m = read_v1({"cpu": acct, "cpuacct": acct, "memory": mem, "pids": pids, "blkio": blkio})
    assert (m.cpu_usage_ns, m.cpu_user_ns, m.cpu_system_ns) == (3_500_000_000, 200 * TICK_NS, 150 * TICK_NS)
    assert (m.cfs_periods, m.cfs_throttled_periods, m.cfs_throttled_ns) == (40, 4, 2_500_000_000)
    assert (m.cpu_quota, m.cpu_period, m.cpu_shares) == (None, 100000, 1024)
    assert (m.memory_usage, m.memory_max_usage, m.memory_working_set) == (10485760, 20971520, 10485760 - 1048576)
    assert (m.memory_rss, m.memory_cache, m.memory_mapped_file, m.memory_kernel) == (4096000, 3000000, 12288, 65536)
    assert (m.memory_swap, m.memory_failcnt, m.oom_events) == (0, 5, 1)
    assert (m.pgfault, m.pgfault_hierarchy, m.pgmajfault, m.pgmajfault_hierarchy) == (100, 900, 1, 9)
    assert (m.memory_limit, m.memory_swap_limit, m.threads_max, m.memory_reservation) == (None, 268435456, None, 67108864)
    assert m.tasks == [10, 11, 12]
    assert [(d.major, d.minor, d.read_bytes, d.write_bytes, d.reads, d.writes) for d in m.io] == [(8, 0, 4096, 8192, 1, 2)]


def test_net_dev_counters() -> None:
    text = ("Inter-|   Receive                                                |  Transmit\n"
            " face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n"
            "    lo:     100       1    0    0    0     0          0         0      100       1    0    0    0     0       0          0\n"
            "  eth0:    5000      50    1    2    0     0          0         0     6000      60    3    4    0     0       0          0\n")
    (lo, eth0) = parse_net_dev(text)
    assert (eth0.name, eth0.rx_bytes, eth0.rx_packets, eth0.rx_errors, eth0.rx_dropped) == ("eth0", 5000, 50, 1, 2)
    assert (eth0.tx_bytes, eth0.tx_packets, eth0.tx_errors, eth0.tx_dropped) == (6000, 60, 3, 4)


def reading(tmp_path: Path) -> PodReading:
    pod = SandboxRecord(id="p" * 64, name="web", namespace="ns", uid="u", attempt=0, config={}, created_at=1,
                        runtime_handler="", oci_runtime="", cgroup_parent="/crispy/pod-p")
    ctr = ContainerRecord(id="c" * 64, sandbox_id=pod.id, name="app", attempt=0, config={}, created_at=2,
                          image="busybox:1", started_at=5_000_000_000, cgroup_path="/crispy/pod-p/crispy-c")
    cg = read_v2(v2_tree(tmp_path / "cg"))
    fs = FilesystemReading("/dev/sda1", 4096, 3, 1 << 30, 1000, 900)
    (eth0,) = [i for i in parse_net_dev("h\nh\n  eth0: " + " ".join(str(n) for n in range(1, 17)) + "\n")]
    return PodReading(pod, 7_000_000_000, [eth0], [ContainerReading(ctr, cg, 2, 8, 1, fs)])


def test_every_expected_family_has_a_descriptor_with_help_and_labels() -> None:
    descs = {d.name: d for d in metrics.descriptors()}
    assert not set(EXPECTED) - set(descs)
    assert all(d.help and d.label_keys for d in descs.values())


def test_samples_carry_their_descriptors_label_sets(tmp_path: Path) -> None:
    out = metrics.pod_sandbox_metrics(reading(tmp_path))
    keys = {d.name: list(d.label_keys) for d in metrics.descriptors()}
    samples = list(out.metrics) + [m for c in out.container_metrics for m in c.metrics]
    assert {s.name for s in samples} >= set(EXPECTED)
    for s in samples:
        assert len(s.label_values) == len(keys[s.name]), s.name
        assert s.timestamp == 7_000_000_000
    by = {(s.name, tuple(s.label_values)): s for s in samples}
    base = ["app", "/crispy/pod-p/crispy-c", "busybox:1", "c" * 64, "ns", "web"]
    assert by[("container_cpu_usage_seconds_total", tuple(base))].value.value == 3
    assert by[("container_cpu_usage_seconds_total", tuple(base))].metric_type == pb.COUNTER
    assert by[("container_memory_working_set_bytes", tuple(base))].metric_type == pb.GAUGE
    assert by[("container_memory_failures_total", (*base, "pgmajfault", "hierarchy"))].value.value == 9
    assert by[("container_fs_usage_bytes", (*base, "/dev/sda1"))].value.value == 4096
    assert by[("container_start_time_seconds", tuple(base))].value.value == 5
    assert by[("container_threads", tuple(base))].value.value == 4
    pod_base = ["POD", "/crispy/pod-p", "", "p" * 64, "ns", "web"]
    assert by[("container_network_receive_packets_total", (*pod_base, "eth0"))].value.value == 2
    assert by[("container_network_transmit_packets_dropped_total", (*pod_base, "eth0"))].value.value == 12


@pytest.mark.parametrize("sizes,budget,expected", [
    ([], 100, []), ([10, 10, 10], 100, [3]), ([60, 60, 60], 100, [1, 1, 1]), ([150, 10], 100, [1, 1]),
    ([40, 40, 40, 40], 100, [2, 2])])
def test_pages_stay_under_their_budget(sizes: list[int], budget: int, expected: list[int]) -> None:
    items = [pb.Container(id="x" * (n - 6)) for n in sizes]  # tag+len of id = 2 bytes
    got = list(pages(items, budget))
    assert [len(p) for p in got] == expected
    assert [m for p in got for m in p] == items


def test_pages_carry_a_list_far_past_one_message() -> None:
    big = [pb.PodSandbox(id=f"{i:064x}", annotations={"a": "x" * 200_000}) for i in range(200)]  # ~40 MB
    got = list(pages(big))
    assert len(got) > 3 and all(sum(m.ByteSize() for m in p) < 16 * 1024 * 1024 for p in got)
    assert [m.id for p in got for m in p] == [m.id for m in big]


def test_criu_missing_or_failing_is_named(tmp_path: Path) -> None:
    assert "is not installed" in (asyncio.run(Criu(str(tmp_path / "no-criu")).problem()) or "")
    fake = tmp_path / "criu"
    fake.write_text("#!/bin/sh\necho 'Error (criu/cr-check.c:1234): Kernel does not support PTRACE_O_SUSPEND_SECCOMP'\n"
                    "echo 'Looks bad.'\nexit 1\n")
    fake.chmod(0o755)
    problem = asyncio.run(Criu(str(fake)).problem())
    assert problem is not None and "check` fails on this kernel" in problem and "PTRACE_O_SUSPEND_SECCOMP" in problem
    fake.write_text("#!/bin/sh\necho 'Looks good.'\n")
    assert asyncio.run(Criu(str(fake)).problem()) is None
