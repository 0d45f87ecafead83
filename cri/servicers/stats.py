"""crispy's usage records (runtime.container_stats) as CRI ContainerStats
and PodSandboxStats messages: the one place that knows how each reading
maps onto the CRI fields. Pure translation; the servicers gather the
readings and call these."""

from __future__ import annotations

from typing import Sequence

from cri.proto import api_pb2 as pb
from runtime.container_stats import CgroupUsage, ContainerUsage, InterfaceUsage
from runtime.store import ContainerRecord, SandboxRecord


def _u64(value: int | None) -> pb.UInt64Value | None:
    return pb.UInt64Value(value=max(int(value), 0)) if value is not None else None


def container_stats(ctr: ContainerRecord, usage: ContainerUsage) -> pb.ContainerStats:
    out = pb.ContainerStats(attributes=pb.ContainerAttributes(
        id=ctr.id, metadata=pb.ContainerMetadata(name=ctr.name, attempt=ctr.attempt),
        labels=dict(ctr.config.get("labels", {})), annotations=dict(ctr.config.get("annotations", {}))))
    ts = usage.timestamp_ns
    cg = usage.cgroup
    if cg is not None:
        out.cpu.CopyFrom(pb.CpuUsage(timestamp=ts, usage_core_nano_seconds=_u64(cg.cpu_usage_ns),
                                     usage_nano_cores=_u64(usage.nano_cores)))
        available = None
        if cg.memory_limit_bytes is not None and cg.memory_working_set_bytes is not None:
            available = cg.memory_limit_bytes - cg.memory_working_set_bytes
        out.memory.CopyFrom(pb.MemoryUsage(
            timestamp=ts, working_set_bytes=_u64(cg.memory_working_set_bytes), available_bytes=_u64(available),
            usage_bytes=_u64(cg.memory_usage_bytes), rss_bytes=_u64(cg.memory_rss_bytes),
            page_faults=_u64(cg.page_faults), major_page_faults=_u64(cg.major_page_faults)))
        if cg.swap_usage_bytes is not None:
            out.swap.CopyFrom(pb.SwapUsage(timestamp=ts, swap_usage_bytes=_u64(cg.swap_usage_bytes)))
    if usage.layer is not None:
        out.writable_layer.CopyFrom(pb.FilesystemUsage(
            timestamp=ts, fs_id=pb.FilesystemIdentifier(mountpoint=usage.layer_mountpoint),
            used_bytes=_u64(usage.layer.used_bytes), inodes_used=_u64(usage.layer.inodes_used)))
    return out


def _interface(i: InterfaceUsage) -> pb.NetworkInterfaceUsage:
    return pb.NetworkInterfaceUsage(name=i.name, rx_bytes=_u64(i.rx_bytes), rx_errors=_u64(i.rx_errors),
                                    tx_bytes=_u64(i.tx_bytes), tx_errors=_u64(i.tx_errors))


def pod_sandbox_stats(rec: SandboxRecord, usage: CgroupUsage, interfaces: list[InterfaceUsage] | None,
                      containers: Sequence[pb.ContainerStats]) -> pb.PodSandboxStats:
    """`interfaces` is None when the pod's network cannot be read (host
    network, nothing running in it); `containers` are its running ones."""
    out = pb.PodSandboxStats(attributes=pb.PodSandboxAttributes(
        id=rec.id, metadata=pb.PodSandboxMetadata(name=rec.name, namespace=rec.namespace, uid=rec.uid,
                                                  attempt=rec.attempt),
        labels=dict(rec.config.get("labels", {})), annotations=dict(rec.config.get("annotations", {}))))
    cg, ts = usage.cgroup, usage.timestamp_ns
    if cg is not None:
        out.linux.cpu.CopyFrom(pb.CpuUsage(timestamp=ts, usage_core_nano_seconds=_u64(cg.cpu_usage_ns),
                                           usage_nano_cores=_u64(usage.nano_cores)))
        out.linux.memory.CopyFrom(pb.MemoryUsage(
            timestamp=ts, working_set_bytes=_u64(cg.memory_working_set_bytes), usage_bytes=_u64(cg.memory_usage_bytes),
            rss_bytes=_u64(cg.memory_rss_bytes), page_faults=_u64(cg.page_faults),
            major_page_faults=_u64(cg.major_page_faults)))
        out.linux.process.CopyFrom(pb.ProcessUsage(timestamp=ts, process_count=_u64(usage.process_count)))
    if interfaces is not None:
        # CNI names the pod's interface eth0.
        default = next((i for i in interfaces if i.name == "eth0"), interfaces[0] if interfaces else None)
        out.linux.network.CopyFrom(pb.NetworkUsage(
            timestamp=ts, default_interface=_interface(default) if default else None,
            interfaces=[_interface(i) for i in interfaces]))
    out.linux.containers.extend(containers)
    return out
