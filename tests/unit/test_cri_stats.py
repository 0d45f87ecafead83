"""cri.servicers.stats: usage records in, CRI stats messages out, without a
daemon (tests/integration/test_container_resources.py checks the same RPCs on real
cgroups and layers)."""

from __future__ import annotations

from cri.proto import api_pb2 as pb
from cri.servicers.stats import container_stats, pod_sandbox_stats
from runtime.cgroups.manager import CgroupStats
from runtime.container_stats import CgroupUsage, ContainerUsage, InterfaceUsage, LayerUsage
from runtime.store import ContainerRecord, SandboxRecord

TS = 1_700_000_000_000_000_000


def _ctr(name: str = "app") -> ContainerRecord:
    return ContainerRecord(id="c" * 64, sandbox_id="p" * 64, name=name, attempt=2, created_at=1,
                           config={"labels": {"l": "1"}, "annotations": {"a": "2"}}, state="running")


def _pod() -> SandboxRecord:
    return SandboxRecord(id="p" * 64, name="web", namespace="ns", uid="u1", attempt=1,
                         config={"labels": {"app": "web"}, "annotations": {"k": "v"}}, runtime_handler="",
                         oci_runtime="runc", created_at=1)


def test_container_without_cgroup_reports_only_attributes_and_layer() -> None:
    usage = ContainerUsage(TS, None, None, LayerUsage(4096, 3), "/data/c")
    st = container_stats(_ctr(), usage)
    assert st.attributes.id == "c" * 64
    assert (st.attributes.metadata.name, st.attributes.metadata.attempt) == ("app", 2)
    assert dict(st.attributes.labels) == {"l": "1"} and dict(st.attributes.annotations) == {"a": "2"}
    assert not st.HasField("cpu") and not st.HasField("memory") and not st.HasField("swap")
    assert st.writable_layer.timestamp == TS
    assert st.writable_layer.fs_id.mountpoint == "/data/c"
    assert (st.writable_layer.used_bytes.value, st.writable_layer.inodes_used.value) == (4096, 3)


def test_container_cgroup_readings_map_to_cpu_memory_swap() -> None:
    cg = CgroupStats(TS, cpu_usage_ns=5_000, memory_usage_bytes=900, memory_working_set_bytes=700,
                     memory_rss_bytes=300, memory_limit_bytes=1000, page_faults=11, major_page_faults=1,
                     swap_usage_bytes=0)
    st = container_stats(_ctr(), ContainerUsage(TS, cg, 250_000_000, None, ""))
    assert st.cpu.timestamp == TS
    assert st.cpu.usage_core_nano_seconds.value == 5_000 and st.cpu.usage_nano_cores.value == 250_000_000
    assert st.memory.working_set_bytes.value == 700 and st.memory.usage_bytes.value == 900
    assert st.memory.available_bytes.value == 300
    assert st.memory.rss_bytes.value == 300
    assert (st.memory.page_faults.value, st.memory.major_page_faults.value) == (11, 1)
    # Zero swap is a reading; the field is present with value 0.
    assert st.HasField("swap") and st.swap.swap_usage_bytes.value == 0
    assert not st.HasField("writable_layer")


def test_container_memory_edges() -> None:
    over = CgroupStats(TS, memory_working_set_bytes=1200, memory_limit_bytes=1000)
    st = container_stats(_ctr(), ContainerUsage(TS, over, None, None, ""))
    # A working set past the limit (accounting lag) is no available memory, not a wrapped u64.
    assert st.memory.HasField("available_bytes") and st.memory.available_bytes.value == 0
    # Readings the cgroup did not give stay unset rather than zero.
    assert not st.cpu.HasField("usage_nano_cores") and not st.cpu.HasField("usage_core_nano_seconds")
    assert not st.HasField("swap")
    unlimited = CgroupStats(TS, memory_working_set_bytes=5, memory_limit_bytes=None)
    st = container_stats(_ctr(), ContainerUsage(TS, unlimited, None, None, ""))
    assert not st.memory.HasField("available_bytes")


def test_pod_without_cgroup_or_network() -> None:
    st = pod_sandbox_stats(_pod(), CgroupUsage(TS, None, None, None), None, [])
    assert st.attributes.id == "p" * 64
    md = st.attributes.metadata
    assert (md.name, md.namespace, md.uid, md.attempt) == ("web", "ns", "u1", 1)
    assert dict(st.attributes.labels) == {"app": "web"} and dict(st.attributes.annotations) == {"k": "v"}
    assert not st.linux.HasField("cpu") and not st.linux.HasField("memory") and not st.linux.HasField("process")
    assert not st.linux.HasField("network")
    assert list(st.linux.containers) == []


def test_pod_cgroup_network_and_containers() -> None:
    cg = CgroupStats(TS, cpu_usage_ns=9, memory_usage_bytes=80, memory_working_set_bytes=60,
                     memory_rss_bytes=40, memory_limit_bytes=100, page_faults=3, major_page_faults=0)
    ifaces = [InterfaceUsage("lo", rx_bytes=1, rx_packets=0, rx_errors=0, rx_dropped=0, tx_bytes=1, tx_packets=0, tx_errors=0, tx_dropped=0), InterfaceUsage("eth0", rx_bytes=500, rx_packets=0, rx_errors=1, rx_dropped=0, tx_bytes=400, tx_packets=0, tx_errors=2, tx_dropped=0)]
    inner = [container_stats(_ctr("a"), ContainerUsage(TS, None, None, None, "")),
             container_stats(_ctr("b"), ContainerUsage(TS, None, None, None, ""))]
    st = pod_sandbox_stats(_pod(), CgroupUsage(TS, cg, 7, 4), ifaces, inner)
    assert st.linux.cpu.usage_core_nano_seconds.value == 9 and st.linux.cpu.usage_nano_cores.value == 7
    assert st.linux.memory.working_set_bytes.value == 60 and st.linux.memory.usage_bytes.value == 80
    # The pod's memory carries no available_bytes (kubelet derives it from the node).
    assert not st.linux.memory.HasField("available_bytes")
    assert st.linux.process.process_count.value == 4 and st.linux.process.timestamp == TS
    net = st.linux.network
    assert net.timestamp == TS
    assert net.default_interface.name == "eth0"
    assert (net.default_interface.rx_bytes.value, net.default_interface.rx_errors.value,
            net.default_interface.tx_bytes.value, net.default_interface.tx_errors.value) == (500, 1, 400, 2)
    assert [i.name for i in net.interfaces] == ["lo", "eth0"]
    assert [c.attributes.metadata.name for c in st.linux.containers] == ["a", "b"]


def test_pod_network_default_interface_fallbacks() -> None:
    usage = CgroupUsage(TS, None, None, None)
    st = pod_sandbox_stats(_pod(), usage, [InterfaceUsage("net1", rx_bytes=1, rx_packets=0, rx_errors=0, rx_dropped=0, tx_bytes=2, tx_packets=0, tx_errors=0, tx_dropped=0)], [])
    assert st.linux.network.default_interface.name == "net1"
    st = pod_sandbox_stats(_pod(), usage, [], [])
    assert st.linux.HasField("network") and not st.linux.network.HasField("default_interface")
    assert list(st.linux.network.interfaces) == []


def test_messages_are_the_cri_types() -> None:
    usage = ContainerUsage(TS, None, None, None, "")
    assert isinstance(container_stats(_ctr(), usage), pb.ContainerStats)
    assert isinstance(pod_sandbox_stats(_pod(), CgroupUsage(TS, None, None, None), None, []), pb.PodSandboxStats)
