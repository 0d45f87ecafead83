"""Nothing under crispy's roots is reachable by a user who is not root
(issue #12.1): unpacked layers keep the image's modes (setuid-root binaries,
a 1777 /tmp) and a container's writable layer holds whatever it wrote, so a
host user who reached either could get root, read a container's files or
plant files every later container of the image sees.

One real daemon, started under umask 0 (so a directory made without an
explicit mode would come out 0777), pulls an image with a setuid-root
binary from the loopback registry and runs a root container that writes a
setuid copy and a secret into its writable layer, beside a container
running as a non-root user (which must still work: nothing that is not root
walks crispy's trees). Then `nobody` tries every way in."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from cri.proto import api_pb2 as pb
from tests.daemon_proc import DaemonProcess, tmp_base
from tests.imagebuild import BUSYBOX, Dir, File, build_image, busybox_entries, make_layer
from tests.pods_fixtures import *  # noqa: F403
from tests.pods_fixtures import container_config, pod_config, remove_all_pods, start_pod_daemon, wait_state
from tests.registry import LocalRegistry

pytestmark = pytest.mark.integration

NOBODY = 65534

# Run as nobody by /usr/bin/python3 -I -S: stdlib only, nothing under /work.
PROBE = r'''
import errno, json, os, subprocess, sys
out = {}
for name, op, path in json.loads(sys.argv[1]):
    try:
        if op == "list":
            os.listdir(path)
        elif op == "stat":
            os.stat(path)
        elif op == "read":
            with open(path, "rb") as f:
                f.read(1)
        elif op == "create":
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        elif op == "exec":
            subprocess.run([path, "id", "-u"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        out[name] = "ok"
    except OSError as e:
        out[name] = errno.errorcode.get(e.errno, str(e.errno))
print(json.dumps(out))
'''


def as_nobody(ops: list[tuple[str, str, str]]) -> dict[str, str]:
    out = subprocess.run(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--",
         "/usr/bin/python3", "-I", "-S", "-c", PROBE, json.dumps(ops)],
        capture_output=True, text=True, cwd="/", timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def suid_image():
    base = busybox_entries()
    base["bin/suidbox"] = File(Path(BUSYBOX).read_bytes(), 0o4755)
    top = {"etc/motd": File(b"from the second layer\n"), "opt": Dir(0o1777)}
    return build_image([make_layer(base), make_layer(top)])


@dataclass
class Scene:
    d: DaemonProcess
    data: Path
    state: Path
    pod_id: str
    writer: str   # root container: wrote a setuid binary and a secret
    nonroot: str  # runs as uid 1000
    layers: list[Path]
    logs: Path


def _wait_for(path: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def scene() -> Iterator[Scene]:
    with LocalRegistry() as reg:
        reg.push("perm/suid", "v1", suid_image())
        base = tmp_base()
        # Like /var/lib and /run: anyone may pass through to crispy's roots.
        os.chmod(base, 0o755)
        state = base / "state"  # not the socket's directory, which is 0750 anyway
        old_umask = os.umask(0)
        try:
            d = start_pod_daemon(base, ["--state-root", str(state)])
        finally:
            os.umask(old_umask)
        try:
            with d.client() as c:
                image = f"{reg.host}/perm/suid:v1"
                c.image.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=image)), timeout=120)
                # Missing, so crispy makes it (kubelet would have).
                cfg = pod_config("perms", log_directory=str(base / "logs" / "perms"))
                pod_id = c.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg)).pod_sandbox_id

                def start(name: str, script: str, uid: int | None = None) -> str:
                    config = container_config(name, ["/bin/sh", "-c", script], image=image)
                    if uid is not None:
                        config.linux.security_context.run_as_user.CopyFrom(pb.Int64Value(value=uid))
                        config.linux.security_context.run_as_group.CopyFrom(pb.Int64Value(value=uid))
                    ctr = c.runtime.CreateContainer(pb.CreateContainerRequest(
                        pod_sandbox_id=pod_id, config=config, sandbox_config=cfg)).container_id
                    c.runtime.StartContainer(pb.StartContainerRequest(container_id=ctr))
                    assert wait_state(c, ctr, pb.CONTAINER_RUNNING).state == pb.CONTAINER_RUNNING
                    return ctr

                writer = start("writer", "cp /bin/suidbox /tmp/mine && chmod 4755 /tmp/mine && "
                                         "echo secret > /tmp/secret && exec sleep 1000")
                nonroot = start("nonroot", "ls / >/dev/null && cat /etc/motd > /tmp/u && exec sleep 1000", uid=1000)
            data = Path(d.data_root)
            snapshots = data / "images" / "snapshots"
            layers = sorted(p for p in snapshots.iterdir() if len(p.name) == 64)
            assert len(layers) == 2
            _wait_for(data / "rootfs" / writer / "upper" / "tmp" / "secret")
            yield Scene(d, data, state, pod_id, writer, nonroot, layers, base / "logs")
        finally:
            if d.proc is not None and d.proc.poll() is None:
                remove_all_pods(d)
                d.stop()


def test_unprivileged_user_reaches_nothing(scene: Scene) -> None:
    upper = scene.data / "rootfs" / scene.writer / "upper"
    merged = scene.state / "containers" / scene.writer / "rootfs"
    pod_dir = scene.state / "pods" / scene.pod_id
    suid_layer = next(p for p in scene.layers if (p / "bin" / "suidbox").exists())
    blob = next((scene.data / "images" / "blobs" / "sha256").iterdir())
    # What nobody will try is there, and as dangerous as claimed.
    assert os.stat(suid_layer / "bin" / "suidbox").st_mode & stat.S_ISUID
    mine = os.stat(upper / "tmp" / "mine")
    assert mine.st_uid == 0 and mine.st_mode & stat.S_ISUID
    assert (merged / "tmp" / "secret").read_text() == "secret\n"
    assert os.path.ismount(pod_dir / "shm")

    ops = [
        ("list rootfs/", "list", scene.data / "rootfs"),
        ("list upper", "list", upper),
        ("exec setuid binary in upper", "exec", upper / "tmp" / "mine"),
        ("read secret in upper", "read", upper / "tmp" / "secret"),
        ("read secret through the mounted root", "read", merged / "tmp" / "secret"),
        ("write into the mounted root", "create", merged / "tmp" / "planted"),
        ("list containers/", "list", scene.state / "containers"),
        ("list snapshots/", "list", scene.data / "images" / "snapshots"),
        ("list blobs", "list", blob.parent),
        ("read a blob", "read", blob),
        ("list pods/", "list", scene.state / "pods"),
        ("write into the pod's /dev/shm", "create", pod_dir / "shm" / "planted"),
        ("list container records", "list", scene.data / "containers"),
        ("exec setuid binary in layer", "exec", suid_layer / "bin" / "suidbox"),
    ]
    for layer in scene.layers:
        ops.append((f"stat layer {layer.name[:12]}", "stat", layer))
        # The 1777 directories each layer has: root may write there, so
        # would anyone who reached them.
        for sub in ("tmp", "opt"):
            if (layer / sub).is_dir():
                assert stat.S_IMODE(os.stat(layer / sub).st_mode) == 0o1777
                ops.append((f"plant in /{sub} of layer {layer.name[:12]}", "create", layer / sub / "planted"))
        if (layer / "etc" / "passwd").exists():
            ops.append((f"read /etc/passwd in layer {layer.name[:12]}", "read", layer / "etc" / "passwd"))
    assert len(ops) == 14 + 2 + 2 + 1
    results = as_nobody([(name, op, str(path)) for name, op, path in ops])
    reached = {name: r for name, r in results.items() if r != "EACCES"}
    assert not reached, f"nobody got further than EACCES: {reached}"


def test_non_root_container_still_works(scene: Scene) -> None:
    with scene.d.client() as c:
        r = c.runtime.ExecSync(pb.ExecSyncRequest(container_id=scene.nonroot, cmd=["/bin/sh", "-c", "id -u; cat /tmp/u; ls /"],
                                                  timeout=30))
    out = r.stdout.decode()
    assert r.exit_code == 0, r.stderr
    assert out.startswith("1000\nfrom the second layer\n") and "bin" in out.split()


def _closed(path: Path) -> bool:
    return stat.S_IMODE(os.stat(path).st_mode) & 0o077 == 0


def content_dirs(data: Path, state: Path, pods: list[str], containers: list[str]) -> set[Path]:
    """What is the image's or a container's, not crispy's: the layers,
    writable layers, mounted roots, pods' /dev/shm."""
    snapshots = data / "images" / "snapshots"
    content = {p for p in snapshots.iterdir() if len(p.name) == 64}
    for ctr in containers:
        content |= {data / "rootfs" / ctr / "upper", data / "rootfs" / ctr / "work", state / "containers" / ctr / "rootfs"}
    content |= {state / "pods" / pod / "shm" for pod in pods}
    return content


