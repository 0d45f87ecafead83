"""Containers and faults through the crash harness (tests/crash_harness.py),
on a CNI-networked pod with a hostPort and its own PID namespace:

- crispy SIGKILLed at each CreateContainer/StartContainer crash point and
  restarted: the pod is still READY with its one address, the container is
  gone or supervised, kubelet's retry works;
- conmon killed under a running container: EXITED, reason MonitorLost;
- the pod's infra killed, or its network namespace pin unmounted: the pod
  is NOT_READY, CreateContainer in it FAILED_PRECONDITION, and StopPodSandbox
  still releases the address and the port rules.

Each case then removes everything through the CRI and takes the full
zero-leak inventory (mounts, processes, cgroups, IPAM, bridge ports,
iptables, state files and records)."""

from __future__ import annotations

import json
import os
import signal

import pytest

from cri.proto import api_pb2 as pb
from runtime import kmount
from tests.crash_harness import CrashRig
from tests.integration.test_cni_integration import CNI_BIN
from tests.integration.test_container_crashpoints import (
    CREATE_POINTS,
    LOOP,
    START_POINTS,
    alive,
    assert_supervised_run,
    info_of,
)
from tests.integration.test_crash_pods import crash_pod_config, net, run_pod, stop_and_remove  # noqa: F401 - net is a fixture
from tests.integration.test_monitor_lost import wait_gone
from tests.integration.test_pod_readiness import assert_wedge_free, wait_listed_not_ready
from tests.pods_fixtures import *  # noqa: F403
from tests.pods_fixtures import container_config, load_image, wait_state

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists(f"{CNI_BIN}/portmap"),
                                 reason="needs root and containernetworking-plugins")]


def networked_pod(c, tmp_path, name: str, pid: int = pb.POD) -> tuple[str, pb.PodSandboxConfig, str]:
    cfg = crash_pod_config(name)
    cfg.log_directory = str(tmp_path)
    cfg.linux.security_context.namespace_options.pid = pid
    pod = run_pod(c, cfg)
    st = c.runtime.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=pod)).status
    assert st.state == pb.SANDBOX_READY and st.network.ip
    return pod, cfg, st.network.ip


def create_request(pod: str, cfg: pb.PodSandboxConfig) -> pb.CreateContainerRequest:
    return pb.CreateContainerRequest(pod_sandbox_id=pod, config=container_config("c", LOOP), sandbox_config=cfg)


def assert_pod_intact(c, pod_net, pod: str, ip: str) -> None:
    """A container crash must not cost the pod its readiness or address."""
    st = c.runtime.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=pod)).status
    assert (st.state, st.network.ip) == (pb.SANDBOX_READY, ip)
    assert pod_net.leases() == [ip]


def containers(c) -> list[pb.Container]:
    return list(c.runtime.ListContainers(pb.ListContainersRequest()).containers)


def teardown(rig: CrashRig, c, pod: str) -> None:
    for x in containers(c):
        c.runtime.RemoveContainer(pb.RemoveContainerRequest(container_id=x.id))
    stop_and_remove(c, pod)
    assert containers(c) == []
    assert list(c.runtime.ListPodSandbox(pb.ListPodSandboxRequest()).items) == []


@pytest.mark.parametrize("point", CREATE_POINTS)
def test_kill_during_create_container(net, point, tmp_path):  # noqa: F811 - the pytest fixture imported above
    rig = CrashRig(net, crash_at=point)
    try:
        load_image(rig.daemon)
        with rig.client() as c:
            pod, cfg, ip = networked_pod(c, tmp_path, "crashcreate")
        req = create_request(pod, cfg)
        rig.crash(lambda c: c.runtime.CreateContainer(req))
        rig.restart()
        with rig.client() as c:
            assert_pod_intact(c, net, pod, ip)
            listed = containers(c)
            for x in listed:
                # Kept only if something supervises it.
                assert x.state == pb.CONTAINER_CREATED and alive(info_of(c, x.id)["conmonPid"])
            ctr = c.runtime.CreateContainer(req).container_id
            assert [x.id for x in listed] in ([], [ctr])
            c.runtime.StartContainer(pb.StartContainerRequest(container_id=ctr))
            assert_supervised_run(c, ctr)
            teardown(rig, c, pod)
        rig.stop()
        rig.assert_no_leaks()
    finally:
        rig.close()


