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


def test_refused_after_conmon_started_leaves_nothing(clean_pods):
    d = clean_pods
    load_image(d)
    with d.client() as c:
        cfg = pod_config("failing")
        pod = c.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg)).pod_sandbox_id
        before = {p for p, _ in leftover_processes([d.base])}
        mounts_before = leftover_mounts([d.base])  # the pod's own
        # The spec is built (and refused) after conmon has been started.
        bad = container_config("bad", ["/bin/true"])
        bad.envs.add(key="", value=b"x")
        with pytest.raises(grpc.RpcError) as e:
            c.runtime.CreateContainer(pb.CreateContainerRequest(pod_sandbox_id=pod, config=bad, sandbox_config=cfg))
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "empty name" in e.value.details()
        assert {p for p, _ in leftover_processes([d.base])} == before
        assert leftover_mounts([d.base]) == mounts_before
        assert os.listdir(Path(d.state_root) / "containers") == []
        assert not (Path(d.data_root) / "rootfs").exists() or os.listdir(Path(d.data_root) / "rootfs") == []
        assert c.runtime.ListContainers(pb.ListContainersRequest()).containers == []
        # The name is free again, and a good container under it works.
        ok = container_config("bad", ["sleep", "1000"])
        ctr = c.runtime.CreateContainer(pb.CreateContainerRequest(pod_sandbox_id=pod, config=ok, sandbox_config=cfg)).container_id
        c.runtime.StartContainer(pb.StartContainerRequest(container_id=ctr))
        st = c.runtime.ContainerStatus(pb.ContainerStatusRequest(container_id=ctr)).status
        assert st.state == pb.CONTAINER_RUNNING
