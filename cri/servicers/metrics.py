"""ListMetricDescriptors, ListPodSandboxMetrics and StreamPodSandboxMetrics:
crispy's readings (runtime/pod_metrics.py) under the names and labels
cAdvisor gives them, which kubelet serves on /metrics/cadvisor when it
takes pod and container stats from the runtime.

Every family here has one fixed label set, used by its descriptor and by
every sample of it (kubelet builds its Prometheus descriptors from the
first and checks the second against them). The CRI carries values as
unsigned integers, so seconds are whole seconds.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

from cri.proto import api_pb2 as pb
from cri.servicers.node import Node
from cri.servicers.paging import pages
from cri.validation import check_reply_size
from runtime.cgroups.metrics import CgroupMetrics
from runtime.pod_metrics import ContainerReading, PodReading

BASE_LABELS = ("container", "id", "image", "name", "namespace", "pod")
# The label cAdvisor gives a pod's own (network) series.
POD_CONTAINER = "POD"


@dataclass(frozen=True)
class Family:
    name: str
    help: str
    counter: bool
    extra: tuple[str, ...] = ()

    @property
    def label_keys(self) -> tuple[str, ...]:
        return BASE_LABELS + self.extra


_NET = ("interface",)
_FS = ("device",)
FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("container_cpu_usage_seconds_total", "Cumulative cpu time consumed in seconds.", True),
    Family("container_cpu_user_seconds_total", "Cumulative user cpu time consumed in seconds.", True),
    Family("container_cpu_system_seconds_total", "Cumulative system cpu time consumed in seconds.", True),
    Family("container_cpu_cfs_periods_total", "Number of elapsed enforcement period intervals.", True),
    Family("container_cpu_cfs_throttled_periods_total", "Number of throttled period intervals.", True),
    Family("container_cpu_cfs_throttled_seconds_total", "Total time duration the container has been throttled.",
           True),
    Family("container_memory_usage_bytes", "Current memory usage in bytes, including all memory regardless of "
           "when it was accessed.", False),
    Family("container_memory_max_usage_bytes", "Maximum memory usage recorded in bytes.", False),
    Family("container_memory_working_set_bytes", "Current working set in bytes.", False),
    Family("container_memory_rss", "Size of RSS in bytes.", False),
    Family("container_memory_cache", "Number of bytes of page cache memory.", False),
    Family("container_memory_mapped_file", "Size of memory mapped files in bytes.", False),
    Family("container_memory_kernel_usage", "Size of kernel memory allocated in bytes.", False),
    Family("container_memory_swap", "Container swap usage in bytes.", False),
    Family("container_memory_failcnt", "Number of memory usage hits limits.", True),
    Family("container_memory_failures_total", "Cumulative count of memory allocation failures.", True,
           ("failure_type", "scope")),
    Family("container_oom_events_total", "Count of out of memory events observed for the container.", True),
    Family("container_processes", "Number of processes running inside the container.", False),
    Family("container_threads", "Number of threads running inside the container.", False),
    Family("container_threads_max", "Maximum number of threads allowed inside the container, 0 if unlimited.",
           False),
    Family("container_file_descriptors", "Number of open file descriptors for the container.", False),
    Family("container_sockets", "Number of open sockets for the container.", False),
    Family("container_spec_cpu_period", "CPU period of the container.", False),
    Family("container_spec_cpu_quota", "CPU quota of the container.", False),
    Family("container_spec_cpu_shares", "CPU share of the container.", False),
    Family("container_spec_memory_limit_bytes", "Memory limit for the container.", False),
    Family("container_spec_memory_swap_limit_bytes", "Memory swap limit for the container.", False),
    Family("container_spec_memory_reservation_limit_bytes", "Memory reservation limit for the container.", False),
    Family("container_start_time_seconds", "Start time of the container since unix epoch in seconds.", False),
    Family("container_last_seen", "Last time a container was seen by the exporter.", False),
    Family("container_fs_usage_bytes", "Number of bytes that are consumed by the container on this filesystem.",
           False, _FS),
    Family("container_fs_limit_bytes", "Number of bytes that can be consumed by the container on this filesystem.",
           False, _FS),
    Family("container_fs_inodes_total", "Number of available Inodes.", False, _FS),
    Family("container_fs_inodes_free", "Number of available Inodes.", False, _FS),
    Family("container_fs_reads_bytes_total", "Cumulative count of bytes read.", True, _FS),
    Family("container_fs_writes_bytes_total", "Cumulative count of bytes written.", True, _FS),
    Family("container_fs_reads_total", "Cumulative count of reads completed.", True, _FS),
    Family("container_fs_writes_total", "Cumulative count of writes completed.", True, _FS),
    Family("container_blkio_device_usage_total", "Blkio device bytes usage.", True,
           ("device", "major", "minor", "operation")),
    Family("container_network_receive_bytes_total", "Cumulative count of bytes received.", True, _NET),
    Family("container_network_receive_packets_total", "Cumulative count of packets received.", True, _NET),
    Family("container_network_receive_errors_total", "Cumulative count of errors encountered while receiving.",
           True, _NET),
    Family("container_network_receive_packets_dropped_total",
           "Cumulative count of packets dropped while receiving.", True, _NET),
    Family("container_network_transmit_bytes_total", "Cumulative count of bytes transmitted.", True, _NET),
    Family("container_network_transmit_packets_total", "Cumulative count of packets transmitted.", True, _NET),
    Family("container_network_transmit_errors_total", "Cumulative count of errors encountered while transmitting.",
           True, _NET),
    Family("container_network_transmit_packets_dropped_total",
           "Cumulative count of packets dropped while transmitting.", True, _NET),
)}

# (family, extra label values, value)
Sample = tuple[str, tuple[str, ...], int]


def descriptors() -> list[pb.MetricDescriptor]:
    return [pb.MetricDescriptor(name=f.name, help=f.help, label_keys=list(f.label_keys)) for f in FAMILIES.values()]


def _n(value: int | None) -> int:
    return max(int(value or 0), 0)


def _secs(ns: int | None) -> int:
    return _n(ns) // 1_000_000_000


def cgroup_samples(cg: CgroupMetrics) -> Iterator[Sample]:
    yield "container_cpu_usage_seconds_total", (), _secs(cg.cpu_usage_ns)
    yield "container_cpu_user_seconds_total", (), _secs(cg.cpu_user_ns)
    yield "container_cpu_system_seconds_total", (), _secs(cg.cpu_system_ns)
    yield "container_cpu_cfs_periods_total", (), _n(cg.cfs_periods)
    yield "container_cpu_cfs_throttled_periods_total", (), _n(cg.cfs_throttled_periods)
    yield "container_cpu_cfs_throttled_seconds_total", (), _secs(cg.cfs_throttled_ns)
    yield "container_memory_usage_bytes", (), _n(cg.memory_usage)
    yield "container_memory_max_usage_bytes", (), _n(cg.memory_max_usage if cg.memory_max_usage is not None
                                                     else cg.memory_usage)
    yield "container_memory_working_set_bytes", (), _n(cg.memory_working_set)
    yield "container_memory_rss", (), _n(cg.memory_rss)
    yield "container_memory_cache", (), _n(cg.memory_cache)
    yield "container_memory_mapped_file", (), _n(cg.memory_mapped_file)
    yield "container_memory_kernel_usage", (), _n(cg.memory_kernel)
    yield "container_memory_swap", (), _n(cg.memory_swap)
    yield "container_memory_failcnt", (), _n(cg.memory_failcnt)
    for kind, here, below in (("pgfault", cg.pgfault, cg.pgfault_hierarchy),
                              ("pgmajfault", cg.pgmajfault, cg.pgmajfault_hierarchy)):
        yield "container_memory_failures_total", (kind, "container"), _n(here)
        yield "container_memory_failures_total", (kind, "hierarchy"), _n(below)
    yield "container_oom_events_total", (), _n(cg.oom_events)
    yield "container_threads", (), len(cg.tasks)
    yield "container_threads_max", (), _n(cg.threads_max)
    yield "container_spec_cpu_period", (), _n(cg.cpu_period)
    if cg.cpu_quota is not None:
        yield "container_spec_cpu_quota", (), _n(cg.cpu_quota)
    yield "container_spec_cpu_shares", (), _n(cg.cpu_shares)
    yield "container_spec_memory_limit_bytes", (), _n(cg.memory_limit)
    yield "container_spec_memory_swap_limit_bytes", (), _n(cg.memory_swap_limit)
    yield "container_spec_memory_reservation_limit_bytes", (), _n(cg.memory_reservation)
    for dev in cg.io:
        name = f"{dev.major}:{dev.minor}"
        yield "container_fs_reads_bytes_total", (name,), dev.read_bytes
        yield "container_fs_writes_bytes_total", (name,), dev.write_bytes
        yield "container_fs_reads_total", (name,), dev.reads
        yield "container_fs_writes_total", (name,), dev.writes
        for op, value in (("Read", dev.read_bytes), ("Write", dev.write_bytes)):
            yield "container_blkio_device_usage_total", (name, str(dev.major), str(dev.minor), op), value


def container_samples(r: ContainerReading, now_ns: int) -> Iterator[Sample]:
    if r.cgroup is not None:
        yield from cgroup_samples(r.cgroup)
    yield "container_processes", (), r.processes
    yield "container_file_descriptors", (), r.fds
    yield "container_sockets", (), r.sockets
    yield "container_start_time_seconds", (), _secs(r.ctr.started_at)
    yield "container_last_seen", (), now_ns // 1_000_000_000
    if r.fs is not None:
        dev = (r.fs.device,)
        yield "container_fs_usage_bytes", dev, r.fs.used_bytes
        yield "container_fs_limit_bytes", dev, r.fs.limit_bytes
        yield "container_fs_inodes_total", dev, r.fs.inodes_total
        yield "container_fs_inodes_free", dev, r.fs.inodes_free


def pod_samples(r: PodReading) -> Iterator[Sample]:
    for i in r.interfaces:
        n = (i.name,)
        yield "container_network_receive_bytes_total", n, i.rx_bytes
        yield "container_network_receive_packets_total", n, i.rx_packets
        yield "container_network_receive_errors_total", n, i.rx_errors
        yield "container_network_receive_packets_dropped_total", n, i.rx_dropped
        yield "container_network_transmit_bytes_total", n, i.tx_bytes
        yield "container_network_transmit_packets_total", n, i.tx_packets
        yield "container_network_transmit_errors_total", n, i.tx_errors
        yield "container_network_transmit_packets_dropped_total", n, i.tx_dropped


def _metrics(samples: Iterator[Sample], base: list[str], ts: int) -> list[pb.Metric]:
    out = []
    for name, extra, value in samples:
        family = FAMILIES[name]
        out.append(pb.Metric(name=name, timestamp=ts, metric_type=pb.COUNTER if family.counter else pb.GAUGE,
                             label_values=base + list(extra), value=pb.UInt64Value(value=value)))
    return out


def pod_sandbox_metrics(r: PodReading) -> pb.PodSandboxMetrics:
    pod = r.pod
    ts = r.timestamp_ns
    out = pb.PodSandboxMetrics(pod_sandbox_id=pod.id, metrics=_metrics(
        pod_samples(r), [POD_CONTAINER, pod.cgroup_parent, "", pod.id, pod.namespace, pod.name], ts))
    for c in r.containers:
        ctr = c.ctr
        base = [ctr.name, ctr.cgroup_path, ctr.image, ctr.id, pod.namespace, pod.name]
        out.container_metrics.append(pb.ContainerMetrics(container_id=ctr.id,
                                                         metrics=_metrics(container_samples(c, ts), base, ts)))
    return out


class MetricsRPCs:
    daemon: Node

    async def ListMetricDescriptors(self, request: pb.ListMetricDescriptorsRequest,
                                    context: Any) -> pb.ListMetricDescriptorsResponse:
        return pb.ListMetricDescriptorsResponse(descriptors=descriptors())

    async def ListPodSandboxMetrics(self, request: pb.ListPodSandboxMetricsRequest,
                                    context: Any) -> pb.ListPodSandboxMetricsResponse:
        readings = await self.daemon.pod_metrics.pods()
        reply = pb.ListPodSandboxMetricsResponse(pod_metrics=[pod_sandbox_metrics(r) for r in readings])
        check_reply_size("ListPodSandboxMetrics", reply, reply.pod_metrics, "pod sandboxes")
        return reply

    async def StreamPodSandboxMetrics(self, request: pb.StreamPodSandboxMetricsRequest,
                                      context: Any) -> AsyncIterator[pb.StreamPodSandboxMetricsResponse]:
        readings = await self.daemon.pod_metrics.pods()
        for page in pages(pod_sandbox_metrics(r) for r in readings):
            yield pb.StreamPodSandboxMetricsResponse(pod_sandbox_metrics=page)
