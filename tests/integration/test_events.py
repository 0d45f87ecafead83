"""GetContainerEvents on a real daemon: a real container's lifecycle (exit
included) and its pod's, with the statuses kubelet's evented PLEG reads;
an exit that happened while crispy was down, reported after the restart;
subscribers ended at shutdown."""

from __future__ import annotations

import queue
import shutil
import subprocess
import threading
import time

import grpc
import pytest

from cri.proto import api_pb2 as pb
from tests.daemon_proc import DaemonProcess, tmp_base
from tests.pods_fixtures import *  # noqa: F403
from tests.pods_fixtures import container_config, load_image, pod_config, start_pod_daemon, stop_pod_daemon, wait_state

pytestmark = pytest.mark.integration

T = {pb.CONTAINER_CREATED_EVENT: "created", pb.CONTAINER_STARTED_EVENT: "started",
     pb.CONTAINER_STOPPED_EVENT: "stopped", pb.CONTAINER_DELETED_EVENT: "deleted"}


class Subscriber:
    """Reads one GetContainerEvents stream in a thread."""

    def __init__(self, d: DaemonProcess) -> None:
        self.client = d.client().__enter__()
        self.stream = self.client.runtime.GetContainerEvents(pb.GetEventsRequest())
        self.events: queue.Queue[pb.ContainerEventResponse] = queue.Queue()
        self.error: grpc.RpcError | None = None
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for ev in self.stream:
                self.events.put(ev)
        except grpc.RpcError as e:
            self.error = e

    def until(self, want: set[tuple[str, str]], timeout: float = 30.0) -> list[pb.ContainerEventResponse]:
        got: list[pb.ContainerEventResponse] = []
        deadline = time.monotonic() + timeout
        while not want <= {(T[e.container_event_type], e.container_id) for e in got}:
            try:
                got.append(self.events.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                raise AssertionError(f"events seen: {[(T[e.container_event_type], e.container_id[:12]) for e in got]}") from None
        return got

    def close(self) -> None:
        self.stream.cancel()
        self.thread.join(5)
        self.client.__exit__(None, None, None)


@pytest.fixture
def daemon(tmp_path):
    d = start_pod_daemon(tmp_base())
    load_image(d)
    yield d
    stop_pod_daemon(d)


def test_a_real_containers_lifecycle_and_its_pods(daemon, tmp_path):
    sub = Subscriber(daemon)
    try:
        with daemon.client() as c:
            cfg = pod_config("events", log_directory=str(tmp_path))
            pod = c.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg)).pod_sandbox_id
            ctr = c.runtime.CreateContainer(pb.CreateContainerRequest(
                pod_sandbox_id=pod, config=container_config("app", ["/bin/sh", "-c", "sleep 0.3; exit 3"]),
                sandbox_config=cfg)).container_id
            c.runtime.StartContainer(pb.StartContainerRequest(container_id=ctr))
            got = sub.until({("stopped", ctr)})
            c.runtime.RemoveContainer(pb.RemoveContainerRequest(container_id=ctr))
            c.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod))
            c.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod))
            got += sub.until({("deleted", pod)})
        seq = [(T[e.container_event_type], e.container_id) for e in got]
        assert seq == [("created", pod), ("started", pod), ("created", ctr), ("started", ctr), ("stopped", ctr),
                       ("deleted", ctr), ("stopped", pod), ("deleted", pod)]
        stopped = got[4]
        assert stopped.pod_sandbox_status.id == pod and stopped.pod_sandbox_status.metadata.name == "events"
        assert stopped.pod_sandbox_status.state == pb.SANDBOX_READY
        (st,) = stopped.containers_statuses
        assert (st.id, st.state, st.exit_code, st.reason) == (ctr, pb.CONTAINER_EXITED, 3, "Error")
        assert st.finished_at >= st.started_at > 0
        assert got[6].pod_sandbox_status.state == pb.SANDBOX_NOTREADY
        assert got[-1].pod_sandbox_status.metadata.uid == "uid-events"
        assert all(e.created_at > 0 for e in got)
    finally:
        sub.close()


