"""crispy killed with SIGKILL while containers run: the restarted daemon
finds them again with the right states and exit codes, and still manages
them (exec, stop, exit detection, removal)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from cri.proto import api_pb2 as pb
from tests.pods_fixtures import *  # noqa: F403
from tests.pods_fixtures import container_config, load_image, pod_config, wait_state

pytestmark = pytest.mark.integration


def test_containers_survive_daemon_kill(pod_daemon, tmp_path):
    load_image(pod_daemon)
    cfg = pod_config("recover", log_directory=str(tmp_path))
    cfg.linux.security_context.namespace_options.pid = pb.POD
    with pod_daemon.client() as c:
        pod = c.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg)).pod_sandbox_id

        def start(name, cmd, run=True):
            ctr = c.runtime.CreateContainer(pb.CreateContainerRequest(
                pod_sandbox_id=pod, config=container_config(name, cmd), sandbox_config=cfg)).container_id
            if run:
                c.runtime.StartContainer(pb.StartContainerRequest(container_id=ctr))
            return ctr
        alive = start("alive", ["/bin/sh", "-c", "trap 'exit 9' TERM; while :; do sleep 0.1; done"])
        later = start("later", ["/bin/sh", "-c", "while [ ! -e /tmp/go ]; do sleep 0.05; done; echo bye; exit 3"])
        done = start("done", ["/bin/sh", "-c", "exit 0"])
        created = start("created", ["sleep", "1"], run=False)
        assert wait_state(c, done, pb.CONTAINER_EXITED).exit_code == 0
        info = json.loads(c.runtime.ContainerStatus(pb.ContainerStatusRequest(container_id=later, verbose=True)).info["info"])
        alive_pid = json.loads(c.runtime.ContainerStatus(pb.ContainerStatusRequest(container_id=alive, verbose=True)).info["info"])["pid"]

    pod_daemon.stop(signal.SIGKILL)
    # While crispy is down, one container exits; conmon records it.
    open(os.path.join(info["rootfs"], "tmp", "go"), "w").close()
    deadline = time.monotonic() + 20
    while not os.path.exists(os.path.join(info["bundle"], "exit")):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert os.path.exists(f"/proc/{alive_pid}")

    pod_daemon.start()
    with pod_daemon.client() as c:
        states = {x.metadata.name: x.state for x in c.runtime.ListContainers(pb.ListContainersRequest()).containers}
        assert states == {"alive": pb.CONTAINER_RUNNING, "later": pb.CONTAINER_EXITED,
                          "done": pb.CONTAINER_EXITED, "created": pb.CONTAINER_CREATED}
        st = c.runtime.ContainerStatus(pb.ContainerStatusRequest(container_id=later)).status
        assert (st.exit_code, st.reason) == (3, "Error") and st.finished_at >= st.started_at > 0
        st = c.runtime.ContainerStatus(pb.ContainerStatusRequest(container_id=done)).status
        assert (st.exit_code, st.reason) == (0, "Completed")
        assert "bye" in open(tmp_path / "later.log").read()
        # Still managed: exec, start of the created one, stop with exit detection.
        r = c.runtime.ExecSync(pb.ExecSyncRequest(container_id=alive, cmd=["echo", "hi"]))
        assert r.stdout == b"hi\n"
        c.runtime.StartContainer(pb.StartContainerRequest(container_id=created))
        # Its record was written during the create, before the runtime's pid
        # file: the restarted daemon took the pid from there.
        record = json.load(open(os.path.join(pod_daemon.data_root, "containers", f"{created}.json")))
        bundle = json.loads(c.runtime.ContainerStatus(pb.ContainerStatusRequest(
            container_id=created, verbose=True)).info["info"])["bundle"]
        assert record["pid"] == int(open(os.path.join(bundle, "pidfile")).read()) > 0
        assert wait_state(c, created, pb.CONTAINER_EXITED).exit_code == 0
        c.runtime.StopContainer(pb.StopContainerRequest(container_id=alive, timeout=10))
        st = c.runtime.ContainerStatus(pb.ContainerStatusRequest(container_id=alive)).status
        assert st.state == pb.CONTAINER_EXITED and st.exit_code == 9
        c.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod))
        c.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod))
        assert list(c.runtime.ListContainers(pb.ListContainersRequest()).containers) == []


def test_exit_while_daemon_down_after_graceful_stop(pod_daemon, tmp_path):
    load_image(pod_daemon)
    cfg = pod_config("graceful", log_directory=str(tmp_path))
    with pod_daemon.client() as c:
        pod = c.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg)).pod_sandbox_id
        ctr = c.runtime.CreateContainer(pb.CreateContainerRequest(
            pod_sandbox_id=pod, config=container_config("c", ["sleep", "2"]), sandbox_config=cfg)).container_id
        c.runtime.StartContainer(pb.StartContainerRequest(container_id=ctr))
    assert pod_daemon.stop() == 0
    time.sleep(3)
    pod_daemon.start()
    with pod_daemon.client() as c:
        st = c.runtime.ContainerStatus(pb.ContainerStatusRequest(container_id=ctr)).status
        assert st.state == pb.CONTAINER_EXITED and st.exit_code == 0 and st.reason == "Completed"


def test_started_just_before_the_daemon_died(pod_daemon, tmp_path):
    """The runtime started the container but crispy died before recording
    it: the restarted daemon finds it running, not created."""
    load_image(pod_daemon)
    cfg = pod_config("catchup", log_directory=str(tmp_path))
    with pod_daemon.client() as c:
        pod = c.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg)).pod_sandbox_id
        ctr = c.runtime.CreateContainer(pb.CreateContainerRequest(
            pod_sandbox_id=pod, config=container_config("c", ["/bin/sh", "-c", "trap 'exit 7' TERM; while :; do sleep 0.1; done"]),
            sandbox_config=cfg)).container_id
        runtime = json.loads(c.runtime.ContainerStatus(pb.ContainerStatusRequest(
            container_id=ctr, verbose=True)).info["info"])["ociRuntime"]
    pod_daemon.stop(signal.SIGKILL)
    # What StartContainer had done when it died: the runtime's start, not the record's save.
    root = os.path.join(pod_daemon.state_root, "oci", os.path.basename(runtime))
    subprocess.run([runtime, "--root", root, "start", ctr], check=True, capture_output=True)
    before = time.time_ns()
    pod_daemon.start()
    with pod_daemon.client() as c:
        st = c.runtime.ContainerStatus(pb.ContainerStatusRequest(container_id=ctr)).status
        assert st.state == pb.CONTAINER_RUNNING and st.started_at >= before
        c.runtime.StopContainer(pb.StopContainerRequest(container_id=ctr, timeout=10))
        st = c.runtime.ContainerStatus(pb.ContainerStatusRequest(container_id=ctr)).status
        assert st.state == pb.CONTAINER_EXITED and st.exit_code == 7
        c.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod))
        c.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod))


def test_half_made_objects_are_swept_at_start(pod_daemon, tmp_path):
    """A crash between the first step of RunPodSandbox/CreateContainer and
    the record being written leaves state with no record: the next start
    removes it, processes and mounts included."""
    import subprocess

    from runtime import namespaces
    load_image(pod_daemon)
    pod_daemon.stop()
    pods_dir = os.path.join(pod_daemon.state_root, "pods", "f" * 64)
    os.makedirs(pods_dir)
    import asyncio
    pinned = asyncio.run(namespaces.create(__import__("pathlib").Path(pods_dir), namespaces.NamespaceRequest(pod_pid=True)))
    assert namespaces.infra_alive(pinned)
    ctr_dir = os.path.join(pod_daemon.state_root, "containers", "e" * 64, "rootfs")
    os.makedirs(ctr_dir)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", ctr_dir], check=True)
    pod_daemon.start()
    with pod_daemon.client() as c:
        c.runtime.ListPodSandbox(pb.ListPodSandboxRequest())
    assert not os.path.exists(pods_dir)
    assert not os.path.exists(os.path.dirname(ctr_dir))
    deadline = time.monotonic() + 5
    while namespaces.infra_alive(pinned):
        assert time.monotonic() < deadline
        time.sleep(0.05)
