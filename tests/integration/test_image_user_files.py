"""An image's /etc/passwd and /etc/group on the real daemon: only regular
files of bounded size are read, only when a name must be looked up, and an
image whose files would block a reader (a FIFO) cannot wedge its pod or
starve the daemon's other requests."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from cri.proto import api_pb2 as pb
from runtime import users
from tests.imagebuild import (
    CharDevice,
    Fifo,
    File,
    Symlink,
    build_image,
    busybox_entries,
    make_layer,
    write_docker_archive,
)
from tests.pods_fixtures import *  # noqa: F403
from tests.pods_fixtures import container_config, leftover_mounts, leftover_processes, load_image, pod_config

pytestmark = pytest.mark.integration

# Generous: the assertion is "answers before its deadline", never a speed.
DEADLINE = 60.0

PASSWD = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n"
GROUP = "root:x:0:\napp:x:1000:\nstaff:x:50:app\n"


def _load(d, tag: str, **overrides) -> None:
    """A busybox image whose entries at the given paths (etc_passwd=...)
    are replaced, loaded into the daemon's store."""
    entries = busybox_entries(PASSWD, GROUP)
    for key, entry in overrides.items():
        entries[key.replace("_", "/", 1)] = entry
    archive = d.base / f"{tag.replace('/', '_').replace(':', '_')}.tar"
    write_docker_archive(build_image([make_layer(entries)]), archive, tag)
    out = subprocess.run([sys.executable, "-m", "cri.cli", "--data-root", d.data_root, "--state-root", d.state_root,
                          "--socket", d.socket, "load", str(archive)], capture_output=True, text=True)
    archive.unlink()
    assert out.returncode == 0, out.stderr


@pytest.fixture(scope="module")
def images(module_daemon):
    d = module_daemon
    load_image(d)
    _load(d, "crispy.test/users:1")
    _load(d, "crispy.test/fifo-passwd:1", etc_passwd=Fifo())
    _load(d, "crispy.test/fifo-group:1", etc_group=Fifo())
    _load(d, "crispy.test/zero-group:1", etc_group=Symlink("/dev/zero"), dev_zero=CharDevice(1, 5))
    _load(d, "crispy.test/huge-group:1", etc_group=File(b"g:x:7:\n" * (users.MAX_FILE_BYTES // 7 + 1)))
    return d


def _named(name: str, image: str, **sc) -> pb.ContainerConfig:
    cfg = container_config(name, ["sleep", "1000"], image=image)
    cfg.linux.security_context.CopyFrom(pb.LinuxContainerSecurityContext(**sc))
    return cfg


def _create(c, pod: str, pod_cfg: pb.PodSandboxConfig, cfg: pb.ContainerConfig) -> str:
    return c.runtime.CreateContainer(pb.CreateContainerRequest(pod_sandbox_id=pod, config=cfg, sandbox_config=pod_cfg),
                                     timeout=DEADLINE).container_id


NAMED = {"run_as_username": "app"}
# A uid the image does not name: crispy needs no group lookup, but the OCI
# runtime (runc) opens /etc/passwd and /etc/group in the container anyway.
BY_UID = {"run_as_user": pb.Int64Value(value=4242)}


@pytest.mark.parametrize("image,sc,says", [
    ("crispy.test/fifo-passwd:1", NAMED, "/etc/passwd is a FIFO, not a regular file"),
    ("crispy.test/fifo-passwd:1", BY_UID, "/etc/passwd is a FIFO, not a regular file"),
    ("crispy.test/fifo-group:1", NAMED, "/etc/group is a FIFO, not a regular file"),
    ("crispy.test/fifo-group:1", BY_UID, "/etc/group is a FIFO, not a regular file"),
    ("crispy.test/zero-group:1", NAMED, "/etc/group is a character device, not a regular file"),
    ("crispy.test/huge-group:1", NAMED, "/etc/group is larger than"),
])
def test_unreadable_user_files_are_refused(images, clean_pods, image, sc, says):
    d = images
    with d.client() as c:
        pod_cfg = pod_config("refuse")
        pod = c.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=pod_cfg), timeout=DEADLINE).pod_sandbox_id
        before = {p for p, _ in leftover_processes([d.base])}
        mounts_before = leftover_mounts([d.base])
        with pytest.raises(grpc.RpcError) as e:
            _create(c, pod, pod_cfg, _named("named", image, **sc))
        assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION, e.value.details()
        assert says in e.value.details()
        assert {p for p, _ in leftover_processes([d.base])} == before
        assert leftover_mounts([d.base]) == mounts_before
        assert os.listdir(Path(d.state_root) / "containers") == []
        # The pod is not wedged: a good container in it is created at once.
        ok = _create(c, pod, pod_cfg, _named("ok", "crispy.test/users:1", run_as_username="app"))
        st = c.runtime.ContainerStatus(pb.ContainerStatusRequest(container_id=ok), timeout=DEADLINE).status
        assert (st.user.linux.uid, st.user.linux.gid, list(st.user.linux.supplemental_groups)) == (1000, 1000, [1000, 50])


def test_group_file_is_read_only_when_a_lookup_needs_it(images, clean_pods):
    """crispy reads (and bounds) /etc/group only for a group lookup: an
    image with a huge one still runs containers that need none, a uid the
    image does not name, or a named user under the Strict policy."""
    d = images
    with d.client() as c:
        pod_cfg = pod_config("lazy")
        pod = c.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=pod_cfg), timeout=DEADLINE).pod_sandbox_id
        a = _create(c, pod, pod_cfg, _named("uid", "crispy.test/huge-group:1", **BY_UID))
        b = _create(c, pod, pod_cfg, _named("strict", "crispy.test/huge-group:1", run_as_username="app",
                                            supplemental_groups=[77], supplemental_groups_policy=pb.Strict))
        users_of = {}
        for ctr in (a, b):
            st = c.runtime.ContainerStatus(pb.ContainerStatusRequest(container_id=ctr), timeout=DEADLINE).status
            users_of[ctr] = (st.user.linux.uid, st.user.linux.gid, list(st.user.linux.supplemental_groups))
        assert users_of[a] == (4242, 0, [0])
        assert users_of[b] == (1000, 1000, [1000, 77])
        c.runtime.StartContainer(pb.StartContainerRequest(container_id=b), timeout=DEADLINE)
        out = c.runtime.ExecSync(pb.ExecSyncRequest(container_id=b, cmd=["id", "-u"], timeout=30), timeout=DEADLINE)
        assert out.stdout.strip() == b"1000"


