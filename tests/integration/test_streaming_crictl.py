"""The upstream client: crictl (client-go's SPDY and WebSocket streaming)
against the real daemon, a real pod and a real container."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import shutil
import struct
import subprocess
import termios
import time
import urllib.request

import pytest

from cri.proto import api_pb2 as pb
from tests.pods_fixtures import *  # noqa: F403
from tests.pods_fixtures import container_config, load_image, pod_config, wait_state

CRICTL = shutil.which("crictl")
pytestmark = [pytest.mark.integration, pytest.mark.skipif(CRICTL is None, reason="needs crictl")]


def _crictl(d, *args: str, input: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([CRICTL, "--runtime-endpoint", f"unix://{d.socket}", "--timeout", "30s", *args],
                          capture_output=True, input=input, timeout=60)


def _crictl_tty(d, *args: str, send: bytes, rows: int, cols: int) -> tuple[int, str]:
    """Runs crictl on a pseudo-terminal of the given size, types `send`
    once the command had time to start, returns (exit code, output)."""
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - child
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        os.execv(CRICTL, [CRICTL, "--runtime-endpoint", f"unix://{d.socket}", *args])
    out = b""
    start = time.monotonic()
    sent = False
    try:
        while time.monotonic() - start < 60:
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                out += chunk
            if not sent and b"ready" in out:
                os.write(fd, send)
                sent = True
    finally:
        os.close(fd)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), out.decode(errors="replace").replace("\r\n", "\n")


@pytest.fixture
def running(pod_daemon):
    with pod_daemon.client() as c:
        load_image(pod_daemon)
        cfg = pod_config("cc")
        pod = c.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg)).pod_sandbox_id
        cc = container_config("app", ["sh", "-c", "httpd -f -p 127.0.0.1:8080 -h /etc & "
                                                   "while read l; do echo \"got $l\"; done"])
        cc.stdin = True
        ctr = c.runtime.CreateContainer(pb.CreateContainerRequest(pod_sandbox_id=pod, config=cc, sandbox_config=cfg)).container_id
        c.runtime.StartContainer(pb.StartContainerRequest(container_id=ctr))
        assert wait_state(c, ctr, pb.CONTAINER_RUNNING).state == pb.CONTAINER_RUNNING
        yield pod_daemon, pod, ctr


@pytest.mark.parametrize("transport", ["spdy", "websocket"])
def test_crictl_exec(running, transport):
    d, _, ctr = running
    r = _crictl(d, "exec", "-r", transport, ctr, "sh", "-c", "echo hi; echo oops >&2; exit 3")
    assert r.returncode == 1 and r.stdout == b"hi\n"
    assert b"oops\n" in r.stderr and b"command terminated with exit code 3" in r.stderr
    r = _crictl(d, "exec", "-r", transport, "-i", ctr, "sh", "-c", "cat; echo end", input=b"piped\n" * 1000)
    assert r.returncode == 0 and r.stdout == b"piped\n" * 1000 + b"end\n", r.stderr
    # The short sleep: crun 1.8 ignores consoleSize on exec, so the size
    # lands when crispy gets the terminal, a moment after the command starts.
    code, out = _crictl_tty(d, "exec", "-r", transport, "-it", ctr, "sh", "-c",
                            "sleep 0.5; stty size; tty; echo ready; read x; echo \"x=$x\"; exit 4", send=b"typed\r",
                            rows=33, cols=99)
    assert code == 1, out
    assert "33 99\n/dev/pts/" in out and "x=typed" in out and "exit code 4" in out, out[-400:]


def test_crictl_port_forward_and_attach(running):
    d, pod, ctr = running
    # websocket: client-go tunnels a SPDY connection inside WebSocket messages.
    for transport, local in (("spdy", 18556), ("websocket", 18557)):
        pf = subprocess.Popen([CRICTL, "--runtime-endpoint", f"unix://{d.socket}", "port-forward", "-r", transport,
                               pod, f"{local}:8080"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    body = urllib.request.urlopen(f"http://127.0.0.1:{local}/passwd", timeout=5).read()
                    break
                except OSError:
                    assert pf.poll() is None, pf.communicate()
                    assert time.monotonic() < deadline, "crictl port-forward never served"
                    time.sleep(0.2)
            assert body.startswith(b"root:x:0:0:")
        finally:
            pf.kill()
            pf.communicate(timeout=30)

    at = subprocess.Popen([CRICTL, "--runtime-endpoint", f"unix://{d.socket}", "attach", "-i", ctr],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert at.stdin is not None and at.stdout is not None
        at.stdin.write(b"line1\n")
        at.stdin.flush()
        os.set_blocking(at.stdout.fileno(), False)
        got = b""
        deadline = time.monotonic() + 30
        while b"got line1\n" not in got:
            assert time.monotonic() < deadline, got
            select.select([at.stdout], [], [], 0.5)
            got += at.stdout.read() or b""
    finally:
        at.kill()
        at.communicate(timeout=30)
