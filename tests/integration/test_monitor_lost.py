"""Containers whose conmon is killed (OOM killer, an operator) while crispy
runs: the container is killed and reported exited with reason MonitorLost,
and StopContainer, RemoveContainer, StopPodSandbox and RemovePodSandbox all
work on it; nothing of it is left on the node."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from cri.proto import api_pb2 as pb
from tests.pods_fixtures import *  # noqa: F403
from tests.pods_fixtures import container_config, load_image, pod_config, wait_state

pytestmark = pytest.mark.integration

LOOP = ["/bin/sh", "-c", "trap 'exit 9' TERM; while :; do sleep 0.1; done"]


@pytest.fixture
def env(clean_pods, tmp_path):
    load_image(clean_pods)
    with clean_pods.client() as c:
        yield c, clean_pods, tmp_path


def info_of(c, ctr):
    return json.loads(c.runtime.ContainerStatus(pb.ContainerStatusRequest(container_id=ctr, verbose=True)).info["info"])


def make(c, pod, cfg, name, start=True):
    ctr = c.runtime.CreateContainer(pb.CreateContainerRequest(
        pod_sandbox_id=pod, config=container_config(name, LOOP), sandbox_config=cfg)).container_id
    if start:
        c.runtime.StartContainer(pb.StartContainerRequest(container_id=ctr))
    return ctr


def wait_gone(pid, timeout=30.0):
    deadline = time.monotonic() + timeout
    while os.path.exists(f"/proc/{pid}"):
        try:
            if open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z":
                return True
        except OSError:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_conmon_killed_while_running(env):
    c, d, tmp = env
    cfg = pod_config("lost", log_directory=str(tmp))
    pod = c.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg)).pod_sandbox_id
    ctr = make(c, pod, cfg, "runner")
    info = info_of(c, ctr)
    pid, conmon = info["pid"], info["conmonPid"]
    assert pid > 0 and conmon > 0
    os.kill(conmon, signal.SIGKILL)
    st = wait_state(c, ctr, pb.CONTAINER_EXITED)
    assert st.state == pb.CONTAINER_EXITED
    assert (st.exit_code, st.reason) == (137, "MonitorLost") and "conmon" in st.message
    assert st.finished_at >= st.started_at > 0
    assert wait_gone(pid), "the container's process still runs"
    listed = {x.id: x.state for x in c.runtime.ListContainers(pb.ListContainersRequest()).containers}
    assert listed[ctr] == pb.CONTAINER_EXITED
    c.runtime.StopContainer(pb.StopContainerRequest(container_id=ctr, timeout=5))
    c.runtime.RemoveContainer(pb.RemoveContainerRequest(container_id=ctr))
    c.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod))
    c.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod))
    assert list(c.runtime.ListContainers(pb.ListContainersRequest()).containers) == []
    assert not os.path.exists(info["bundle"])


def test_stop_right_after_conmon_killed_and_pod_teardown(env):
    """StopContainer racing the watcher, and a created container whose
    conmon died, torn down with the pod (StopPodSandbox used to fail with
    "did not exit 30s after SIGKILL")."""
    c, d, tmp = env
    cfg = pod_config("lost2", log_directory=str(tmp))
    cfg.linux.security_context.namespace_options.pid = pb.POD
    pod = c.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg)).pod_sandbox_id
    running = make(c, pod, cfg, "running")
    created = make(c, pod, cfg, "created", start=False)
    ri, ci = info_of(c, running), info_of(c, created)
    os.kill(ri["conmonPid"], signal.SIGKILL)
    os.kill(ci["conmonPid"], signal.SIGKILL)
    c.runtime.StopContainer(pb.StopContainerRequest(container_id=running, timeout=10))
    st = c.runtime.ContainerStatus(pb.ContainerStatusRequest(container_id=running)).status
    assert st.state == pb.CONTAINER_EXITED and st.reason == "MonitorLost"
    st = wait_state(c, created, pb.CONTAINER_EXITED)
    assert st.state == pb.CONTAINER_EXITED and st.reason == "MonitorLost"
    # A created container whose monitor is gone cannot be started unsupervised.
    with pytest.raises(Exception) as err:
        c.runtime.StartContainer(pb.StartContainerRequest(container_id=created))
    assert err.value.code().name == "FAILED_PRECONDITION"
    c.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod))
    c.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod))
    assert list(c.runtime.ListContainers(pb.ListContainersRequest()).containers) == []
    assert not os.path.exists(ri["bundle"]) and not os.path.exists(ci["bundle"])


def test_conmon_killed_while_daemon_down(pod_daemon, tmp_path):
    """Recovery: a running container whose conmon died while crispy was
    away is killed and reported MonitorLost; a created one is discarded, and
    a retried CreateContainer makes a fresh, supervised container."""
    load_image(pod_daemon)
    cfg = pod_config("lostdown", log_directory=str(tmp_path))
    with pod_daemon.client() as c:
        pod = c.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg)).pod_sandbox_id
        running = make(c, pod, cfg, "running")
        created = make(c, pod, cfg, "created", start=False)
        ri, ci = info_of(c, running), info_of(c, created)
    pod_daemon.stop(signal.SIGKILL)
    os.kill(ri["conmonPid"], signal.SIGKILL)
    os.kill(ci["conmonPid"], signal.SIGKILL)
    assert wait_gone(ri["conmonPid"]) and wait_gone(ci["conmonPid"])
    pod_daemon.start()
    with pod_daemon.client() as c:
        st = c.runtime.ContainerStatus(pb.ContainerStatusRequest(container_id=running)).status
        assert (st.state, st.exit_code, st.reason) == (pb.CONTAINER_EXITED, 137, "MonitorLost")
        assert wait_gone(ri["pid"])
        with pytest.raises(Exception) as err:
            c.runtime.ContainerStatus(pb.ContainerStatusRequest(container_id=created))
        assert err.value.code().name == "NOT_FOUND"
        assert not os.path.exists(ci["bundle"])
        again = make(c, pod, cfg, "created", start=False)
        assert again != created
        c.runtime.StartContainer(pb.StartContainerRequest(container_id=again))
        ai = info_of(c, again)
        assert ai["pid"] > 0 and ai["conmonPid"] > 0
        c.runtime.StopContainer(pb.StopContainerRequest(container_id=again, timeout=10))
        st = c.runtime.ContainerStatus(pb.ContainerStatusRequest(container_id=again)).status
        assert (st.state, st.exit_code) == (pb.CONTAINER_EXITED, 9)
        c.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod))
        c.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod))
