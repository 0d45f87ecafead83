"""crispy killed (SIGKILL, via runtime/crashpoints.py) at each step of
CreateContainer and StartContainer, then restarted: the container is
either gone (NOT_FOUND) or supervised by a live conmon, a retried
CreateContainer/StartContainer works and gives a supervised container
(its exit code is recorded), and tearing the pod down leaves nothing:
no state directory, record, mount, process or cgroup."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import grpc
import pytest

from cri.proto import api_pb2 as pb
from runtime.crashpoints import ENV
from tests.daemon_proc import tmp_base
from tests.pods_fixtures import *  # noqa: F403
from tests.pods_fixtures import (
    cgroup_parent_for,
    container_config,
    load_image,
    pod_config,
    start_pod_daemon,
    stop_pod_daemon,
)

pytestmark = pytest.mark.integration

LOOP = ["/bin/sh", "-c", "trap 'exit 9' TERM; while :; do sleep 0.1; done"]

CREATE_POINTS = ["ctr.create.after_conmon_spawn", "ctr.create.before_record_save", "ctr.create.after_record_save",
                 "ctr.create.after_runtime_create"]
START_POINTS = ["ctr.start.before_runtime_start", "ctr.start.after_runtime_start", "ctr.start.after_record_save"]


def armed_daemon(point: str):
    """A daemon that dies at `point` (the variable is read at its start only)."""
    base = tmp_base()
    old = os.environ.get(ENV)
    os.environ[ENV] = point
    try:
        return start_pod_daemon(base)
    finally:
        if old is None:
            del os.environ[ENV]
        else:
            os.environ[ENV] = old


@pytest.fixture
def crash_daemon(request):
    made = []

    def make(point):
        d = armed_daemon(point)
        made.append(d)
        return d
    yield make
    for d in made:
        stop_pod_daemon(d)


def crash(d, call):
    with pytest.raises(grpc.RpcError) as err:
        call()
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE, err.value
    assert d.proc.wait(30) == -signal.SIGKILL
    d.stop()  # closes the log
    d.start()


def info_of(c, ctr):
    return json.loads(c.runtime.ContainerStatus(pb.ContainerStatusRequest(container_id=ctr, verbose=True)).info["info"])


def alive(pid):
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def assert_supervised_run(c, ctr):
    """Running under a live conmon, which records the exit code of a stop."""
    info = info_of(c, ctr)
    assert info["pid"] > 0 and alive(info["pid"]) and alive(info["conmonPid"])
    c.runtime.StopContainer(pb.StopContainerRequest(container_id=ctr, timeout=10))
    st = c.runtime.ContainerStatus(pb.ContainerStatusRequest(container_id=ctr)).status
    assert (st.state, st.exit_code, st.reason) == (pb.CONTAINER_EXITED, 9, "Error")


def processes_in_cgroups_of(base: Path) -> list[int]:
    key = cgroup_parent_for(base) + "/"
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if key in open(f"/proc/{entry}/cgroup").read():
                    out.append(int(entry))
            except OSError:
                pass
    return out


def assert_nothing_left(d):
    state, data = Path(d.state_root), Path(d.data_root)
    leftovers = {
        "bundles": os.listdir(state / "containers"),
        "pods": os.listdir(state / "pods"),
        "exits": os.listdir(state / "exits"),
        "runtime state": [f"{rt}/{x}" for rt in os.listdir(state / "oci") for x in os.listdir(state / "oci" / rt)
                          if (state / "oci" / rt / x).is_dir()],
        "records": os.listdir(data / "containers") + os.listdir(data / "pods"),
        "scratch": os.listdir(data / "rootfs") if (data / "rootfs").exists() else [],
        "mounts": [ln.split()[4] for ln in open("/proc/self/mountinfo") if str(d.base) + "/" in ln.split()[4]],
    }
    deadline = time.monotonic() + 10
    procs = processes_in_cgroups_of(d.base)
    while procs and time.monotonic() < deadline:
        time.sleep(0.1)
        procs = processes_in_cgroups_of(d.base)
    leftovers["processes"] = procs
    assert not any(leftovers.values()), leftovers


@pytest.mark.parametrize("point", CREATE_POINTS)
def test_crash_during_create(crash_daemon, point, tmp_path):
    d = crash_daemon(point)
    load_image(d)
    cfg = pod_config("crash-create", log_directory=str(tmp_path))
    req = pb.CreateContainerRequest(config=container_config("c", LOOP), sandbox_config=cfg)
    with d.client() as c:
        pod = c.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg)).pod_sandbox_id
        req.pod_sandbox_id = pod
        crash(d, lambda: c.runtime.CreateContainer(req))
    with d.client() as c:
        listed = c.runtime.ListContainers(pb.ListContainersRequest()).containers
        for x in listed:
            # Kept only if something supervises it.
            assert x.state == pb.CONTAINER_CREATED
            assert alive(info_of(c, x.id)["conmonPid"])
        assert c.runtime.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=pod)).status.state == pb.SANDBOX_READY
        # kubelet retries the create: it gets a container it can start.
        ctr = c.runtime.CreateContainer(req).container_id
        assert [x.id for x in listed] in ([], [ctr])
        c.runtime.StartContainer(pb.StartContainerRequest(container_id=ctr))
        assert_supervised_run(c, ctr)
        c.runtime.RemoveContainer(pb.RemoveContainerRequest(container_id=ctr))
        c.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod))
        c.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod))
    assert_nothing_left(d)


@pytest.mark.parametrize("point", START_POINTS)
def test_crash_during_start(crash_daemon, point, tmp_path):
    d = crash_daemon(point)
    load_image(d)
    cfg = pod_config("crash-start", log_directory=str(tmp_path))
    with d.client() as c:
        pod = c.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg)).pod_sandbox_id
        ctr = c.runtime.CreateContainer(pb.CreateContainerRequest(
            pod_sandbox_id=pod, config=container_config("c", LOOP), sandbox_config=cfg)).container_id
        crash(d, lambda: c.runtime.StartContainer(pb.StartContainerRequest(container_id=ctr)))
    with d.client() as c:
        st = c.runtime.ContainerStatus(pb.ContainerStatusRequest(container_id=ctr)).status
        if point == "ctr.start.before_runtime_start":
            assert st.state == pb.CONTAINER_CREATED
            c.runtime.StartContainer(pb.StartContainerRequest(container_id=ctr))
        else:
            # The runtime started it: found running (a retried start is refused).
            assert st.state == pb.CONTAINER_RUNNING
        assert_supervised_run(c, ctr)
        c.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod))
        c.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod))
    assert_nothing_left(d)
