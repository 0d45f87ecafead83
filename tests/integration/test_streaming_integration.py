"""Exec and port-forward through the real streaming server into real
kernel objects: a runc container on a busybox root (exec with pipes and
with a pty from the console socket) and a network namespace we create
with an HTTP server inside. Only the pod manager's lookup is stood in for;
DaemonStreamBackend and the runtime halves are the production code."""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import subprocess
import tarfile
import time
import types
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from cri.proto import api_pb2 as pb
from cri.servicers.streaming import StreamingRPCs
from cri.streaming import remotecommand
from cri.streaming.daemon_backend import DaemonStreamBackend
from cri.streaming.server import ServerOptions, StreamingServer
from runtime.errors import FailedPrecondition, NotFound
from runtime.oci.factory import RuntimeFactory
from runtime.store import ContainerRecord, SandboxRecord
from tests.imagebuild import busybox_entries, make_layer
from tests.streaming_client import SpdyClient, WsClient

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("runc") or not shutil.which("ip"),
                                 reason="needs root, runc and iproute2")]

RUNC = shutil.which("runc") or "runc"


class FakePods:
    """The pod manager's lookup surface, over records we made ourselves."""

    def __init__(self, state_root: Path) -> None:
        # The runtimes put their --root here.
        self.state_root = state_root
        self.runtimes = RuntimeFactory(state_root)
        self.containers: dict[str, ContainerRecord] = {}
        self.sandboxes: dict[str, SandboxRecord] = {}


    def container(self, ref: str) -> ContainerRecord:
        for key, rec in self.containers.items():
            if ref in (key, rec.id):
                return rec
        raise NotFound(f"container {ref!r} not found")

    def sandbox(self, ref: str) -> SandboxRecord:
        for key, rec in self.sandboxes.items():
            if ref in (key, rec.id):
                return rec
        raise NotFound(f"pod sandbox {ref!r} not found")


@pytest.fixture(scope="module")
def container(tmp_path_factory) -> Iterator[dict]:
    base = tmp_path_factory.mktemp("stream")
    bundle = base / "bundle"
    (bundle / "rootfs").mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(make_layer(busybox_entries()))) as tar:
        tar.extractall(bundle / "rootfs", filter="tar")
    subprocess.run([RUNC, "spec"], cwd=bundle, check=True)
    spec = json.loads((bundle / "config.json").read_text())
    spec["process"].update(args=["sleep", "3600"], terminal=False)
    spec["root"]["readonly"] = False
    cid = "crispy-st-" + uuid.uuid4().hex[:8]
    spec["linux"]["cgroupsPath"] = f"/{cid}"
    (bundle / "config.json").write_text(json.dumps(spec))
    root = base / "state" / "oci" / "runc"
    # The container inherits runc's stdio: a pipe here would never reach EOF.
    with open(base / "runc.log", "wb") as log:
        subprocess.run([RUNC, "--root", str(root), "run", "-d", "--bundle", str(bundle), cid], check=True,
                       stdin=subprocess.DEVNULL, stdout=log, stderr=log, timeout=60)
    try:
        yield {"id": cid, "bundle": str(bundle), "root": str(root), "base": base}
    finally:
        subprocess.run([RUNC, "--root", str(root), "delete", "--force", cid], capture_output=True, timeout=60)