def open_dirs(data: Path, state: Path, content: set[Path]) -> list[str]:
    """Directories crispy made that are not 0700 (roots: that others or the
    group may write or others enter), and content that is not below
    closed directories only."""
    runtime_state = state / "oci"  # the OCI runtime's own layout below
    opened = [f"{root} {stat.S_IMODE(os.stat(root).st_mode):04o}" for root in (data, state)
              if stat.S_IMODE(os.stat(root).st_mode) & 0o027]
    for root in (data, state):
        for dirpath, dirnames, _ in os.walk(root):
            here = Path(dirpath)
            for name in list(dirnames):
                p = here / name
                if p in content or here == runtime_state:
                    dirnames.remove(name)
                    continue
                if not _closed(p):
                    opened.append(f"{p} {stat.S_IMODE(os.stat(p).st_mode):04o}")
    for target in content:
        chain = [a for a in target.parents if data in (a, *a.parents) or state in (a, *a.parents)]
        assert chain, target
        opened += [f"{a} (above {target.name})" for a in chain if a not in (data, state) and not _closed(a)]
    return opened


def test_every_directory_on_the_way_to_layers_and_roots_is_closed(scene: Scene) -> None:
    """Walks both roots: every directory crispy made is 0700 (the roots
    at least closed to others), and each layer, writable layer, mounted
    root and pod dir sits below such directories only."""
    content = content_dirs(scene.data, scene.state, [scene.pod_id], [scene.writer, scene.nonroot])
    assert len(content) == 2 + 3 * 2 + 1
    opened = open_dirs(scene.data, scene.state, content)
    assert not opened, "directories others can enter: " + ", ".join(opened)


