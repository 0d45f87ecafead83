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


def test_every_directory_on_the_way_to_layers_and_roots_is_closed(scene: Scene) -> None:
    """Walks both roots: every directory crispy made is 0700 (the roots
    at least closed to others), and each layer, writable layer, mounted
    root and pod dir sits below such directories only."""
    # Content that is the image's or the container's, not crispy's.
    content = set(scene.layers)
    for ctr in (scene.writer, scene.nonroot):
        content |= {scene.data / "rootfs" / ctr / "upper", scene.data / "rootfs" / ctr / "work",
                    scene.state / "containers" / ctr / "rootfs"}
    content.add(scene.state / "pods" / scene.pod_id / "shm")
    runtime_state = scene.state / "oci"  # the OCI runtime's own layout below
    opened = [f"{root} {stat.S_IMODE(os.stat(root).st_mode):04o}" for root in (scene.data, scene.state)
              if stat.S_IMODE(os.stat(root).st_mode) & 0o027]
    for root in (scene.data, scene.state):
        for dirpath, dirnames, _ in os.walk(root):
            here = Path(dirpath)
            for name in list(dirnames):
                p = here / name
                if p in content or here == runtime_state:
                    dirnames.remove(name)
                    continue
                if not _closed(p):
                    opened.append(f"{p} {stat.S_IMODE(os.stat(p).st_mode):04o}")
    assert not opened, "directories others can enter: " + ", ".join(opened)
    for target in content:
        chain = [a for a in target.parents if scene.data in (a, *a.parents) or scene.state in (a, *a.parents)]
        assert chain and all(_closed(a) for a in chain if a not in (scene.data, scene.state)), target


def test_log_directories_crispy_makes_are_not_writable_by_others(scene: Scene) -> None:
    """conmon (root) opens the log path: in a directory others could write,
    anyone could swap the log for a symlink to a file root then appends to.
    The daemon was started under umask 0."""
    made = [scene.logs, scene.logs / "perms"]
    assert (made[-1] / "writer.log").exists()
    assert {str(p): f"{stat.S_IMODE(os.stat(p).st_mode):04o}" for p in made} == {str(p): "0755" for p in made}
