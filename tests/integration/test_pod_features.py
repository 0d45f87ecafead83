"""Features kubelet 1.33+ asks for, on the real daemon, runc and kernel:
Status advertises them per handler; recursive read-only mounts make
submounts read-only; SupplementalGroupsPolicy Merge and Strict; and
ContainerStatus.user is what the running process really is."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from cri.proto import api_pb2 as pb
from tests.daemon_proc import DaemonProcess, tmp_base
from tests.pods_fixtures import *  # noqa: F403
from tests.pods_fixtures import (
    container_config,
    load_image,
    pod_config,
    remove_all_pods,
    start_pod_daemon,
    stop_pod_daemon,
    wait_state,
)

pytestmark = pytest.mark.integration

# The image critest uses for the policies: default-user (1000) is listed in
# group-defined-in-image (50000) by the image's /etc/group.
PASSWD = ("root:x:0:0:root:/root:/bin/sh\n"
          "default-user:x:1000:1000:Linux User,,,:/home/default-user:/bin/sh\n")
GROUP = "root:x:0:\ndefault-user:x:1000:\ngroup-defined-in-image:x:50000:default-user\n"
IMAGE = "crispy.test/predefined-group:1"

# A runtime that is runc underneath but says nothing of what it supports:
# not runc by its --version, no `features` command.
OLD_RUNTIME = """#!/bin/sh
case "$1" in
  --version) echo "oldrt version 0.1"; exit 0 ;;
  features) echo "unknown command features" >&2; exit 1 ;;