@pytest.fixture
def netns() -> Iterator[dict]:
    name = "crispy-st-" + uuid.uuid4().hex[:6]
    subprocess.run(["ip", "netns", "add", name], check=True)
    server = None
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        server = subprocess.Popen(["ip", "netns", "exec", name, "python3", "-m", "http.server", "-b", "127.0.0.1", "18080"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/tmp")
        deadline = time.monotonic() + 20
        while subprocess.run(["ip", "netns", "exec", name, "python3", "-c",
                              "import socket; socket.create_connection(('127.0.0.1', 18080), 1)"],
                             capture_output=True).returncode != 0:
            assert time.monotonic() < deadline, "HTTP server in the netns did not start"
            time.sleep(0.1)
        yield {"path": f"/run/netns/{name}", "port": 18080}
    finally:
        if server is not None:
            server.kill()
            server.wait()
        subprocess.run(["ip", "netns", "del", name], check=True)


def make_daemon(container: dict | None, netns: dict | None) -> types.SimpleNamespace:
    state = Path(container["base"] if container else "/tmp") / "state"
    pods = FakePods(state)
    if container:
        pods.containers["c1"] = ContainerRecord(id=container["id"], sandbox_id="sb1", name="c", attempt=0, config={},
                                                created_at=0, state="running", bundle=container["bundle"], oci_runtime=RUNC)
        pods.containers["dead"] = ContainerRecord(id="dead", sandbox_id="sb1", name="d", attempt=0, config={},
                                                  created_at=0, state="exited", bundle=container["bundle"], oci_runtime=RUNC)
    if netns:
        pods.sandboxes["sb1"] = SandboxRecord(id="sb1", name="p", namespace="default", uid="u", attempt=0, config={},
                                              runtime_handler="", oci_runtime=RUNC, created_at=0,
                                              namespaces={"net": netns["path"]})
    return types.SimpleNamespace(pods=pods, state_root=state, default_runtime=None, streaming=None)


def serve(daemon: types.SimpleNamespace, body) -> None:  # type: ignore[no-untyped-def]
    async def main() -> None:
        server = StreamingServer(ServerOptions(), DaemonStreamBackend(daemon.pods, daemon.pods.runtimes, daemon.state_root / "exec"))
        daemon.streaming = server
        await server.start()
        try:
            rpcs = StreamingRPCs()
            rpcs.daemon = daemon  # type: ignore[assignment]
            await asyncio.wait_for(body(server, rpcs), 90)
        finally:
            await server.stop()
            daemon.pods.runtimes.close()
    asyncio.run(main())


async def spdy_exec(url: str, streams: list[str], stdin: bytes | None = None, resize: dict | None = None):
    status, _, c = await SpdyClient.connect(url, [remotecommand.V4])
    assert status == 101, c
    ids = {t: c.open({"streamType": t}) for t in streams}
    await c.wait_for(lambda: set(ids.values()) <= c.replied)
    if resize:
        c.send(ids["resize"], json.dumps(resize).encode())
    if stdin is not None:
        c.send(ids["stdin"], stdin, fin=True)
    await c.wait_for(lambda: ids["error"] in c.fin)
    await c.close()
    return c, ids


def test_exec_in_a_runc_container_reports_output_and_exit_code(container):
    async def body(server, rpcs):
        resp = await rpcs.Exec(pb.ExecRequest(container_id="c1", cmd=["sh", "-c", "echo hi; echo bad >&2; exit 3"],
                                              stdout=True, stderr=True), None)
        c, ids = await spdy_exec(resp.url, ["error", "stdout", "stderr"])
        assert c.text(ids["stdout"]) == "hi\n" and c.text(ids["stderr"]) == "bad\n", (c.text(ids["stdout"]), c.text(ids["stderr"]), c.text(ids["error"]))
        status = json.loads(c.text(ids["error"]))
        assert status["reason"] == "NonZeroExitCode"
        assert status["details"]["causes"] == [{"reason": "ExitCode", "message": "3"}]

        # stdin through the pipe, and the process really runs in the container.
        resp = await rpcs.Exec(pb.ExecRequest(container_id="c1", cmd=["sh", "-c", "cat; cat /proc/1/cmdline"],
                                              stdin=True, stdout=True), None)
        c, ids = await spdy_exec(resp.url, ["error", "stdin", "stdout"], stdin=b"from client\n")
        assert c.text(ids["stdout"]) == "from client\nsleep\x003600\x00"
        assert json.loads(c.text(ids["error"]))["status"] == "Success"
        # The per-session work directory is gone, and so is the stale one
        # a "crashed" crispy left.
        assert not any((daemon.state_root / "exec").iterdir())
    daemon = make_daemon(container, None)
    (daemon.state_root / "exec" / "stale").mkdir(parents=True)
    serve(daemon, body)


def test_exec_with_a_tty_gets_a_pty_and_resizes(container):
    # No sleep before `stty size`: runc applies the client's first size
    # (consoleSize) before the command starts.
    async def body(server, rpcs):
        resp = await rpcs.Exec(pb.ExecRequest(container_id="c1", tty=True, stdout=True, stdin=True,
                                              cmd=["sh", "-c", "stty size; tty; echo $TERM; exit 7"]), None)
        c, ids = await spdy_exec(resp.url, ["error", "stdin", "stdout", "resize"], resize={"Width": 123, "Height": 45})
        out = c.text(ids["stdout"]).replace("\r\n", "\n")
        lines = out.split("\n")
        assert lines[0] == "45 123", (out, c.text(ids["error"]))
        assert lines[1].startswith("/dev/pts/") and lines[2] == "xterm"
        assert json.loads(c.text(ids["error"]))["details"]["causes"][0]["message"] == "7"
    serve(make_daemon(container, None), body)


def test_exec_over_websocket(container):
    async def body(server, rpcs):
        resp = await rpcs.Exec(pb.ExecRequest(container_id="c1", cmd=["sh", "-c", "read l; echo \"<$l>\""],
                                              stdin=True, stdout=True, stderr=True), None)
        status, _, w = await WsClient.connect(resp.url, ["v4.channel.k8s.io"])
        assert status == 101
        w.send(0, b"ws line\n")
        await w.wait_closed()
        assert w.channel(1) == b"<ws line>\n" and json.loads(w.channel(3))["status"] == "Success"
        await w.close()
    serve(make_daemon(container, None), body)


def test_rpc_validation(container):
    async def body(server, rpcs):
        from runtime.errors import InvalidArgument, NotFound
        with pytest.raises(InvalidArgument):
            await rpcs.Exec(pb.ExecRequest(container_id="c1", cmd=["true"], tty=True, stderr=True), None)
        with pytest.raises(InvalidArgument):
            await rpcs.Exec(pb.ExecRequest(container_id="c1", cmd=["true"]), None)
        with pytest.raises(InvalidArgument):
            await rpcs.Exec(pb.ExecRequest(container_id="c1", stdout=True), None)
        with pytest.raises(NotFound):
            await rpcs.Exec(pb.ExecRequest(container_id="nope", cmd=["true"], stdout=True), None)
        with pytest.raises(FailedPrecondition):
            await rpcs.Attach(pb.AttachRequest(container_id="dead", stdout=True), None)
        with pytest.raises(InvalidArgument):
            await rpcs.PortForward(pb.PortForwardRequest(pod_sandbox_id=""), None)
        with pytest.raises(NotFound):
            await rpcs.PortForward(pb.PortForwardRequest(pod_sandbox_id="nope"), None)
        resp = await rpcs.Exec(pb.ExecRequest(container_id="c1", cmd=["true"], stdout=True), None)
        assert resp.url.startswith(f"http://127.0.0.1:{server.port}/exec/") and len(resp.url.rsplit("/", 1)[1]) == 8
    serve(make_daemon(container, None), body)


def test_port_forward_into_a_network_namespace(netns):
    async def body(server, rpcs):
        resp = await rpcs.PortForward(pb.PortForwardRequest(pod_sandbox_id="sb1", port=[netns["port"]]), None)
        status, _, c = await SpdyClient.connect(resp.url, ["portforward.k8s.io"])
        assert status == 101
        port = str(netns["port"])
        pairs = []
        for rid in ("0", "1"):
            e = c.open({"streamType": "error", "port": port, "requestID": rid})
            d = c.open({"streamType": "data", "port": port, "requestID": rid})
            pairs.append((e, d))
        for _, d in pairs:
            c.send(d, b"GET / HTTP/1.0\r\n\r\n", fin=True)
        await c.wait_for(lambda: all(d in c.fin for _, d in pairs))
        for _, d in pairs:
            assert c.text(d).startswith("HTTP/1.0 200 OK"), c.text(d)[:200]
        # Nothing listens on 18081 inside the namespace (it does not see the host's ports).
        e = c.open({"streamType": "error", "port": "18081", "requestID": "2"})
        c.open({"streamType": "data", "port": "18081", "requestID": "2"})
        await c.wait_for(lambda: e in c.fin)
        assert "error forwarding port 18081" in c.text(e)
        await c.close()
    serve(make_daemon(None, netns), body)
