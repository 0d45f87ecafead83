"""A pod whose infra process died, or whose namespace pin was unmounted, is
NOT_READY at once (ListPodSandbox sees it without a PodSandboxStatus call
first), CreateContainer in it answers FAILED_PRECONDITION, and it can still
be stopped and removed with nothing left behind."""

from __future__ import annotations

import json
import os
import signal
import time

import grpc
import pytest

from cri.proto import api_pb2 as pb
from runtime import kmount
from tests.pods_fixtures import *  # noqa: F403
from tests.pods_fixtures import container_config, load_image, pod_config

pytestmark = pytest.mark.integration


@pytest.fixture
def env(clean_pods, tmp_path):
    load_image(clean_pods)
    with clean_pods.client() as c:
        yield c, tmp_path


def run_pod(c, name, pid=pb.POD, host_network=False, tmp=None):
    cfg = pod_config(name, log_directory=str(tmp) if tmp else "")
    ns = cfg.linux.security_context.namespace_options
    ns.pid = pid
    if host_network:
        ns.network = pb.NODE
    pod = c.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg)).pod_sandbox_id
    info = json.loads(c.runtime.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=pod, verbose=True)).info["info"])
    return pod, cfg, info


def listed_state(c, pod):
    return {p.id: p.state for p in c.runtime.ListPodSandbox(pb.ListPodSandboxRequest()).items}[pod]


def wait_listed_not_ready(c, pod, timeout=10.0):
    deadline = time.monotonic() + timeout
    while listed_state(c, pod) != pb.SANDBOX_NOTREADY and time.monotonic() < deadline:
        time.sleep(0.02)
    return listed_state(c, pod)


def assert_wedge_free(c, pod, cfg):
    st = c.runtime.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=pod)).status
    assert st.state == pb.SANDBOX_NOTREADY
    notready = c.runtime.ListPodSandbox(pb.ListPodSandboxRequest(
        filter=pb.PodSandboxFilter(state=pb.PodSandboxStateValue(state=pb.SANDBOX_NOTREADY)))).items
    assert pod in [p.id for p in notready]
    with pytest.raises(grpc.RpcError) as err:
        c.runtime.CreateContainer(pb.CreateContainerRequest(
            pod_sandbox_id=pod, config=container_config("late", ["sleep", "100"]), sandbox_config=cfg))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "not ready" in err.value.details()
    c.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod))
    c.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod))
    assert pod not in [p.id for p in c.runtime.ListPodSandbox(pb.ListPodSandboxRequest()).items]


def test_infra_killed(env):
    c, tmp = env
    pod, cfg, info = run_pod(c, "infra-dies", tmp=tmp)
    ctr = c.runtime.CreateContainer(pb.CreateContainerRequest(
        pod_sandbox_id=pod, config=container_config("c", ["sleep", "100"]), sandbox_config=cfg)).container_id
    c.runtime.StartContainer(pb.StartContainerRequest(container_id=ctr))
    assert listed_state(c, pod) == pb.SANDBOX_READY
    os.kill(info["pid"], signal.SIGKILL)
    # The event, not a PodSandboxStatus call, turns the listed state.
    assert wait_listed_not_ready(c, pod) == pb.SANDBOX_NOTREADY
    assert_wedge_free(c, pod, cfg)


def test_infra_killed_host_network(env):
    c, tmp = env
    pod, cfg, info = run_pod(c, "infra-dies-hostnet", host_network=True, tmp=tmp)
    os.kill(info["pid"], signal.SIGKILL)
    assert wait_listed_not_ready(c, pod) == pb.SANDBOX_NOTREADY
    assert_wedge_free(c, pod, cfg)


def test_netns_pin_unmounted(env):
    c, tmp = env
    pod, cfg, info = run_pod(c, "pin-gone", pid=pb.CONTAINER, tmp=tmp)
    net = info["namespaces"]["network"]
    kmount.umount(net)
    assert wait_listed_not_ready(c, pod) == pb.SANDBOX_NOTREADY
    assert_wedge_free(c, pod, cfg)


def test_pin_checked_by_status_and_create(env):
    """The synchronous checks alone (the listed state is not asked first):
    PodSandboxStatus and CreateContainer each see a lost pin."""
    c, tmp = env
    pod, cfg, info = run_pod(c, "pin-gone-2", pid=pb.CONTAINER, tmp=tmp)
    kmount.umount(info["namespaces"]["ipc"])
    with pytest.raises(grpc.RpcError) as err:
        c.runtime.CreateContainer(pb.CreateContainerRequest(
            pod_sandbox_id=pod, config=container_config("x", ["sleep", "100"]), sandbox_config=cfg))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert_wedge_free(c, pod, cfg)


def test_ready_pods_stay_ready(env):
    """Mount churn (other pods, containers) does not mark a healthy pod."""
    c, tmp = env
    pod, cfg, _ = run_pod(c, "healthy", tmp=tmp)
    other, ocfg, _ = run_pod(c, "churn", pid=pb.CONTAINER, tmp=tmp)
    ctr = c.runtime.CreateContainer(pb.CreateContainerRequest(
        pod_sandbox_id=other, config=container_config("c", ["sleep", "100"]), sandbox_config=ocfg)).container_id
    c.runtime.RemoveContainer(pb.RemoveContainerRequest(container_id=ctr))
    c.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=other))
    c.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=other))
    assert listed_state(c, pod) == pb.SANDBOX_READY
    st = c.runtime.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=pod)).status
    assert st.state == pb.SANDBOX_READY


def test_pin_lost_while_daemon_down(pod_daemon):
    """Recovery marks a pod whose pin went while crispy was away."""
    load_image(pod_daemon)
    with pod_daemon.client() as c:
        pod, cfg, info = run_pod(c, "pin-gone-down", pid=pb.CONTAINER)
    pod_daemon.stop(signal.SIGKILL)
    kmount.umount(info["namespaces"]["uts"])
    pod_daemon.start()
    with pod_daemon.client() as c:
        assert listed_state(c, pod) == pb.SANDBOX_NOTREADY
        assert_wedge_free(c, pod, cfg)