def test_log_directories_crispy_makes_are_not_writable_by_others(scene: Scene) -> None:
    """conmon (root) opens the log path: in a directory others could write,
    anyone could swap the log for a symlink to a file root then appends to.
    The daemon was started under umask 0."""
    made = [scene.logs, scene.logs / "perms"]
    assert (made[-1] / "writer.log").exists()
    assert {str(p): f"{stat.S_IMODE(os.stat(p).st_mode):04o}" for p in made} == {str(p): "0755" for p in made}


# What crispy made before #12.1 (0711 from mkdir(mode=0o711), 0755 from
# mkdir(parents=True) under umask 022); relative to the base.
OLD_MODES = {
    "data": 0o711, "state": 0o711, "data/images": 0o711, "data/images/snapshots": 0o711,
    "data/images/blobs": 0o755, "data/images/blobs/sha256": 0o755, "data/images/ingest": 0o755,
    "data/images/records": 0o755, "data/pods": 0o755, "data/containers": 0o755, "data/rootfs": 0o755,
    "state/pods": 0o711, "state/containers": 0o711, "state/exits": 0o711, "state/sock": 0o711, "state/oci": 0o711,
}


def test_an_older_nodes_loose_directories_are_tightened_at_start_up() -> None:
    """A node whose directories an older crispy made loose, with a pod and a
    running container on it: the restarted daemon closes everything before
    serving, and the container is still there and usable."""
    base = tmp_base()
    os.chmod(base, 0o755)
    state = base / "state"
    d = start_pod_daemon(base, ["--state-root", str(state)])
    try:
        from tests.pods_fixtures import load_image
        load_image(d)
        with d.client() as c:
            cfg = pod_config("old")
            pod_id = c.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg)).pod_sandbox_id
            ctr = c.runtime.CreateContainer(pb.CreateContainerRequest(
                pod_sandbox_id=pod_id, sandbox_config=cfg,
                config=container_config("old", ["/bin/sh", "-c", "echo secret > /tmp/secret && exec sleep 1000"]))).container_id
            c.runtime.StartContainer(pb.StartContainerRequest(container_id=ctr))
        data = Path(d.data_root)
        upper = data / "rootfs" / ctr / "upper"
        _wait_for(upper / "tmp" / "secret")
        d.stop()  # containers keep running

        for rel, m in OLD_MODES.items():
            os.chmod(base / rel, m)
        os.chmod(data / "rootfs" / ctr, 0o755)
        os.chmod(state / "pods" / pod_id, 0o711)
        layer = next(p for p in (data / "images" / "snapshots").iterdir() if len(p.name) == 64)
        ops = [("plant in the layer's /tmp", "create", str(layer / "tmp" / "planted")),
               ("read the container's secret", "read", str(upper / "tmp" / "secret")),
               ("plant in the pod's /dev/shm", "create", str(state / "pods" / pod_id / "shm" / "planted"))]
        # The loose node is as open as the issue says...
        assert set(as_nobody(ops).values()) == {"ok"}
        (layer / "tmp" / "planted").unlink()
        (state / "pods" / pod_id / "shm" / "planted").unlink()

        d.start()
        # ... and closed once the restarted daemon serves.
        assert as_nobody(ops) == {name: "EACCES" for name, _, _ in ops}
        content = content_dirs(data, state, [pod_id], [ctr])
        opened = open_dirs(data, state, content)
        assert not opened, "directories others can enter: " + ", ".join(opened)
        assert "tightened permissions of a crispy directory" in d.log()
        with d.client() as c:
            assert wait_state(c, ctr, pb.CONTAINER_RUNNING).state == pb.CONTAINER_RUNNING
            r = c.runtime.ExecSync(pb.ExecSyncRequest(container_id=ctr, cmd=["cat", "/tmp/secret"], timeout=30))
            assert (r.exit_code, r.stdout) == (0, b"secret\n")
    finally:
        if d.proc is not None and d.proc.poll() is None:
            remove_all_pods(d)
            d.stop()
