"""The daemon killed (SIGKILL) at every step of RunPodSandbox,
StopPodSandbox, RemovePodSandbox and PullImage, on the real components
(CNI bridge + portmap with a hostPort, a pod PID namespace with its infra,
a pod cgroup, a loopback registry): after a restart the kubelet-visible
state is consistent (the pod is absent, or listed and removable; a retried
call works) and once everything is removed through the CRI nothing is left
on the node (tests/crash_harness.py)."""

from __future__ import annotations

import os
import random
from typing import Iterator

import pytest

from cri.proto import api_pb2 as pb
from tests import imagebuild as ib
from tests.crash_harness import CrashRig
from tests.integration.test_cni_integration import (
    CNI_BIN,
    SYSCTLS,
    PodNet,
    _undo_empty_new_tables,
    _undo_shared_chains,
    nft_tables,
)
from tests.pods_fixtures import *  # noqa: F403
from tests.pods_fixtures import pod_config
from tests.registry import REGISTRY_BIN, LocalRegistry

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists(f"{CNI_BIN}/portmap"),
                                 reason="needs root and containernetworking-plugins")]

RUN_STEPS = ["pod.after_dir", "pod.after_intent", "pod.after_namespaces", "pod.before_cni_add",
             "cni.after_add.bridge", "cni.after_add.portmap", "pod.after_cni_add", "pod.before_record",
             "pod.after_record"]
STOP_STEPS = ["pod.stop.after_containers", "pod.stop.after_cni_del", "pod.stop.before_record"]
REMOVE_STEPS = ["pod.remove.after_unpin", "pod.remove.after_cgroup", "pod.remove.before_record"]
PULL_STEPS = ["pull.after_layer_download", "pull.after_unpack_tmp", "pull.before_record"]


@pytest.fixture(scope="module")
def net(tmp_path_factory) -> Iterator[PodNet]:
    """One CNI network for the module; the host changes its plugins make are
    undone at the end (as test_cni_integration's host_guard does per test)."""
    from pathlib import Path
    sysctls = {k: Path("/proc/sys", k).read_text() for k in SYSCTLS}
    tables = nft_tables()
    bridges: list[str] = []
    yield PodNet(tmp_path_factory.mktemp("crashnet"), bridges)
    for br in bridges:
        os.system(f"ip link del {br} 2>/dev/null")
    _undo_shared_chains()
    _undo_empty_new_tables(tables)
    for k, v in sysctls.items():
        Path("/proc/sys", k).write_text(v)


def crash_pod_config(name: str) -> pb.PodSandboxConfig:
    cfg = pod_config(name, port_mappings=[pb.PortMapping(protocol=pb.TCP, container_port=80,
                                                         host_port=random.randrange(30000, 40000))])
    cfg.linux.security_context.namespace_options.pid = pb.POD
    return cfg


def run_pod(c, cfg) -> str:
    return c.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg)).pod_sandbox_id


def pods(c) -> list[pb.PodSandbox]:
    return list(c.runtime.ListPodSandbox(pb.ListPodSandboxRequest()).items)


def stop_and_remove(c, pod_id: str) -> None:
    c.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod_id))
    c.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod_id))


@pytest.mark.parametrize("step", RUN_STEPS)
def test_kill_during_run_pod_sandbox(net, step):
    rig = CrashRig(net, crash_at=step)
    try:
        cfg = crash_pod_config("crashrun")
        rig.crash(lambda c: run_pod(c, cfg))
        rig.restart()
        with rig.client() as c:
            listed = pods(c)
            # Absent, or (once its record was saved) there and ready.
            assert len(listed) <= 1
            if listed:
                assert step == "pod.after_record" and listed[0].state == pb.SANDBOX_READY
            # kubelet retries the same request: it works (and, when the pod
            # was recorded, returns that pod), with one address in use.
            pod = run_pod(c, cfg)
            assert [p.id for p in listed] in ([], [pod])
            st = c.runtime.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=pod)).status
            assert st.state == pb.SANDBOX_READY and st.network.ip
            assert net.leases() == [st.network.ip]
            stop_and_remove(c, pod)
        rig.stop()
        rig.assert_no_leaks()
    finally:
        rig.close()


@pytest.mark.parametrize("step", STOP_STEPS + REMOVE_STEPS)
def test_kill_during_stop_or_remove(net, step):
    rig = CrashRig(net, crash_at=step)
    try:
        with rig.client() as c:
            pod = run_pod(c, crash_pod_config("crashstop"))
        if step.startswith("pod.stop."):
            rig.crash(lambda c: c.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod)))
        else:
            with rig.client() as c:
                c.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod))
            rig.crash(lambda c: c.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod)))
        rig.restart()
        with rig.client() as c:
            # Still listed (its record goes last) and NOT_READY: once its
            # teardown has begun it may have no network any more (a pod
            # reported READY then would be handed containers that cannot
            # reach anything until kubelet's retried stop). kubelet's retry works.
            assert [p.id for p in pods(c)] == [pod]
            assert pods(c)[0].state == pb.SANDBOX_NOTREADY
            st = c.runtime.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=pod)).status
            assert st.state == pb.SANDBOX_NOTREADY
            stop_and_remove(c, pod)
            assert pods(c) == []
        rig.stop()
        rig.assert_no_leaks()
    finally:
        rig.close()


@pytest.fixture(scope="module")
def registry() -> Iterator[LocalRegistry]:
    if not os.path.exists(REGISTRY_BIN):
        pytest.skip("needs docker-registry")
    with LocalRegistry() as reg:
        yield reg


@pytest.mark.parametrize("step", PULL_STEPS)
def test_kill_during_pull(net, registry, step):
    img = ib.build_image([ib.make_layer(ib.busybox_entries()), ib.make_layer({"crash": ib.File(step.encode())})])
    ref = f"{registry.host}/crash/{step.replace('.', '-').replace('_', '-')}:1"
    registry.push(ref.split("/", 1)[1].split(":")[0], "1", img)
    rig = CrashRig(net, crash_at=step)
    try:
        rig.crash(lambda c: c.pull_image(ref))
        rig.restart()
        snaps = os.path.join(rig.daemon.data_root, "images", "snapshots")
        # Whatever the dead pull left half done is gone (its pid is a zombie now).
        assert not [n for n in os.listdir(snaps) if n.startswith(".tmp-")]
        with rig.client() as c:
            assert c.image_status(ref) is None  # the record was never written
            assert c.pull_image(ref) == img.config_digest
            assert c.image_status(ref).id == img.config_digest
            c.remove_image(ref)
            assert os.listdir(snaps) == []
        rig.stop()
        rig.assert_no_leaks()
    finally:
        rig.close()


def test_dangling_conmon_socket_links_are_swept(net):
    """conmon links <state_root>/sock/<id> to the container's bundle; a
    container crispy has no record of leaves a dangling link behind."""
    rig = CrashRig(net)
    try:
        rig.stop()
        sock_dir = os.path.join(rig.daemon.state_root, "sock")
        link = os.path.join(sock_dir, "d" * 64)
        os.symlink(os.path.join(rig.daemon.state_root, "containers", "d" * 64), link)
        other = os.path.join(sock_dir, "not-an-id")  # not crispy's: left alone
        os.symlink("/nonexistent", other)
        rig.daemon.start()
        with rig.client() as c:
            c.version()
        assert not os.path.lexists(link) and os.path.lexists(other)
        os.unlink(other)
        rig.stop()
        rig.assert_no_leaks()
    finally:
        rig.close()
