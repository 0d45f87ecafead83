"""The CRI metrics RPCs and the Stream* lists on a real daemon and a real
pod: cAdvisor families with the descriptors' label sets, values read from
the pod's cgroups, netns and writable layer; Stream* answering what List
answers."""

from __future__ import annotations

import time

import pytest

from cri.proto import api_pb2 as pb
from tests.daemon_proc import tmp_base
from tests.pods_fixtures import *  # noqa: F403
from tests.pods_fixtures import (
    container_config,
    load_image,
    pod_config,
    remove_all_pods,
    start_pod_daemon,
    stop_pod_daemon,
    wait_state,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def daemon():
    d = start_pod_daemon(tmp_base())
    load_image(d)
    yield d
    stop_pod_daemon(d)


@pytest.fixture
def pod(daemon, tmp_path):
    with daemon.client() as c:
        cfg = pod_config("metrics", log_directory=str(tmp_path))
        pod = c.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg)).pod_sandbox_id
        ctr = c.runtime.CreateContainer(pb.CreateContainerRequest(
            pod_sandbox_id=pod, config=container_config("app", ["/bin/sh", "-c", "head -c 300000 /dev/zero > /big; "
                                                                             "sleep 3600"]),
            sandbox_config=cfg)).container_id
        c.runtime.StartContainer(pb.StartContainerRequest(container_id=ctr))
        assert wait_state(c, ctr, pb.CONTAINER_RUNNING).state == pb.CONTAINER_RUNNING
        yield c, pod, ctr
    remove_all_pods(daemon)


def test_list_pod_sandbox_metrics_on_a_real_pod(pod):
    c, pod_id, ctr_id = pod
    descs = {d.name: list(d.label_keys) for d in c.runtime.ListMetricDescriptors(pb.ListMetricDescriptorsRequest()).descriptors}
    assert "container_memory_working_set_bytes" in descs and "container_network_receive_bytes_total" in descs
    deadline = time.monotonic() + 10
    while True:
        reply = c.runtime.ListPodSandboxMetrics(pb.ListPodSandboxMetricsRequest())
        (pm,) = [m for m in reply.pod_metrics if m.pod_sandbox_id == pod_id]
        (cm,) = pm.container_metrics
        by = {m.name: m for m in cm.metrics}
        if by["container_fs_usage_bytes"].value.value >= 300000 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert cm.container_id == ctr_id
    for m in [*pm.metrics, *cm.metrics]:
        assert len(m.label_values) == len(descs[m.name]), m.name
    assert by["container_memory_usage_bytes"].value.value > 0
    assert by["container_processes"].value.value >= 1 and by["container_threads"].value.value >= 1
    assert by["container_file_descriptors"].value.value >= 3
    assert by["container_fs_usage_bytes"].value.value >= 300000  # what it wrote to its writable layer
    assert by["container_fs_limit_bytes"].value.value > by["container_fs_usage_bytes"].value.value
    assert by["container_start_time_seconds"].value.value > 1_600_000_000
    labels = dict(zip(descs["container_memory_rss"], by["container_memory_rss"].label_values, strict=True))
    assert (labels["container"], labels["name"], labels["namespace"], labels["pod"]) == (
        "app", ctr_id, "default", "metrics")
    net = {(m.name, m.label_values[-1]): m.value.value for m in pm.metrics}
    ip = c.runtime.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=pod_id)).status.network.ip
    if ip:  # with a CNI network: its interface, read in the pod's netns
        assert net[("container_network_receive_packets_total", "eth0")] >= 0
        assert ("container_network_transmit_bytes_total", "eth0") in net
    else:  # loopback only (no CNI config on this node): lo is not reported
        assert net == {}
    streamed = [m for r in c.runtime.StreamPodSandboxMetrics(pb.StreamPodSandboxMetricsRequest())
                for m in r.pod_sandbox_metrics]
    assert pod_id in {m.pod_sandbox_id for m in streamed}


def test_stream_lists_answer_what_lists_answer(pod):
    c, pod_id, ctr_id = pod
    rt = c.runtime
    pods = [p for r in rt.StreamPodSandboxes(pb.StreamPodSandboxesRequest()) for p in r.pod_sandboxes]
    assert pods == list(rt.ListPodSandbox(pb.ListPodSandboxRequest()).items)
    f = pb.ContainerFilter(pod_sandbox_id=pod_id)
    ctrs = [x for r in rt.StreamContainers(pb.StreamContainersRequest(filter=f)) for x in r.containers]
    assert [x.id for x in ctrs] == [ctr_id] == [x.id for x in rt.ListContainers(pb.ListContainersRequest(filter=f)).containers]
    none = list(rt.StreamContainers(pb.StreamContainersRequest(filter=pb.ContainerFilter(id="ffff"))))
    assert [x for r in none for x in r.containers] == []
    stats = [s for r in rt.StreamContainerStats(pb.StreamContainerStatsRequest()) for s in r.container_stats]
    assert [s.attributes.id for s in stats] == [ctr_id]
    pstats = [s for r in rt.StreamPodSandboxStats(pb.StreamPodSandboxStatsRequest(
        filter=pb.PodSandboxStatsFilter(id=pod_id))) for s in r.pod_sandbox_stats]
    assert [s.attributes.id for s in pstats] == [pod_id]
    assert pstats[0].linux.memory.working_set_bytes.value > 0