def test_blocked_reads_do_not_starve_other_requests(images, clean_pods):
    """More bad CreateContainers at once than the daemon has pool threads,
    each in its own pod (so no pod lock serialises them): every one fails
    with a clear error, and the requests of everyone else answer before
    their deadlines meanwhile."""
    d = images
    bad_pods = 8  # the default thread pool has min(32, cpus + 4) threads: 6 here
    with d.client() as c:
        pods = []
        for i in range(bad_pods):
            cfg = pod_config(f"bad{i}")
            pods.append((c.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg), timeout=DEADLINE).pod_sandbox_id, cfg))
        with ThreadPoolExecutor(bad_pods) as pool:
            bad = [pool.submit(_create, c, pod, cfg, _named("bad", "crispy.test/fifo-passwd:1", run_as_username="app"))
                   for pod, cfg in pods]
            # Everyone else, while those are in flight.
            good_cfg = pod_config("bystander")
            good_pod = c.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=good_cfg), timeout=DEADLINE).pod_sandbox_id
            c.image.ImageFsInfo(pb.ImageFsInfoRequest(), timeout=DEADLINE)
            c.runtime.ListContainerStats(pb.ListContainerStatsRequest(), timeout=DEADLINE)
            good = _create(c, good_pod, good_cfg, container_config("good", ["sleep", "1000"]))
            c.runtime.StartContainer(pb.StartContainerRequest(container_id=good), timeout=DEADLINE)
            errors = []
            for f in bad:
                with pytest.raises(grpc.RpcError) as e:
                    f.result()
                errors.append((e.value.code(), e.value.details()))
        for code, details in errors:
            assert code == grpc.StatusCode.FAILED_PRECONDITION, details
            assert "/etc/passwd is a FIFO, not a regular file" in details
        # The bad pods are not wedged either.
        for pod, _ in pods:
            c.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod), timeout=DEADLINE)
