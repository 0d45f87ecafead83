"""CreateContainer starts conmon before the bundle is complete (it waits on
its start pipe while it joins the pod's cgroup): a request refused after
that point must leave no conmon, mount, bundle or record behind."""

from __future__ import annotations

import os
from pathlib import Path

import grpc
import pytest

from cri.proto import api_pb2 as pb
from tests.pods_fixtures import *  # noqa: F403
from tests.pods_fixtures import container_config, leftover_mounts, leftover_processes, load_image, pod_config

pytestmark = pytest.mark.integration


def refuse(d, c, pod: str, cfg: pb.PodSandboxConfig, bad: pb.ContainerConfig, code: grpc.StatusCode, says: str) -> None:
    """CreateContainer of `bad` fails with `code` and leaves no process,
    mount, bundle, rootfs or record behind."""
    before = {p for p, _ in leftover_processes([d.base])}
    mounts_before = leftover_mounts([d.base])  # the pod's own
    with pytest.raises(grpc.RpcError) as e:
        c.runtime.CreateContainer(pb.CreateContainerRequest(pod_sandbox_id=pod, config=bad, sandbox_config=cfg))
    assert e.value.code() == code
    assert says in e.value.details()
    assert {p for p, _ in leftover_processes([d.base])} == before
    assert leftover_mounts([d.base]) == mounts_before
    assert os.listdir(Path(d.state_root) / "containers") == []
    for scratch in (Path(d.data_root) / "rootfs", Path(d.data_root) / "containers"):
        assert not scratch.exists() or os.listdir(scratch) == []
    assert c.runtime.ListContainers(pb.ListContainersRequest()).containers == []


def test_refused_after_conmon_started_leaves_nothing(clean_pods):
    d = clean_pods
    load_image(d)
    with d.client() as c:
        cfg = pod_config("failing")
        pod = c.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg)).pod_sandbox_id
        # The spec is built (and refused) after conmon has been started.
        bad = container_config("bad", ["/bin/true"])
        bad.envs.add(key="", value=b"x")
        refuse(d, c, pod, cfg, bad, grpc.StatusCode.INVALID_ARGUMENT, "empty name")
        # The name is free again, and a good container under it works.
        ok = container_config("bad", ["sleep", "1000"])
        ctr = c.runtime.CreateContainer(pb.CreateContainerRequest(pod_sandbox_id=pod, config=ok, sandbox_config=cfg)).container_id
        c.runtime.StartContainer(pb.StartContainerRequest(container_id=ctr))
        st = c.runtime.ContainerStatus(pb.ContainerStatusRequest(container_id=ctr)).status
        assert st.state == pb.CONTAINER_RUNNING


def test_refused_by_the_runtime_leaves_nothing(clean_pods):
    """The record is written while the runtime creates the container; when
    the runtime then refuses, the record goes with everything else."""
    d = clean_pods
    load_image(d)
    with d.client() as c:
        cfg = pod_config("refused")
        pod = c.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg)).pod_sandbox_id
        # A well-formed CPU list naming a CPU this node lacks: only the
        # kernel refuses it, when the runtime writes the container's cgroup.
        bad = container_config("bad", ["sleep", "1000"])
        bad.linux.resources.cpuset_cpus = f"{os.cpu_count() + 60}"
        refuse(d, c, pod, cfg, bad, grpc.StatusCode.INTERNAL, "creating the container failed")
        assert "could not move" not in d.log()
    d.stop()
    d.start()
    with d.client() as c:
        assert c.runtime.ListContainers(pb.ListContainersRequest()).containers == []