esac
exec {runc} "$@"
"""


@pytest.fixture(scope="module")
def daemon() -> Iterator[DaemonProcess]:
    base = tmp_base()
    runc = shutil.which("runc")
    if runc is None:
        pytest.skip("runc is not installed")
    base.mkdir(parents=True, exist_ok=True)
    old = base / "oldrt"
    old.write_text(OLD_RUNTIME.format(runc=runc))
    old.chmod(0o755)
    config = (f'[runtime]\noci_runtime = "runc"\n[runtime.handlers]\nrunc = "{runc}"\noldrt = "{old}"\n')
    d = start_pod_daemon(base, config_text=config)
    load_image(d)
    load_image(d, IMAGE, config={"Cmd": ["/bin/sh"], "User": "default-user"}, passwd=PASSWD, group=GROUP)
    yield d
    stop_pod_daemon(d)


@pytest.fixture
def c(daemon):
    with daemon.client() as client:
        yield client
    remove_all_pods(daemon)


def _pod(c, name: str, handler: str = "") -> tuple[str, pb.PodSandboxConfig]:
    cfg = pod_config(name)
    pod = c.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg, runtime_handler=handler)).pod_sandbox_id
    return pod, cfg


def _create(c, pod, cfg, config: pb.ContainerConfig) -> str:
    return c.runtime.CreateContainer(pb.CreateContainerRequest(pod_sandbox_id=pod, config=config,
                                                               sandbox_config=cfg)).container_id


def _sh(c, ctr, script: str) -> tuple[int, str, str]:
    r = c.runtime.ExecSync(pb.ExecSyncRequest(container_id=ctr, cmd=["/bin/sh", "-c", script], timeout=30))
    return r.exit_code, r.stdout.decode(), r.stderr.decode()


def _user(c, ctr) -> tuple[int, int, list[int]]:
    u = c.runtime.ContainerStatus(pb.ContainerStatusRequest(container_id=ctr)).status.user.linux
    return u.uid, u.gid, sorted(u.supplemental_groups)


# ---- advertisement -------------------------------------------------------------------

def test_status_advertises_per_handler(c, daemon):
    st = c.runtime.Status(pb.StatusRequest())
    assert st.features.supplemental_groups_policy is True
    assert st.features.user_namespaces_host_network is False
    handlers = {h.name: h.features for h in st.runtime_handlers}
    assert list(handlers) == ["", "oldrt", "runc"]
    # Linux >= 5.12 here and runc 1.1.5 lists `rro` in `runc features`.
    assert handlers[""].recursive_read_only_mounts and handlers["runc"].recursive_read_only_mounts
    assert not handlers["oldrt"].recursive_read_only_mounts
    # User namespaces: runc joins the pod's; a runtime crispy cannot identify
    # is not trusted to.
    assert handlers[""].user_namespaces and handlers["runc"].user_namespaces
    assert not handlers["oldrt"].user_namespaces
    # The verbose info says why a handler lacks one.
    why = json.loads(c.runtime.Status(pb.StatusRequest(verbose=True)).info["runtimeHandlerFeatures"])
    assert "no features command" in why["oldrt"]["rro_missing"] and "oldrt version 0.1" in why["oldrt"]["rro_missing"]
    assert why["runc"]["rro_missing"] == ""


@pytest.mark.skipif(shutil.which("crictl") is None, reason="crictl is not installed")
def test_crictl_info_shows_the_features(daemon):
    out = subprocess.run(["crictl", "-r", f"unix://{daemon.socket}", "info"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["features"]["supplemental_groups_policy"] is True
    # Proto JSON leaves out empty and false fields: the default handler's name "" among them.
    names = {h.get("name", ""): h.get("features", {}) for h in info["runtimeHandlers"]}
    assert set(names) == {"", "runc", "oldrt"}
    assert names["runc"]["recursive_read_only_mounts"] is True
    assert names["oldrt"].get("recursive_read_only_mounts", False) is False


# ---- recursive read-only mounts ------------------------------------------------------

@pytest.fixture
def tree_with_submount(daemon) -> Iterator[Path]:
    """A directory with a tmpfs mounted under it (a writable submount)."""
    src = daemon.base / "rro-src"
    (src / "sub").mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "rro-test", str(src / "sub")], check=True)
    try:
        (src / "sub" / "file").write_text("x")
        yield src
    finally:
        remove_all_pods(daemon)
        subprocess.run(["umount", "-l", str(src / "sub")], check=True)
        shutil.rmtree(src)


def _mount_ctr(c, pod, cfg, name, src: Path, **mount_kw) -> str:
    config = container_config(name, ["sleep", "1000"])
    config.mounts.append(pb.Mount(container_path="/data", host_path=str(src), **mount_kw))
    return _create(c, pod, cfg, config)


def test_recursive_read_only_makes_submounts_read_only(c, daemon, tree_with_submount):
    pod, cfg = _pod(c, "rro")
    rro = _mount_ctr(c, pod, cfg, "rro", tree_with_submount, readonly=True, recursive_read_only=True)
    plain = _mount_ctr(c, pod, cfg, "plain", tree_with_submount, readonly=True)
    spec = json.loads((Path(daemon.state_root) / "containers" / rro / "config.json").read_text())
    data = next(m for m in spec["mounts"] if m["destination"] == "/data")
    assert "rro" in data["options"] and "ro" in data["options"]
    for ctr in (rro, plain):
        c.runtime.StartContainer(pb.StartContainerRequest(container_id=ctr))
    # Both: the bind itself is read-only.
    for ctr in (rro, plain):
        code, _, err = _sh(c, ctr, "touch /data/top")
        assert code != 0 and "Read-only file system" in err
    # Only the recursive one makes the tmpfs under it read-only too.
    code, _, err = _sh(c, rro, "cat /data/sub/file && touch /data/sub/new")
    assert code != 0 and "Read-only file system" in err
    assert _sh(c, plain, "touch /data/sub/new")[0] == 0
    assert (tree_with_submount / "sub" / "new").exists()


@pytest.mark.parametrize("mount_kw,code,says", [
    ({"readonly": False, "recursive_read_only": True}, grpc.StatusCode.INVALID_ARGUMENT, "needs readonly true"),
    ({"readonly": True, "recursive_read_only": True, "propagation": pb.PROPAGATION_HOST_TO_CONTAINER},
     grpc.StatusCode.INVALID_ARGUMENT, "PROPAGATION_PRIVATE"),
])
def test_recursive_read_only_refusals(c, daemon, tree_with_submount, mount_kw, code, says):
    pod, cfg = _pod(c, "rro-bad")
    with pytest.raises(grpc.RpcError) as e:
        _mount_ctr(c, pod, cfg, "bad", tree_with_submount, **mount_kw)
    assert e.value.code() == code and says in e.value.details()
    assert list(c.runtime.ListContainers(pb.ListContainersRequest()).containers) == []
    assert os.listdir(Path(daemon.state_root) / "containers") == []


def test_recursive_read_only_on_a_handler_without_it(c, daemon, tree_with_submount):
    pod, cfg = _pod(c, "rro-old", handler="oldrt")
    with pytest.raises(grpc.RpcError) as e:
        _mount_ctr(c, pod, cfg, "old", tree_with_submount, readonly=True, recursive_read_only=True)
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "runtime handler 'oldrt'" in e.value.details() and "rro" in e.value.details()
    assert list(c.runtime.ListContainers(pb.ListContainersRequest()).containers) == []
    # The handler itself works: a plain read-only mount runs on it.
    ctr = _mount_ctr(c, pod, cfg, "old-plain", tree_with_submount, readonly=True)
    c.runtime.StartContainer(pb.StartContainerRequest(container_id=ctr))
    assert _sh(c, ctr, "cat /data/sub/file")[1] == "x"


# ---- SupplementalGroupsPolicy and ContainerStatus.user -------------------------------

def _grouped(c, pod, cfg, name, policy) -> str:
    config = container_config(name, ["sh", "-c", "id -G; exec sleep 1000"], image=IMAGE)
    sc = config.linux.security_context
    sc.run_as_user.CopyFrom(pb.Int64Value(value=1000))
    sc.supplemental_groups.append(1234)
    sc.supplemental_groups_policy = policy
    ctr = _create(c, pod, cfg, config)
    c.runtime.StartContainer(pb.StartContainerRequest(container_id=ctr))
    return ctr


def test_supplemental_groups_policies(c):
    pod, cfg = _pod(c, "groups")
    merge = _grouped(c, pod, cfg, "merge", pb.Merge)
    strict = _grouped(c, pod, cfg, "strict", pb.Strict)
    # Merge: the image's /etc/group memberships of the user join the pod's groups.
    assert _user(c, merge) == (1000, 1000, [1000, 1234, 50000])
    assert _sh(c, merge, "id -G")[1] == "1000 1234 50000\n"
    # Strict: only the primary group and the pod's.
    assert _user(c, strict) == (1000, 1000, [1000, 1234])
    assert _sh(c, strict, "id -G")[1] == "1000 1234\n"


def test_container_status_user_is_the_running_process(c):
    """The init process changes who it is after start (root `su`s to
    default-user and execs in place): the status follows the process, not
    the spec; once it has exited, the spec's user is reported."""
    pod, cfg = _pod(c, "whoami")
    config = container_config("su", ["su", "-s", "/bin/sh", "default-user", "-c", "exec sleep 1000"], image=IMAGE)
    config.linux.security_context.run_as_user.CopyFrom(pb.Int64Value(value=0))
    ctr = _create(c, pod, cfg, config)
    assert _user(c, ctr) == (0, 0, [0])  # created, not running: what the spec says
    c.runtime.StartContainer(pb.StartContainerRequest(container_id=ctr))
    wait_state(c, ctr, pb.CONTAINER_RUNNING)
    # su's setuid happens just after the start; wait for the sleep.
    for _ in range(100):
        if _sh(c, ctr, "cat /proc/1/comm")[1].strip() == "sleep":
            break
    assert _user(c, ctr) == (1000, 1000, [1000, 50000])
    c.runtime.StopContainer(pb.StopContainerRequest(container_id=ctr, timeout=0))
    wait_state(c, ctr, pb.CONTAINER_EXITED)
    assert _user(c, ctr) == (0, 0, [0])
