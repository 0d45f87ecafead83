"""Pods with their own user namespace (userns_options mode POD, kubelet's
hostUsers: false) on the real parts: runc, the kernel's ID-mapped mounts,
a CNI bridge network. A container sees the pod's mapping, is root inside
and nobody outside, sees the image's files owned by its root, and has the
pod's network; removing the pod leaves no pinned namespace, mount or
process, and neither does a crash in the middle of RunPodSandbox."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path
from typing import Iterator

import grpc
import pytest

from cri.proto import api_pb2 as pb
from tests.crash_harness import CrashRig
from tests.integration.test_cni_integration import CNI_BIN
from tests.integration.test_crash_pods import net as net  # noqa: F401 - the module-wide CNI network fixture
from tests.pods_fixtures import *  # noqa: F403
from tests.pods_fixtures import container_config, load_image, pod_config

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists(f"{CNI_BIN}/bridge"),
                                 reason="needs root and containernetworking-plugins")]

# Where kubelet would put a pod's range: a multiple of 65536, away from
# every real user of this node.
HOST_ID = 65536 * 40
LENGTH = 65536


def userns_pod_config(name: str, host_id: int = HOST_ID, pid: int = pb.POD) -> pb.PodSandboxConfig:
    cfg = pod_config(name)
    ns = cfg.linux.security_context.namespace_options
    ns.pid = pid
    ns.userns_options.mode = pb.POD
    ns.userns_options.uids.add(container_id=0, host_id=host_id, length=LENGTH)
    ns.userns_options.gids.add(container_id=0, host_id=host_id + LENGTH, length=LENGTH)
    return cfg


def run_pod(c, cfg) -> str:
    return c.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg)).pod_sandbox_id


def stop_and_remove(c, pod_id: str) -> None:
    c.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod_id))
    c.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod_id))


def start(c, pod_id, cfg, name, command=("sleep", "1000")) -> str:
    config = container_config(name, list(command))
    # kubelet copies the pod's namespace options into each container's.
    config.linux.security_context.namespace_options.CopyFrom(cfg.linux.security_context.namespace_options)
    ctr = c.runtime.CreateContainer(pb.CreateContainerRequest(pod_sandbox_id=pod_id, config=config,
                                                              sandbox_config=cfg)).container_id
    c.runtime.StartContainer(pb.StartContainerRequest(container_id=ctr))
    return ctr


def sh(c, ctr, script) -> tuple[int, str, str]:
    r = c.runtime.ExecSync(pb.ExecSyncRequest(container_id=ctr, cmd=["/bin/sh", "-c", script], timeout=30))
    return r.exit_code, r.stdout.decode(), r.stderr.decode()


def host_ids(pid: int) -> tuple[int, int]:
    fields = {line.split(":")[0]: line.split()[1:] for line in Path(f"/proc/{pid}/status").read_text().splitlines()}
    return int(fields["Uid"][0]), int(fields["Gid"][0])


def searchable_roots(r: CrashRig) -> CrashRig:
    """User-namespaced roots live beside the state root
    (runtime/rootfs.py); on a node its parent is /run, searchable by all.
    The test's private base stands in for it."""
    for d in (r.base, Path(r.daemon.state_root).parent):
        os.chmod(d, 0o711)
    return r


@pytest.fixture
def rig(net) -> Iterator[CrashRig]:
    r = searchable_roots(CrashRig(net))
    load_image(r.daemon)
    try:
        yield r
    finally:
        r.close()


def test_container_runs_in_the_pods_user_namespace(rig):
    with rig.client() as c:
        cfg = userns_pod_config("userns")
        pod = run_pod(c, cfg)
        st = c.runtime.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=pod, verbose=True))
        assert st.status.network.ip, "the pod has an address on the CNI network"
        ctr = start(c, pod, cfg, "app")
        code, out, err = sh(c, ctr, "cat /proc/self/uid_map /proc/self/gid_map")
        assert code == 0, err
        assert [line.split() for line in out.splitlines()] == [
            ["0", str(HOST_ID), str(LENGTH)], ["0", str(HOST_ID + LENGTH), str(LENGTH)]]
        assert sh(c, ctr, "id -u; id -g")[1].split() == ["0", "0"]
        # The image's files (owned by the node's root in the layer store)
        # are owned by the container's root, and so is its "/".
        assert sh(c, ctr, "stat -c '%u %g' /bin/busybox / /etc/passwd")[1].split() == ["0"] * 6
        # The pod's own files are the pod root's too, as in a pod without a
        # user namespace (not the overflow ID: root in the pod may edit them).
        assert sh(c, ctr, "stat -c '%u %g' /etc/hostname /etc/resolv.conf /etc/hosts /dev/shm")[1].split() == \
            ["0"] * 8
        assert sh(c, ctr, "echo '# edited' >> /etc/resolv.conf")[0] == 0
        # The container's root can write its root filesystem.
        assert sh(c, ctr, "echo x > /made-here && chown 1000:1000 /made-here && stat -c '%u' /made-here") \
            == (0, "1000\n", "")
        # The pod's network namespace belongs to the user namespace: runc
        # could mount /sys there, which shows the CNI interface.
        assert "eth0" in sh(c, ctr, "ls /sys/class/net")[1].split()
        assert st.status.network.ip in sh(c, ctr, "ip -4 addr show eth0 2>/dev/null || ifconfig eth0")[1]
        # Outside, the container's root is the mapped host ID, not root.
        cst = c.runtime.ContainerStatus(pb.ContainerStatusRequest(container_id=ctr, verbose=True))
        import json
        pid = json.loads(cst.info["info"])["pid"]
        assert host_ids(pid) == (HOST_ID, HOST_ID + LENGTH)
        # The layer store itself was not touched: still the node's root.
        data = Path(rig.daemon.data_root)
        busyboxes = [p for p in data.rglob("busybox") if p.is_file() and not p.is_symlink() and "rootfs" not in p.parts]
        assert busyboxes and all(p.stat().st_uid == 0 for p in busyboxes)
        # A second container joins the same namespace.
        other = start(c, pod, cfg, "other")
        assert os.readlink(f"/proc/{pid}/ns/user") == os.readlink(
            f"/proc/{json.loads(c.runtime.ContainerStatus(pb.ContainerStatusRequest(container_id=other, verbose=True)).info['info'])['pid']}/ns/user")
        assert os.readlink(f"/proc/{pid}/ns/user") != os.readlink("/proc/self/ns/user")
        roots = Path(rig.daemon.state_root + "-userns")
        assert os.path.ismount(roots / ctr) and stat.S_IMODE(roots.stat().st_mode) == 0o711
        stop_and_remove(c, pod)
        assert os.listdir(roots) == []
    rig.stop()
    rig.assert_no_leaks()


