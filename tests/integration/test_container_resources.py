"""Container resources on the real kernel (cgroup v1 on this node): memory
limits enforced and OOM kills reported as OOMKilled, live updates, the
daemon-wide pids limit, and log reopening for kubelet's log rotation."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import grpc
import pytest

from cri.proto import api_pb2 as pb
from runtime import host
from tests.pods_fixtures import *  # noqa: F403
from tests.pods_fixtures import _daemon_fixture, container_config, load_image, pod_config, wait_state

pytestmark = pytest.mark.integration

LAYOUT = host.detect_cgroup_layout()
PIDS_LIMIT = 40


def cgroup_file(controller: str, cgroup_path: str, name: str) -> Path:
    if LAYOUT.mode == "v2":
        return Path(LAYOUT.unified_path) / cgroup_path.lstrip("/") / name
    return Path("/sys/fs/cgroup") / controller / cgroup_path.lstrip("/") / name


@pytest.fixture(scope="module")
def daemon():
    gen = _daemon_fixture(["--runtime-pids-limit", str(PIDS_LIMIT)])
    d = next(gen)
    load_image(d)
    yield d
    next(gen, None)


@pytest.fixture
def env(daemon, tmp_path):
    from tests.pods_fixtures import remove_all_pods
    with daemon.client() as c:
        yield {"c": c, "logs": tmp_path}
    remove_all_pods(daemon)


def make_pod(e, name="res"):
    cfg = pod_config(name, log_directory=str(e["logs"]))
    return e["c"].runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg)).pod_sandbox_id, cfg


def run(e, pod, cfg, name, command, resources=None, start=True):
    config = container_config(name, command)
    if resources is not None:
        config.linux.resources.CopyFrom(resources)
    ctr = e["c"].runtime.CreateContainer(pb.CreateContainerRequest(
        pod_sandbox_id=pod, config=config, sandbox_config=cfg)).container_id
    if start:
        e["c"].runtime.StartContainer(pb.StartContainerRequest(container_id=ctr))
    return ctr


def info(c, ctr):
    return json.loads(c.runtime.ContainerStatus(pb.ContainerStatusRequest(container_id=ctr, verbose=True)).info["info"])


MiB = 1024 * 1024


def test_memory_limit_enforced_and_oom_reported(env):
    c = env["c"]
    pod, cfg = make_pod(env)
    limit = pb.LinuxContainerResources(memory_limit_in_bytes=32 * MiB, memory_swap_limit_in_bytes=32 * MiB)
    # Within the limit: fine.
    small = run(env, pod, cfg, "small", ["/bin/sh", "-c", "head -c 8000000 /dev/zero | tail -c 1 >/dev/null; echo ok"], limit)
    st = wait_state(c, small, pb.CONTAINER_EXITED)
    assert (st.exit_code, st.reason) == (0, "Completed")
    # `tail` keeps everything after the last newline: /dev/zero has none.
    hog = run(env, pod, cfg, "hog", ["tail", "/dev/zero"], limit, start=False)
    cg = info(c, hog)["cgroupPath"]
    c.runtime.StartContainer(pb.StartContainerRequest(container_id=hog))
    assert int(cgroup_file("memory", cg, "memory.limit_in_bytes").read_text()) == 32 * MiB
    st = wait_state(c, hog, pb.CONTAINER_EXITED, timeout=60)
    assert st.state == pb.CONTAINER_EXITED
    assert st.reason == "OOMKilled" and st.exit_code == 137


def test_update_resources_live(env):
    c = env["c"]
    pod, cfg = make_pod(env)
    ctr = run(env, pod, cfg, "upd", ["sleep", "1000"],
              pb.LinuxContainerResources(memory_limit_in_bytes=64 * MiB, cpu_period=100000, cpu_quota=50000, cpu_shares=512))
    st = c.runtime.ContainerStatus(pb.ContainerStatusRequest(container_id=ctr)).status
    assert st.resources.linux.memory_limit_in_bytes == 64 * MiB
    assert st.resources.linux.cpu_quota == 50000 and st.resources.linux.cpu_shares == 512
    c.runtime.UpdateContainerResources(pb.UpdateContainerResourcesRequest(
        container_id=ctr, linux=pb.LinuxContainerResources(memory_limit_in_bytes=96 * MiB, cpu_period=100000,
                                                           cpu_quota=25000, cpu_shares=256)))
    cg = info(c, ctr)["cgroupPath"]
    assert int(cgroup_file("memory", cg, "memory.limit_in_bytes").read_text()) == 96 * MiB
    assert int(cgroup_file("cpu", cg, "cpu.cfs_quota_us").read_text()) == 25000
    st = c.runtime.ContainerStatus(pb.ContainerStatusRequest(container_id=ctr)).status
    assert st.resources.linux.memory_limit_in_bytes == 96 * MiB
    assert st.resources.linux.cpu_quota == 25000 and st.resources.linux.cpu_shares == 256
    with pytest.raises(grpc.RpcError) as e:
        c.runtime.UpdateContainerResources(pb.UpdateContainerResourcesRequest(
            container_id=ctr, linux=pb.LinuxContainerResources(cpuset_cpus="not-a-cpu-list")))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    c.runtime.StopContainer(pb.StopContainerRequest(container_id=ctr, timeout=0))
    with pytest.raises(grpc.RpcError) as e:
        c.runtime.UpdateContainerResources(pb.UpdateContainerResourcesRequest(
            container_id=ctr, linux=pb.LinuxContainerResources(memory_limit_in_bytes=96 * MiB)))
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_pids_limit(env):
    c = env["c"]
    pod, cfg = make_pod(env)
    ctr = run(env, pod, cfg, "pids", ["sleep", "1000"])
    cg = info(c, ctr)["cgroupPath"]
    assert int(cgroup_file("pids", cg, "pids.max").read_text()) == PIDS_LIMIT
    r = c.runtime.ExecSync(pb.ExecSyncRequest(container_id=ctr, timeout=30, cmd=[
        "/bin/sh", "-c", f"i=0; while [ $i -lt {PIDS_LIMIT + 10} ]; do sleep 5 & i=$((i+1)); done; echo spawned"]))
    assert b"fork" in r.stderr.lower()
    assert int(cgroup_file("pids", cg, "pids.current").read_text()) <= PIDS_LIMIT


def test_reopen_container_log(env):
    c = env["c"]
    pod, cfg = make_pod(env)
    ctr = run(env, pod, cfg, "chatty", ["/bin/sh", "-c", "i=0; while :; do echo line $i; i=$((i+1)); sleep 0.05; done"])
    path = env["logs"] / "chatty.log"
    deadline = time.monotonic() + 10
    while not path.exists() or "line 2" not in path.read_text():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    rotated = env["logs"] / "chatty.log.1"
    os.rename(path, rotated)
    c.runtime.ReopenContainerLog(pb.ReopenContainerLogRequest(container_id=ctr))
    assert path.exists()  # back at its path when the call returns
    deadline = time.monotonic() + 10
    while not path.exists() or "line" not in path.read_text():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    old_last = int(rotated.read_text().splitlines()[-1].split()[-1])
    new_first = int(path.read_text().splitlines()[0].split()[-1])
    assert new_first == old_last + 1  # nothing lost, nothing repeated
    c.runtime.StopContainer(pb.StopContainerRequest(container_id=ctr, timeout=0))
    with pytest.raises(grpc.RpcError) as e:
        c.runtime.ReopenContainerLog(pb.ReopenContainerLogRequest(container_id=ctr))
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_container_stats(env):
    c = env["c"]
    pod, cfg = make_pod(env)
    busy = run(env, pod, cfg, "busy", ["/bin/sh", "-c", "head -c 3000000 /dev/urandom > /tmp/blob; while :; do :; done"],
               pb.LinuxContainerResources(memory_limit_in_bytes=64 * MiB))
    idle = run(env, pod, cfg, "idle", ["sleep", "1000"], start=False, )
    deadline = time.monotonic() + 10
    while True:
        st = c.runtime.ContainerStats(pb.ContainerStatsRequest(container_id=busy)).stats
        if st.writable_layer.used_bytes.value >= 3000000 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert st.attributes.id == busy and st.attributes.metadata.name == "busy"
    assert st.cpu.usage_core_nano_seconds.value > 0
    assert st.memory.working_set_bytes.value > 0 and st.memory.usage_bytes.value > 0
    assert 0 < st.memory.available_bytes.value <= 64 * MiB
    assert st.writable_layer.used_bytes.value >= 3000000 and st.writable_layer.inodes_used.value >= 2
    time.sleep(0.3)
    again = c.runtime.ContainerStats(pb.ContainerStatsRequest(container_id=busy)).stats
    # A busy loop: a rate, in nano cores, of most of one core.
    assert again.cpu.usage_nano_cores.value > 100_000_000
    listed = c.runtime.ListContainerStats(pb.ListContainerStatsRequest()).stats
    assert [s.attributes.id for s in listed] == [busy, idle]
    assert not listed[1].HasField("cpu")
    only = c.runtime.ListContainerStats(pb.ListContainerStatsRequest(filter=pb.ContainerStatsFilter(id=idle))).stats
    assert [s.attributes.id for s in only] == [idle]
    with pytest.raises(grpc.RpcError) as e:
        c.runtime.ContainerStats(pb.ContainerStatsRequest(container_id="0" * 64))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


def test_pod_sandbox_stats(env):
    c = env["c"]
    pod, cfg = make_pod(env, "podstats")
    ctr = run(env, pod, cfg, "work", ["/bin/sh", "-c", "sleep 1000 & sleep 1000"])
    deadline = time.monotonic() + 10
    while True:
        st = c.runtime.PodSandboxStats(pb.PodSandboxStatsRequest(pod_sandbox_id=pod)).stats
        if st.linux.process.process_count.value >= 3 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert st.attributes.id == pod and st.attributes.metadata.name == "podstats"
    # conmon and the container's sh and two sleeps live in the pod's cgroup.
    assert st.linux.process.process_count.value >= 3
    assert st.linux.memory.working_set_bytes.value > 0 and st.linux.cpu.usage_core_nano_seconds.value > 0
    assert [x.attributes.id for x in st.linux.containers] == [ctr]
    # An interface in the pod's network namespace, and some traffic on it.
    netns = json.loads(c.runtime.PodSandboxStatus(pb.PodSandboxStatusRequest(
        pod_sandbox_id=pod, verbose=True)).info["info"])["namespaces"]["network"]
    import subprocess
    for cmd in (["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "peer0"], ["ip", "link", "set", "eth0", "up"],
                ["ip", "link", "set", "peer0", "up"], ["ip", "addr", "add", "10.99.0.2/24", "dev", "eth0"]):
        subprocess.run(["nsenter", f"--net={netns}", "--", *cmd], check=True)
    # From inside the container, which shares the pod's network.
    c.runtime.ExecSync(pb.ExecSyncRequest(container_id=ctr, cmd=["ping", "-c", "2", "-W", "1", "10.99.0.3"], timeout=10))
    st = c.runtime.PodSandboxStats(pb.PodSandboxStatsRequest(pod_sandbox_id=pod)).stats
    assert st.linux.network.default_interface.name == "eth0"
    assert st.linux.network.default_interface.tx_bytes.value > 0
    assert sorted(i.name for i in st.linux.network.interfaces) == ["eth0", "peer0"]
    listed = c.runtime.ListPodSandboxStats(pb.ListPodSandboxStatsRequest()).stats
    assert [x.attributes.id for x in listed] == [pod]
    c.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod))
    st = c.runtime.PodSandboxStats(pb.PodSandboxStatsRequest(pod_sandbox_id=pod)).stats
    assert not st.linux.HasField("cpu") and list(st.linux.containers) == []