@pytest.mark.parametrize("point", START_POINTS)
def test_kill_during_start_container(net, point, tmp_path):  # noqa: F811 - the pytest fixture imported above
    rig = CrashRig(net, crash_at=point)
    try:
        load_image(rig.daemon)
        with rig.client() as c:
            pod, cfg, ip = networked_pod(c, tmp_path, "crashstart")
            ctr = c.runtime.CreateContainer(create_request(pod, cfg)).container_id
        rig.crash(lambda c: c.runtime.StartContainer(pb.StartContainerRequest(container_id=ctr)))
        rig.restart()
        with rig.client() as c:
            assert_pod_intact(c, net, pod, ip)
            st = c.runtime.ContainerStatus(pb.ContainerStatusRequest(container_id=ctr)).status
            if point == "ctr.start.before_runtime_start":
                assert st.state == pb.CONTAINER_CREATED
                c.runtime.StartContainer(pb.StartContainerRequest(container_id=ctr))
            else:
                # The runtime started it: found running.
                assert st.state == pb.CONTAINER_RUNNING
            assert_supervised_run(c, ctr)
            teardown(rig, c, pod)
        rig.stop()
        rig.assert_no_leaks()
    finally:
        rig.close()


@pytest.mark.parametrize("daemon_up", [True, False], ids=["daemon-up", "daemon-down"])
def test_conmon_killed(net, daemon_up, tmp_path):  # noqa: F811 - the pytest fixture imported above
    rig = CrashRig(net)
    try:
        load_image(rig.daemon)
        with rig.client() as c:
            pod, cfg, ip = networked_pod(c, tmp_path, "conmonlost")
            ctr = c.runtime.CreateContainer(create_request(pod, cfg)).container_id
            c.runtime.StartContainer(pb.StartContainerRequest(container_id=ctr))
            info = info_of(c, ctr)
        if not daemon_up:
            rig.daemon.stop(signal.SIGKILL)
        os.kill(info["conmonPid"], signal.SIGKILL)
        assert wait_gone(info["conmonPid"])
        if not daemon_up:
            rig.daemon.start()
        with rig.client() as c:
            st = wait_state(c, ctr, pb.CONTAINER_EXITED)
            assert (st.state, st.exit_code, st.reason) == (pb.CONTAINER_EXITED, 137, "MonitorLost")
            assert wait_gone(info["pid"]), "the container's process still runs"
            # Only the container is lost: the pod keeps its network.
            assert_pod_intact(c, net, pod, ip)
            teardown(rig, c, pod)
        rig.stop()
        rig.assert_no_leaks()
    finally:
        rig.close()


def pod_info(c, pod: str) -> dict:
    return json.loads(c.runtime.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=pod, verbose=True)).info["info"])


@pytest.mark.parametrize("fault", ["infra-killed", "netns-pin-unmounted", "netns-pin-unmounted-no-infra"])
def test_pod_fault(net, fault, tmp_path):  # noqa: F811 - the pytest fixture imported above
    """A running container in the pod throughout: it keeps the network
    namespace alive after its pin is gone, as a real workload would."""
    rig = CrashRig(net)
    try:
        load_image(rig.daemon)
        with rig.client() as c:
            pid_mode = pb.CONTAINER if fault.endswith("no-infra") else pb.POD
            pod, cfg, ip = networked_pod(c, tmp_path, "podfault", pid=pid_mode)
            ctr = c.runtime.CreateContainer(create_request(pod, cfg)).container_id
            c.runtime.StartContainer(pb.StartContainerRequest(container_id=ctr))
            info = pod_info(c, pod)
            if fault == "infra-killed":
                os.kill(info["pid"], signal.SIGKILL)
            else:
                kmount.umount(info["namespaces"]["network"])
            assert wait_listed_not_ready(c, pod) == pb.SANDBOX_NOTREADY
            # Until StopPodSandbox the pod keeps its address (kubelet stops
            # it before making a new one).
            assert net.leases() == [ip]
            # NOT_READY everywhere, no new container, stop and remove work.
            assert_wedge_free(c, pod, cfg)
            assert net.leases() == []
            for x in containers(c):
                c.runtime.RemoveContainer(pb.RemoveContainerRequest(container_id=x.id))
            assert containers(c) == []
        rig.stop()
        rig.assert_no_leaks()
    finally:
        rig.close()
