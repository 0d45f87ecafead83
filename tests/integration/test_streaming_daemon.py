"""Exec/Attach/PortForward through the real daemon: the RPCs hand out URLs
of the streaming server the daemon runs, and those URLs work against a
real pod (its pinned network namespace) and, once containers run, a real
container."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time

import grpc
import pytest

from cri.proto import api_pb2 as pb
from cri.streaming import remotecommand
from tests.pods_fixtures import *  # noqa: F403
from tests.pods_fixtures import container_config, load_image, pod_config, wait_state
from tests.streaming_client import SpdyClient

pytestmark = pytest.mark.integration


def _code(fn) -> grpc.StatusCode:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as e:
        fn()
    return e.value.code()


def test_rpc_errors(pod_daemon):
    with pod_daemon.client() as c:
        rt = c.runtime
        assert _code(lambda: rt.Exec(pb.ExecRequest(container_id="nope", cmd=["true"], stdout=True))) == grpc.StatusCode.NOT_FOUND
        assert _code(lambda: rt.Exec(pb.ExecRequest(container_id="x", cmd=["true"], tty=True, stderr=True))) == grpc.StatusCode.INVALID_ARGUMENT
        assert _code(lambda: rt.Exec(pb.ExecRequest(container_id="x", cmd=["true"]))) == grpc.StatusCode.INVALID_ARGUMENT
        assert _code(lambda: rt.Attach(pb.AttachRequest(container_id="nope", stdout=True))) == grpc.StatusCode.NOT_FOUND
        assert _code(lambda: rt.PortForward(pb.PortForwardRequest(pod_sandbox_id="nope"))) == grpc.StatusCode.NOT_FOUND
        assert _code(lambda: rt.PortForward(pb.PortForwardRequest(pod_sandbox_id=""))) == grpc.StatusCode.INVALID_ARGUMENT


def _forward_get(url: str, port: int) -> str:
    async def run() -> str:
        status, _, c = await SpdyClient.connect(url, ["portforward.k8s.io"])
        assert status == 101, c
        e = c.open({"streamType": "error", "port": str(port), "requestID": "0"})
        d = c.open({"streamType": "data", "port": str(port), "requestID": "0"})
        await c.wait_for(lambda: {e, d} <= c.replied)
        c.send(d, b"GET / HTTP/1.0\r\n\r\n", fin=True)
        await c.wait_for(lambda: d in c.fin)
        await c.close()
        return c.text(d)
    return asyncio.run(asyncio.wait_for(run(), 60))


def test_port_forward_into_a_real_pod(pod_daemon):
    with pod_daemon.client() as c:
        pod = c.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=pod_config("pf"))).pod_sandbox_id
        info = json.loads(c.runtime.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=pod, verbose=True)).info["info"])
        netns = info["namespaces"]["network"]
        server = subprocess.Popen(["nsenter", f"--net={netns}", "--", "python3", "-m", "http.server", "-b", "127.0.0.1", "18082"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/tmp")
        try:
            deadline = time.monotonic() + 20
            while subprocess.run(["nsenter", f"--net={netns}", "--", "python3", "-c",
                                  "import socket; socket.create_connection(('127.0.0.1', 18082), 1)"],
                                 capture_output=True).returncode != 0:
                assert time.monotonic() < deadline
                time.sleep(0.1)
            url = c.runtime.PortForward(pb.PortForwardRequest(pod_sandbox_id=pod, port=[18082])).url
            assert url.startswith("http://127.0.0.1:") and "/portforward/" in url
            assert _forward_get(url, 18082).startswith("HTTP/1.0 200 OK")
            # The token was single-use.
            async def again() -> int:
                status, _, _ = await SpdyClient.connect(url, ["portforward.k8s.io"])
                return status
            assert asyncio.run(again()) == 404
        finally:
            server.kill()
            server.wait()


def _has_containers(c) -> bool:
    try:
        c.runtime.ListContainers(pb.ListContainersRequest())
        return True
    except grpc.RpcError as e:
        if e.code() == grpc.StatusCode.UNIMPLEMENTED:
            return False
        raise


def _running_container(d, c, pod_name: str, cfg: pb.ContainerConfig) -> str:
    """A new pod on `d` with `cfg` created, started and seen running."""
    if not _has_containers(c):
        pytest.skip("containers are not implemented in this build yet")
    load_image(d)
    pod_cfg = pod_config(pod_name)
    pod = c.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=pod_cfg)).pod_sandbox_id
    ctr = c.runtime.CreateContainer(pb.CreateContainerRequest(pod_sandbox_id=pod, config=cfg, sandbox_config=pod_cfg)).container_id
    c.runtime.StartContainer(pb.StartContainerRequest(container_id=ctr))
    assert wait_state(c, ctr, pb.CONTAINER_RUNNING).state == pb.CONTAINER_RUNNING
    return ctr


def test_exec_in_a_real_container(pod_daemon):
    with pod_daemon.client() as c:
        ctr = _running_container(pod_daemon, c, "ex", container_config("sh", ["sleep", "3600"]))
        url = c.runtime.Exec(pb.ExecRequest(container_id=ctr, cmd=["sh", "-c", "echo hi; exit 3"], stdout=True, stderr=True)).url

        async def run() -> tuple[str, dict]:
            status, _, s = await SpdyClient.connect(url, [remotecommand.V4, remotecommand.V3])
            assert status == 101, s
            ids = {t: s.open({"streamType": t}) for t in ("error", "stdout", "stderr")}
            await s.wait_for(lambda: ids["error"] in s.fin)
            await s.close()
            return s.text(ids["stdout"]), json.loads(s.text(ids["error"]))
        out, st = asyncio.run(asyncio.wait_for(run(), 60))
        assert out == "hi\n", st
        assert st["reason"] == "NonZeroExitCode" and st["details"]["causes"] == [{"reason": "ExitCode", "message": "3"}]


def test_attach_and_tty_exec_in_a_real_container(pod_daemon):
    with pod_daemon.client() as c:
        cfg = container_config("echo", ["sh", "-c", "echo started; while read l; do echo \"got $l\"; echo \"err $l\" >&2; done"])
        cfg.stdin = True
        ctr = _running_container(pod_daemon, c, "at", cfg)
        url = c.runtime.Attach(pb.AttachRequest(container_id=ctr, stdin=True, stdout=True, stderr=True)).url

        async def attach() -> tuple[str, str]:
            status, _, s = await SpdyClient.connect(url, [remotecommand.V4])
            assert status == 101, s
            ids = {t: s.open({"streamType": t}) for t in ("error", "stdin", "stdout", "stderr")}
            await s.wait_for(lambda: set(ids.values()) <= s.replied)
            s.send(ids["stdin"], b"one\n")
            await s.wait_for(lambda: "got one" in s.text(ids["stdout"]) and "err one" in s.text(ids["stderr"]))
            out, err = s.text(ids["stdout"]), s.text(ids["stderr"])
            await s.close()  # the client leaves; the container keeps running
            return out, err
        out, err = asyncio.run(asyncio.wait_for(attach(), 60))
        assert out == "got one\n" and err == "err one\n"
        assert wait_state(c, ctr, pb.CONTAINER_RUNNING).state == pb.CONTAINER_RUNNING

        url = c.runtime.Exec(pb.ExecRequest(container_id=ctr, cmd=["sh", "-c", "sleep 0.3; stty size; exit 5"],
                                            tty=True, stdin=True, stdout=True)).url

        async def tty_exec() -> tuple[str, dict]:
            status, _, s = await SpdyClient.connect(url, [remotecommand.V4])
            ids = {t: s.open({"streamType": t}) for t in ("error", "stdin", "stdout", "resize")}
            await s.wait_for(lambda: set(ids.values()) <= s.replied)
            s.send(ids["resize"], b'{"Width":99,"Height":33}')
            await s.wait_for(lambda: ids["error"] in s.fin)
            await s.close()
            return s.text(ids["stdout"]), json.loads(s.text(ids["error"]))
        out, st = asyncio.run(asyncio.wait_for(tty_exec(), 60))
        assert out.strip() == "33 99", (out, st)
        assert st["details"]["causes"][0]["message"] == "5"


def test_attach_to_a_tty_container_with_resize(pod_daemon):
    with pod_daemon.client() as c:
        cfg = container_config("shell", ["sh"])
        cfg.stdin = True
        cfg.tty = True
        ctr = _running_container(pod_daemon, c, "tt", cfg)
        assert _code(lambda: c.runtime.Attach(pb.AttachRequest(container_id=ctr, stdout=True, stderr=True, tty=True))) \
            == grpc.StatusCode.INVALID_ARGUMENT
        url = c.runtime.Attach(pb.AttachRequest(container_id=ctr, stdin=True, stdout=True, tty=True)).url

        async def attach() -> str:
            status, _, s = await SpdyClient.connect(url, [remotecommand.V4])
            assert status == 101, s
            ids = {t: s.open({"streamType": t}) for t in ("error", "stdin", "stdout", "resize")}
            await s.wait_for(lambda: set(ids.values()) <= s.replied)
            s.send(ids["resize"], b'{"Width":100,"Height":40}')
            await asyncio.sleep(0.5)  # conmon applies it from its ctl FIFO
            s.send(ids["stdin"], b"stty size; echo do''ne\n")
            await s.wait_for(lambda: "done" in s.text(ids["stdout"]))
            await s.close()
            return s.text(ids["stdout"])
        out = asyncio.run(asyncio.wait_for(attach(), 60))
        assert "40 100" in out.replace("\r\n", "\n").split("\n"), out


def test_daemon_stops_cleanly_with_a_stream_open(pod_daemon):
    from tests.pods_fixtures import remove_all_pods, start_pod_daemon
    with pod_daemon.client() as c:
        ctr = _running_container(pod_daemon, c, "st", container_config("s", ["sleep", "3600"]))
        url = c.runtime.Exec(pb.ExecRequest(container_id=ctr, cmd=["sh", "-c", "echo started; sleep 60"], stdout=True)).url

    async def hold_stream_while_stopping() -> tuple[int, bool]:
        status, _, s = await SpdyClient.connect(url, [remotecommand.V4])
        ids = {t: s.open({"streamType": t}) for t in ("error", "stdout")}
        await s.wait_for(lambda: "started" in s.text(ids["stdout"]))
        rc = await asyncio.to_thread(pod_daemon.stop)
        await s.wait_for(lambda: s.closed)
        await s.close()
        return rc, s.closed
    rc, closed = asyncio.run(asyncio.wait_for(hold_stream_while_stopping(), 90))
    assert rc == 0 and closed
    # Containers outlive crispy; a new daemon on the same roots cleans up.
    d2 = start_pod_daemon(pod_daemon.base)
    try:
        with d2.client() as c:
            assert c.runtime.ContainerStatus(pb.ContainerStatusRequest(container_id=ctr)).status.state == pb.CONTAINER_RUNNING
        remove_all_pods(d2)
    finally:
        d2.stop()
