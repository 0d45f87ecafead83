"""runtime/namespaces.py on the real kernel: what the short-lived thread
makes (pins, hostname, sysctls, lo up, the infra as PID 1), that nothing of
this process stays in a pod's namespaces, that the infra is reaped, and
that a failure leaves nothing behind."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import pytest

from runtime import namespaces
from runtime.errors import InvalidArgument

pytestmark = pytest.mark.integration


def _ns_of_threads(kind: str) -> set[str]:
    out = set()
    for tid in os.listdir("/proc/self/task"):
        try:
            out.add(os.readlink(f"/proc/self/task/{tid}/ns/{kind}"))
        except FileNotFoundError:  # a thread that just ended
            pass
    return out


def _mounted(path: str) -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == path for line in f)


def test_create_pins_everything_and_leaves_no_thread_inside(tmp_path: Path):
    before = {k: _ns_of_threads(k) for k in ("net", "ipc", "uts", "pid_for_children")}
    req = namespaces.NamespaceRequest(hostname="pod-a", pod_pid=True,
                                      sysctls={"net.ipv4.ip_unprivileged_port_start": "81", "kernel.shmmni": "999"})
    pinned = asyncio.run(namespaces.create(tmp_path, req))
    try:
        for path in (pinned.net, pinned.ipc, pinned.uts, pinned.pid):
            assert _mounted(path), path
        # The creating thread is gone; every thread of ours is where it was.
        assert {k: _ns_of_threads(k) for k in before} == before
        out = subprocess.run(["nsenter", f"--net={pinned.net}", f"--uts={pinned.uts}", f"--ipc={pinned.ipc}", "--",
                              "sh", "-c", "hostname; cat /proc/sys/net/ipv4/ip_unprivileged_port_start "
                              "/proc/sys/kernel/shmmni; ip -o addr show dev lo"],
                             capture_output=True, text=True, check=True).stdout
        assert out.splitlines()[:3] == ["pod-a", "81", "999"]
        assert "127.0.0.1/8" in out
        # The infra: PID 1 of the pinned PID namespace, in the pod's network
        # namespace, stdio on /dev/null, nothing of ours inherited.
        pid = pinned.infra_pid
        assert os.readlink(f"/proc/{pid}/ns/pid") == f"pid:[{os.stat(pinned.pid).st_ino}]"
        assert os.readlink(f"/proc/{pid}/ns/net") == f"net:[{os.stat(pinned.net).st_ino}]"
        nspid = [line for line in open(f"/proc/{pid}/status") if line.startswith("NSpid:")][0].split()
        assert nspid[-1] == "1"
        fds = {fd: os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
        assert all(fds[fd] == "/dev/null" for fd in ("0", "1", "2"))
        assert all(t == "/dev/null" or t.startswith("anon_inode:") for t in fds.values()), fds
        assert f"CRISPY_POD_DIR={tmp_path}".encode() in open(f"/proc/{pid}/environ", "rb").read()
    finally:
        asyncio.run(namespaces.kill_infra(pinned))
        asyncio.run(namespaces.unpin(pinned))
    # Killed and reaped (it was our child): no zombie left.
    assert not os.path.exists(f"/proc/{pinned.infra_pid}")
    assert not any(_mounted(p) for p in (pinned.net, pinned.ipc, pinned.uts, pinned.pid))
    assert os.listdir(tmp_path) == []


def test_a_failure_leaves_nothing(tmp_path: Path):
    children = set(subprocess.run(["ps", "-o", "pid=", "--ppid", str(os.getpid())], capture_output=True,
                                  text=True).stdout.split())
    req = namespaces.NamespaceRequest(pod_pid=True, sysctls={"net.ipv4.no_such_knob": "1"})
    with pytest.raises(InvalidArgument, match="no_such_knob"):
        asyncio.run(namespaces.create(tmp_path, req))
    assert os.listdir(tmp_path) == []
    with open("/proc/self/mountinfo") as f:
        assert str(tmp_path) not in f.read()
    now = set(subprocess.run(["ps", "-o", "pid=", "--ppid", str(os.getpid())], capture_output=True,
                             text=True).stdout.split())
    # Only the ps itself may differ; no infra (live or zombie) of ours stays.
    assert len(now - children) <= 1


def test_only_what_is_asked_for(tmp_path: Path):
    pinned = asyncio.run(namespaces.create(tmp_path, namespaces.NamespaceRequest(net=False, uts=False)))
    try:
        assert pinned.ipc and not pinned.net and not pinned.uts and not pinned.pid and pinned.infra_pid == 0
        assert _mounted(pinned.ipc)
    finally:
        asyncio.run(namespaces.unpin(pinned))
    assert asyncio.run(namespaces.create(tmp_path, namespaces.NamespaceRequest(net=False, ipc=False, uts=False))) \
        == namespaces.PodNamespaces()