def test_host_network_with_a_user_namespace_is_refused(rig):
    with rig.client() as c:
        cfg = userns_pod_config("usernshost")
        cfg.linux.security_context.namespace_options.network = pb.NODE
        with pytest.raises(grpc.RpcError) as e:
            run_pod(c, cfg)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "network" in e.value.details()
        assert list(c.runtime.ListPodSandbox(pb.ListPodSandboxRequest()).items) == []
    rig.stop()
    rig.assert_no_leaks()


@pytest.mark.parametrize("step", ["pod.userns.holder_alive", "pod.after_namespaces", "pod.before_cni_add",
                                  "pod.after_record"])
def test_kill_during_run_pod_sandbox_with_a_user_namespace(net, step):  # noqa: F811 - net is the fixture
    rig = searchable_roots(CrashRig(net, crash_at=step))
    try:
        cfg = userns_pod_config("usernscrash")
        rig.crash(lambda c: run_pod(c, cfg))
        rig.restart()
        with rig.client() as c:
            listed = list(c.runtime.ListPodSandbox(pb.ListPodSandboxRequest()).items)
            assert len(listed) <= 1 and (not listed or step == "pod.after_record")
            pod = run_pod(c, cfg)
            assert [p.id for p in listed] in ([], [pod])
            stop_and_remove(c, pod)
        rig.stop()
        rig.assert_no_leaks()
    finally:
        rig.close()


def test_pod_with_container_pid_namespaces(rig):
    """Without a pod-wide PID namespace each container gets its own, owned
    by the pod's user namespace (so runc can mount /proc)."""
    with rig.client() as c:
        cfg = userns_pod_config("usernspid", pid=pb.CONTAINER)
        pod = run_pod(c, cfg)
        ctr = start(c, pod, cfg, "app")
        assert sh(c, ctr, "cat /proc/1/cmdline | tr '\\0' ' '")[1].strip() == "sleep 1000"
        stop_and_remove(c, pod)
        deadline = time.monotonic() + 5
        while list(c.runtime.ListContainers(pb.ListContainersRequest()).containers) and time.monotonic() < deadline:
            time.sleep(0.1)
    rig.stop()
    rig.assert_no_leaks()


def test_volumes_are_id_mapped(rig, tmp_path):
    """A volume's files keep their IDs inside the pod's user namespace (an
    fsGroup kubelet set stays that group), both ways."""
    vol = tmp_path / "vol"
    vol.mkdir()
    (vol / "owned").write_text("x")
    os.chown(vol / "owned", 1000, 2000)
    with rig.client() as c:
        cfg = userns_pod_config("usernsvol")
        pod = run_pod(c, cfg)
        config = container_config("app", ["sleep", "1000"])
        config.linux.security_context.namespace_options.CopyFrom(cfg.linux.security_context.namespace_options)
        config.mounts.append(pb.Mount(container_path="/vol", host_path=str(vol)))
        ctr = c.runtime.CreateContainer(pb.CreateContainerRequest(pod_sandbox_id=pod, config=config,
                                                                  sandbox_config=cfg)).container_id
        c.runtime.StartContainer(pb.StartContainerRequest(container_id=ctr))
        assert sh(c, ctr, "stat -c '%u %g' /vol/owned /vol")[1].split() == ["1000", "2000", "0", "0"]
        assert sh(c, ctr, "echo y > /vol/new && chown 7:8 /vol/new")[0] == 0
        assert ((vol / "new").stat().st_uid, (vol / "new").stat().st_gid) == (7, 8)
        stop_and_remove(c, pod)
    rig.stop()
    rig.assert_no_leaks()