def test_a_container_that_exits_at_once_is_started_before_it_is_stopped(daemon, tmp_path):
    # Its exit may be seen while StartContainer is still under way; the
    # events keep lifecycle order all the same.
    sub = Subscriber(daemon)
    try:
        with daemon.client() as c:
            cfg = pod_config("instant", log_directory=str(tmp_path))
            pod = c.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg)).pod_sandbox_id
            ctrs = []
            for i in range(5):
                ctr = c.runtime.CreateContainer(pb.CreateContainerRequest(
                    pod_sandbox_id=pod, config=container_config(f"instant{i}", ["/bin/sh", "-c", "exit 4"]),
                    sandbox_config=cfg)).container_id
                c.runtime.StartContainer(pb.StartContainerRequest(container_id=ctr))
                ctrs.append(ctr)
            got = sub.until({("stopped", ctr) for ctr in ctrs})
            for ctr in ctrs:
                seq = [T[e.container_event_type] for e in got if e.container_id == ctr]
                assert seq == ["created", "started", "stopped"], (ctr[:12], seq)
            c.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod))
            c.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod))
    finally:
        sub.close()


def test_an_exit_while_crispy_is_down_is_reported_after_the_restart(daemon, tmp_path):
    with daemon.client() as c:
        cfg = pod_config("downexit", log_directory=str(tmp_path))
        pod = c.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg)).pod_sandbox_id
        # It exits once told to, after crispy has stopped: a timed exit could
        # come while a slow shutdown still runs and be recorded by the old
        # daemon, whose streams are closed by then.
        flags = tmp_path / "flags"
        flags.mkdir()
        config = container_config("app", ["/bin/sh", "-c", "while [ ! -e /flags/go ]; do sleep 0.05; done; exit 5"])
        config.mounts.append(pb.Mount(container_path="/flags", host_path=str(flags)))
        ctr = c.runtime.CreateContainer(pb.CreateContainerRequest(
            pod_sandbox_id=pod, config=config, sandbox_config=cfg)).container_id
        c.runtime.StartContainer(pb.StartContainerRequest(container_id=ctr))
    sub = Subscriber(daemon)
    assert daemon.stop() == 0
    sub.thread.join(10)
    # The stream ended with the shutdown, not at the end of the grace period.
    assert sub.error is not None and sub.error.code() == grpc.StatusCode.UNAVAILABLE
    sub.close()
    (flags / "go").touch()
    time.sleep(0.5)  # the loop sees the file within 50 ms
    again = daemon.start()
    sub = Subscriber(again)
    try:
        (ev,) = [e for e in sub.until({("stopped", ctr)}) if e.container_id == ctr]
        (st,) = ev.containers_statuses
        assert (st.state, st.exit_code) == (pb.CONTAINER_EXITED, 5)
        with again.client() as c:
            assert wait_state(c, ctr, pb.CONTAINER_EXITED).exit_code == 5
            info = c.status(verbose=True).info
            assert '"subscribers": 1' in info["events"]
            assert '"address": ""' in info["metrics"]  # off unless configured
    finally:
        sub.close()


@pytest.mark.skipif(shutil.which("crictl") is None, reason="crictl is not installed")
def test_crictl_events_shows_them(daemon, tmp_path):
    proc = subprocess.Popen(["crictl", "--runtime-endpoint", f"unix://{daemon.socket}", "events", "-o", "json"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        deadline = time.monotonic() + 10
        with daemon.client() as c:
            while c.status(verbose=True).info["events"].find('"subscribers": 1') < 0:
                assert time.monotonic() < deadline, "crictl never subscribed"
                time.sleep(0.05)
            cfg = pod_config("crictl", log_directory=str(tmp_path))
            pod = c.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg)).pod_sandbox_id
        text = ""
        assert proc.stdout is not None
        while text.count("CONTAINER_STARTED_EVENT") < 1:
            line = proc.stdout.readline()
            assert line, "crictl events ended"
            text += line
        assert pod in text and "CONTAINER_CREATED_EVENT" in text and '"crictl"' in text
    finally:
        proc.kill()
        proc.wait()
