"""crispy as a service: readiness and stop notifications on a real
NOTIFY_SOCKET, the watchdog, SIGHUP reloads (live keys applied, restart
keys named, a bad file refused whole, registries taking effect for the
next pull), `crispy status` and `crispy check` against this host."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import grpc
import pytest

from cri.client import CRIClient
from tests import imagebuild as ib
from tests.daemon_proc import DaemonProcess
from tests.registry import LocalRegistry

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


def _crispy(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cri.cli", *args], capture_output=True, text=True, timeout=60)


def _wait_for(pred, what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def notify(daemon_base):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = daemon_base / "notify"
    s.bind(str(path))
    s.settimeout(30)
    yield s, str(path)
    s.close()


def _recv_until(s: socket.socket, key: bytes) -> list[bytes]:
    got = []
    while True:
        msg = s.recv(4096)
        got.append(msg)
        if key in msg.split(b"\n"):
            return got


def test_ready_when_the_socket_serves_stopping_on_sigterm_and_watchdog_pings(daemon_base, notify):
    s, path = notify
    d = DaemonProcess(daemon_base, env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000"})
    d.start(wait=False)
    try:
        got = _recv_until(s, b"READY=1")
        # READY only once the CRI socket answers.
        with CRIClient(d.socket, timeout=10) as c:
            c.wait_ready(5)
            assert c.version().runtime_name == "crispy"
        assert any(b"MAINPID=" + str(d.proc.pid).encode() in m for m in got)
        pings = [m for m in _recv_until(s, b"WATCHDOG=1")]
        assert pings and b"WATCHDOG=1" in pings[-1].split(b"\n")
        assert _recv_until(s, b"WATCHDOG=1")  # again: it keeps pinging
        d.proc.send_signal(signal.SIGTERM)
        assert _recv_until(s, b"STOPPING=1")
        assert d.proc.wait(30) == 0
    finally:
        d.stop()


def test_no_notify_socket_no_notifications_and_no_harm(daemon):
    with daemon.client() as c:
        assert c.version().runtime_name == "crispy"


def test_sighup_applies_live_keys_names_restart_keys_and_refuses_a_bad_file(daemon_base, notify):
    s, path = notify
    cfg = daemon_base / "crispy.toml"
    d = DaemonProcess(daemon_base, config_text='log_level = "info"\n', env={"NOTIFY_SOCKET": path})
    d.args.remove("--log-level")
    d.args.remove("debug")
    d.start()
    try:
        (daemon_base / "crispy.d").mkdir()
        (daemon_base / "crispy.d" / "50-node.toml").write_text(
            'log_level = "debug"\n[images]\npinned_images = ["docker.io/library/busybox:latest"]\n'
            '[registries."127.0.0.1:1"]\ninsecure = true\n[streaming]\nidle_timeout = 60.0\n')
        _recv_until(s, b"READY=1")
        d.proc.send_signal(signal.SIGHUP)
        reloading = _recv_until(s, b"RELOADING=1")[-1]
        assert b"MONOTONIC_USEC=" in reloading
        assert _recv_until(s, b"READY=1")  # back to ready once applied
        _wait_for(lambda: "config reloaded" in d.log(), "the reload log line")
        line = next(ln for ln in d.log().splitlines() if "config reloaded" in ln)
        assert "log_level" in line and "images.pinned_images" in line and 'registries.\\"127.0.0.1:1\\"' in line
        assert "needs_restart=streaming.idle_timeout" in line
        # debug is live: every RPC now logs a line.
        with d.client() as c:
            c.version()
        _wait_for(lambda: "Version" in d.log(), "a debug line per RPC")
        # A broken drop-in: refused whole, named by file and line, the old config kept.
        (daemon_base / "crispy.d" / "60-bad.toml").write_text('[images]\npinned_images = "not a list"\n')
        (daemon_base / "crispy.d" / "50-node.toml").write_text('log_level = "error"\n')
        d.proc.send_signal(signal.SIGHUP)
        _wait_for(lambda: "config reload refused" in d.log(), "the refusal")
        assert "60-bad.toml:2" in d.log()
        with d.client() as c:
            c.version()
        n = d.log().count("Version")
        with d.client() as c:
            c.version()
        _wait_for(lambda: d.log().count("Version") > n, "still at debug level (old config kept)")
    finally:
        assert d.stop() == 0
    assert cfg.exists()


def test_status_over_the_socket(daemon_base, tmp_path):
    net = tmp_path / "net.d"
    d = DaemonProcess(daemon_base, extra_args=["--cni-conf-dir", str(net)])
    assert _crispy("--cni-conf-dir", str(net), "cni-install").returncode == 0
    d.start()
    try:
        done = _crispy("status", "--socket", d.socket)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "daemon:       up on" in done.stdout
        assert "RuntimeReady: true" in done.stdout and "NetworkReady: true" in done.stdout
        assert "pods:         0 (0 ready, 0 not ready)" in done.stdout
        assert "containers:   0 (0 running" in done.stdout
    finally:
        d.stop()
    down = _crispy("--socket", d.socket, "status", "--timeout", "1")
    assert down.returncode == 1 and "down" in down.stdout


def test_status_is_not_ok_while_the_network_is_not_ready(daemon_base, tmp_path):
    d = DaemonProcess(daemon_base, extra_args=["--cni-conf-dir", str(tmp_path / "empty")]).start()
    try:
        done = _crispy("status", "--socket", d.socket)
        assert done.returncode == 1 and "NetworkReady: false" in done.stdout
    finally:
        d.stop()


def test_check_passes_on_this_host_and_fails_without_conmon():
    ok = _crispy("check", "--config", "/dev/null")
    assert ok.returncode == 0, ok.stdout
    assert "crispy can run here" in ok.stdout
    assert {ln.split()[0] for ln in ok.stdout.splitlines()[:-1]} <= {"ok", "warn"}
    bad = _crispy("check", "--config", "/dev/null", "--runtime-conmon", "/nonexistent/conmon")
    assert bad.returncode == 1
    assert any(ln.startswith("FAIL") and "conmon" in ln for ln in bad.stdout.splitlines())


def test_sighup_registries_take_effect_for_the_next_pull(daemon_base):
    with LocalRegistry() as reg:
        img = ib.busybox_image()
        reg.push("app/one", "v1", img)
        # The registry itself is a closed loopback port: only a mirror can serve it.
        d = DaemonProcess(daemon_base, config_text="").start()
        try:
            with d.client() as c:
                with pytest.raises(grpc.RpcError):
                    c.pull_image("127.0.0.1:9/app/one:v1")
                (daemon_base / "crispy.d").mkdir()
                (daemon_base / "crispy.d" / "10-mirror.toml").write_text(
                    f'[registries."127.0.0.1:9"]\nmirrors = ["http://{reg.host}"]\n')
                d.proc.send_signal(signal.SIGHUP)
                _wait_for(lambda: "config reloaded" in d.log(), "the reload")
                assert c.pull_image("127.0.0.1:9/app/one:v1")
                assert c.image_status("127.0.0.1:9/app/one:v1").id == img.config_digest
        finally:
            assert d.stop() == 0
