"""Shared fixtures for the pod and container tests: a daemon whose pods are
all removed afterwards, and a per-module check that nothing crispy made is
left on the node (mounts, namespace pins, conmon or infra processes,
cgroups). Leftovers are cleaned up, then reported as a failure.

Import with `from tests.pods_fixtures import *` in a test module.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path
from typing import Iterator

import grpc
import pytest

from cri.proto import api_pb2 as pb
from runtime import kmount
from tests.daemon_proc import DaemonProcess, tmp_base

# Every test pod lives under this cgroup parent, so leftovers are easy to find.
TEST_CGROUP_PARENT = "/crispytest"
CGROUP_ROOT = Path("/sys/fs/cgroup")

__all__ = ["pod_daemon", "module_daemon", "clean_pods", "pods_leave_nothing_behind", "TEST_CGROUP_PARENT", "pod_config", "remove_all_pods",
           "start_pod_daemon", "cgroup_parent_for"]


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _stat_fields(pid: int) -> tuple[str, int] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = stat[stat.rfind(")") + 2:].split()
    return rest[0], int(rest[1])


# Daemon roots made by these fixtures in this test session; the leftover
# checks look only at these, never at other sessions running alongside.
_BASES: list[Path] = []


def cgroup_parent_for(base: Path) -> str:
    return f"{TEST_CGROUP_PARENT}/{base.name}"


def leftover_processes(bases: list[Path]) -> list[tuple[int, str]]:
    """conmon processes and pod infra processes (and their unshare parents)
    that belong to one of `bases`."""
    found = []
    keys = [str(b) + "/" for b in bases]
    if not keys:
        return found
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        st = _stat_fields(pid)
        if st is None or st[0] in ("Z", "X"):
            continue
        cmd = _cmdline(pid)
        joined = " ".join(cmd)
        name = os.path.basename(cmd[0]) if cmd and cmd[0] else ""
        if name in ("conmon", "unshare") and any(k in joined for k in keys):
            found.append((pid, joined))
        elif name == "catatonit":
            # crispy names the pod directory in the infra's environment;
            # older infras were found by their unshare parent's argv.
            parent = " ".join(_cmdline(st[1]))
            try:
                with open(f"/proc/{pid}/environ", "rb") as f:
                    env = f.read().decode(errors="replace")
            except OSError:
                env = ""
            if any(k in parent or f"CRISPY_POD_DIR={k}" in env.replace("\0", "\n") for k in keys):
                found.append((pid, joined))
    return found


def leftover_mounts(bases: list[Path]) -> list[str]:
    out = []
    keys = [str(b) + "/" for b in bases]
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4]
            if any(point.startswith(k) for k in keys):
                out.append(point)
    return out


def _cgroup_dirs(bases: list[Path]) -> list[Path]:
    out = []
    if not CGROUP_ROOT.is_dir():
        return out
    for hierarchy in CGROUP_ROOT.iterdir():
        # Only mounted hierarchies: a bare directory (a mount point whose
        # hierarchy was unmounted) holds no cgroups.
        if not (hierarchy / "cgroup.procs").exists():
            continue
        for b in bases:
            d = hierarchy / cgroup_parent_for(b).strip("/")
            if d.is_dir():
                out.append(d)
    return out


def leftover_cgroups(bases: list[Path]) -> list[str]:
    return [str(sub) for d in _cgroup_dirs(bases) for sub in d.iterdir() if sub.is_dir()]


def _rmdir_tree(path: Path) -> None:
    for sub in sorted(path.rglob("*"), key=lambda p: len(str(p)), reverse=True):
        if sub.is_dir():
            try:
                sub.rmdir()
            except OSError:
                pass
    try:
        path.rmdir()
    except OSError:
        pass


def _force_clean(bases: list[Path]) -> None:
    for pid, _ in leftover_processes(bases):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    time.sleep(0.2)
    for point in sorted(leftover_mounts(bases), key=len, reverse=True):
        try:
            kmount.umount(point)
        except OSError:
            pass
    for d in _cgroup_dirs(bases):
        _rmdir_tree(d)


@pytest.fixture(scope="module", autouse=True)
def pods_leave_nothing_behind() -> Iterator[None]:
    first = len(_BASES)
    yield
    bases = _BASES[first:]
    # conmon and infra processes exit asynchronously after their container.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (leftover_processes(bases) or leftover_mounts(bases)):
        time.sleep(0.1)
    procs, mounts, cgroups = leftover_processes(bases), leftover_mounts(bases), leftover_cgroups(bases)
    if procs or mounts or cgroups:
        _force_clean(bases)
        pytest.fail(f"left behind: processes={procs} mounts={mounts} cgroups={cgroups}")
    # The (empty) per-daemon cgroup parents, and the shared one once empty
    # (rmdir refuses while another session still uses it).
    for d in _cgroup_dirs(bases):
        _rmdir_tree(d)
    for hierarchy in CGROUP_ROOT.iterdir() if CGROUP_ROOT.is_dir() else []:
        try:
            (hierarchy / TEST_CGROUP_PARENT.strip("/")).rmdir()
        except OSError:
            pass
    for b in bases:
        shutil.rmtree(b, ignore_errors=True)


def stop_pod_daemon(d: DaemonProcess) -> None:
    """A test's daemon, done: what the test left is removed through CRI,
    then the daemon stops (also when the removal failed); nothing for a
    daemon that is gone already."""
    if d.proc is None or d.proc.poll() is not None:
        return
    try:
        remove_all_pods(d)
    finally:
        if d.proc is not None and d.proc.poll() is None:
            d.stop()


def remove_all_pods(d: DaemonProcess) -> None:
    try:
        with d.client() as c:
            for pod in c.runtime.ListPodSandbox(pb.ListPodSandboxRequest()).items:
                c.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod.id))
                c.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod.id))
            for ctr in c.runtime.ListContainers(pb.ListContainersRequest()).containers:
                c.runtime.RemoveContainer(pb.RemoveContainerRequest(container_id=ctr.id))
    except grpc.RpcError as e:
        if e.code() != grpc.StatusCode.UNIMPLEMENTED:
            raise


def start_pod_daemon(base: Path, extra_args: list[str] | None = None, config_text: str | None = None,
                     env: dict[str, str | None] | None = None, wait: bool = True) -> DaemonProcess:
    _BASES.append(base)
    # A short default grace: test containers are mostly `sleep` loops.
    args = ["--runtime-default-cgroup-parent", cgroup_parent_for(base), "--runtime-default-stop-timeout", "2",
            *(extra_args or [])]
    return DaemonProcess(base, extra_args=args, config_text=config_text, env=env).start(wait)


def _daemon_fixture(extra_args: list[str] | None = None) -> Iterator[DaemonProcess]:
    base = tmp_base()
    d = start_pod_daemon(base, extra_args)
    yield d
    stop_pod_daemon(d)
        # The roots go once the module's leftover check has run.


@pytest.fixture
def pod_daemon() -> Iterator[DaemonProcess]:
    """A daemon whose pods and containers are removed after the test, and
    whose roots are only deleted once nothing is mounted in them."""
    yield from _daemon_fixture()


@pytest.fixture(scope="module")
def module_daemon() -> Iterator[DaemonProcess]:
    """One daemon for a whole module (starting one costs seconds); use with
    `clean_pods` so each test starts with no pods."""
    yield from _daemon_fixture()


@pytest.fixture
def clean_pods(module_daemon: DaemonProcess) -> Iterator[DaemonProcess]:
    yield module_daemon
    if module_daemon.proc is not None and module_daemon.proc.poll() is None:
        remove_all_pods(module_daemon)


def pod_config(name: str = "pod", namespace: str = "default", uid: str = "", attempt: int = 0,
               **kw) -> pb.PodSandboxConfig:
    cfg = pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name=name, namespace=namespace, uid=uid or f"uid-{name}", attempt=attempt),
        hostname=kw.pop("hostname", name), log_directory=kw.pop("log_directory", ""),
        linux=pb.LinuxPodSandboxConfig(cgroup_parent=kw.pop("cgroup_parent", "")), **kw)
    return cfg


# ---- images and containers -----------------------------------------------------

def load_image(d: DaemonProcess, tag: str = "crispy.test/busybox:1", config: dict | None = None,
               passwd: str | None = None, group: str | None = None) -> str:
    """Puts a busybox image into the daemon's store through `crispy load`
    (the images/ API), returns its image id."""
    import subprocess
    import sys

    from tests.imagebuild import build_image, busybox_entries, make_layer, write_docker_archive
    image = build_image([make_layer(busybox_entries(passwd, group))], config=config)
    archive = d.base / f"image-{abs(hash(tag))}.tar"
    write_docker_archive(image, archive, tag)
    out = subprocess.run([sys.executable, "-m", "cri.cli", "--data-root", d.data_root, "--state-root", d.state_root,
                          "--socket", d.socket, "load", str(archive)], capture_output=True, text=True)
    archive.unlink()
    assert out.returncode == 0, out.stderr
    return out.stdout.split()[0]


def container_config(name: str, command: list[str], image: str = "crispy.test/busybox:1", **kw) -> pb.ContainerConfig:
    return pb.ContainerConfig(metadata=pb.ContainerMetadata(name=name, attempt=kw.pop("attempt", 0)),
                              image=pb.ImageSpec(image=image), command=command,
                              log_path=kw.pop("log_path", f"{name}.log"), **kw)


def wait_state(c, container_id: str, state: int, timeout: float = 30.0) -> pb.ContainerStatus:
    deadline = time.monotonic() + timeout
    while True:
        st = c.runtime.ContainerStatus(pb.ContainerStatusRequest(container_id=container_id)).status
        if st.state == state or time.monotonic() > deadline:
            return st
        time.sleep(0.05)


__all__ += ["load_image", "container_config", "wait_state"]
