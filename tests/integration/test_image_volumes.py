"""Image volumes (`Mount.image`) on the real daemon, runc, overlayfs and an
image pulled from the loopback registry: the image's files are visible
read-only (and executable) inside a running container, whole or as an
`image_sub_path`; refusals leave nothing; ContainerStatus reports the
image's id; RemoveImage is refused while a container mounts the image and
allowed after; nothing stays mounted after RemoveContainer, nor after a
crash of the daemon in the middle of the create."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import grpc
import pytest

from cri.proto import api_pb2 as pb
from tests import imagebuild as ib
from tests.daemon_proc import DaemonProcess
from tests.integration.test_container_crashpoints import (
    LOOP,
    alive,
    assert_nothing_left,
    assert_supervised_run,
    crash,
    crash_daemon,  # noqa: F401 - the fixture
    info_of,
)
from tests.pods_fixtures import *  # noqa: F403
from tests.pods_fixtures import container_config, load_image, pod_config, wait_state
from tests.registry import LocalRegistry

pytestmark = pytest.mark.integration

VOLUME_PATH = "/mnt/image-volume"


def data_image() -> ib.Image:
    """Two layers, so the volume is a real overlay: busybox (for /bin/ls
    run from the volume) plus data/one.txt, then data/two.txt and a symlink
    whose absolute target must resolve inside the image."""
    base = ib.busybox_entries()
    base.update({"data": ib.Dir(), "data/one.txt": ib.File(b"one\n"), "data/sub": ib.Dir(),
                 "data/sub/deep.txt": ib.File(b"deep\n")})
    top = {"data/two.txt": ib.File(b"two\n"), "data/to-sub": ib.Symlink("/data/sub"),
           "data/escape": ib.Symlink("../../../../../"), "data/file": ib.File(b"not a dir\n")}
    return ib.build_image([ib.make_layer(base), ib.make_layer(top)])


@pytest.fixture(scope="module")
def registry() -> Iterator[LocalRegistry]:
    with LocalRegistry() as reg:
        reg.push("vol/data", "v1", data_image())
        yield reg


def pull(c, ref: str) -> str:
    return c.image.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=ref)), timeout=120).image_ref


def image_mount(image: str, path: str = VOLUME_PATH, sub: str = "", readonly: bool = True) -> pb.Mount:
    return pb.Mount(container_path=path, readonly=readonly, image=pb.ImageSpec(image=image, user_specified_image=image),
                    image_sub_path=sub)


def mounts_under_bundles(d: DaemonProcess) -> list[str]:
    key = str(Path(d.state_root) / "containers") + "/"
    return [ln.split()[4] for ln in open("/proc/self/mountinfo") if ln.split()[4].startswith(key)]


def exec_sync(c, ctr: str, cmd: list[str]) -> pb.ExecSyncResponse:
    return c.runtime.ExecSync(pb.ExecSyncRequest(container_id=ctr, cmd=cmd, timeout=20))


def test_volume_in_a_running_container(clean_pods, registry, tmp_path):
    d = clean_pods
    load_image(d)
    with d.client() as c:
        ref = f"{registry.host}/vol/data:v1"
        image_id = pull(c, ref)
        cfg = pod_config("imgvol", log_directory=str(tmp_path))
        pod = c.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg)).pod_sandbox_id
        config = container_config("c", LOOP)
        config.mounts.extend([image_mount(ref), image_mount(image_id, "/sub", sub="data"),
                              image_mount(ref, "/linked", sub="data/to-sub"),
                              image_mount(ref, "/escaped", sub="data/escape"),
                              # busybox is one layer: a read-only bind, not an overlay.
                              image_mount("crispy.test/busybox:1", "/single", sub="etc")])
        ctr = c.runtime.CreateContainer(pb.CreateContainerRequest(pod_sandbox_id=pod, config=config,
                                                                  sandbox_config=cfg)).container_id
        c.runtime.StartContainer(pb.StartContainerRequest(container_id=ctr))
        assert wait_state(c, ctr, pb.CONTAINER_RUNNING).state == pb.CONTAINER_RUNNING

        out = exec_sync(c, ctr, ["cat", f"{VOLUME_PATH}/data/one.txt", f"{VOLUME_PATH}/data/two.txt",
                                 "/sub/two.txt", "/linked/deep.txt", "/escaped/data/one.txt"])
        assert (out.exit_code, out.stdout) == (0, b"one\ntwo\ntwo\ndeep\none\n"), out.stderr
        out = exec_sync(c, ctr, ["ls", "/single"])
        assert out.exit_code == 0 and b"passwd" in out.stdout.split(), out
        # Only the sub-directory: the image's root is not there.
        assert exec_sync(c, ctr, ["ls", "/sub/data"]).exit_code != 0
        for target in (f"{VOLUME_PATH}/new", "/sub/one.txt", "/single/passwd"):
            out = exec_sync(c, ctr, ["touch", target])
            assert out.exit_code != 0 and b"Read-only file system" in out.stderr, (target, out)
        # Not noexec: the image's own binaries run from the volume.
        out = exec_sync(c, ctr, [f"{VOLUME_PATH}/bin/ls", f"{VOLUME_PATH}/data"])
        assert out.exit_code == 0 and b"one.txt" in out.stdout.split(), out

        st = c.runtime.ContainerStatus(pb.ContainerStatusRequest(container_id=ctr)).status
        by_path = {m.container_path: m for m in st.mounts}
        assert by_path[VOLUME_PATH].image.image == ref
        assert by_path[VOLUME_PATH].image.image_ref == image_id
        assert by_path["/sub"].image_sub_path == "data" and by_path["/sub"].image.image_ref == image_id
        assert by_path[VOLUME_PATH].readonly

        # In use as a volume only (the container's root is busybox): kept.
        for name in (ref, image_id):
            with pytest.raises(grpc.RpcError) as e:
                c.image.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image=name)))
            assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert ctr in e.value.details()
        assert mounts_under_bundles(d)
        c.runtime.StopContainer(pb.StopContainerRequest(container_id=ctr, timeout=0))
        c.runtime.RemoveContainer(pb.RemoveContainerRequest(container_id=ctr))
        assert mounts_under_bundles(d) == []
        c.image.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image=ref)))
        assert not c.image.ImageStatus(pb.ImageStatusRequest(image=pb.ImageSpec(image=image_id))).HasField("image")
        c.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod))
        c.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod))


@pytest.mark.parametrize("mount, code, words", [
    (image_mount("{ref}", readonly=False), grpc.StatusCode.INVALID_ARGUMENT, "read-only"),
    (image_mount("{ref}", sub="not-existing"), grpc.StatusCode.INVALID_ARGUMENT,
     "'not-existing' does not exist in the image"),
    (image_mount("{ref}", sub="data/file"), grpc.StatusCode.INVALID_ARGUMENT, "not a directory"),
    (image_mount("{ref}", sub="../etc"), grpc.StatusCode.INVALID_ARGUMENT, "must not contain '..'"),
    (image_mount("{registry}/vol/absent:v1"), grpc.StatusCode.NOT_FOUND, "pull it first"),
], ids=["read-write", "missing-sub-path", "file-sub-path", "dotdot-sub-path", "absent-image"])
def test_refused_volumes_leave_nothing(clean_pods, registry, tmp_path, mount, code, words):
    d = clean_pods
    load_image(d)
    with d.client() as c:
        ref = f"{registry.host}/vol/data:v1"
        pull(c, ref)
        mount.image.image = mount.image.image.format(ref=ref, registry=registry.host)
        cfg = pod_config("imgvol-bad", log_directory=str(tmp_path))
        pod = c.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg)).pod_sandbox_id
        config = container_config("c", LOOP)
        config.mounts.append(mount)
        with pytest.raises(grpc.RpcError) as e:
            c.runtime.CreateContainer(pb.CreateContainerRequest(pod_sandbox_id=pod, config=config,
                                                                sandbox_config=cfg))
        assert e.value.code() == code, e.value.details()
        assert words in e.value.details()
        assert c.runtime.ListContainers(pb.ListContainersRequest()).containers == []
        assert os.listdir(Path(d.state_root) / "containers") == []
        assert mounts_under_bundles(d) == []
        c.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod))
        c.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod))


@pytest.mark.parametrize("point", ["ctr.create.after_image_volumes", "ctr.create.after_record_save"])
def test_crash_during_create_leaks_no_volume(crash_daemon, point, tmp_path):  # noqa: F811
    d = crash_daemon(point)
    load_image(d)
    cfg = pod_config("imgvol-crash", log_directory=str(tmp_path))
    config = container_config("c", LOOP)
    config.mounts.append(image_mount("crispy.test/busybox:1", sub="etc"))
    req = pb.CreateContainerRequest(config=config, sandbox_config=cfg)
    with d.client() as c:
        pod = c.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg)).pod_sandbox_id
        req.pod_sandbox_id = pod
        crash(d, lambda: c.runtime.CreateContainer(req))
    with d.client() as c:
        listed = c.runtime.ListContainers(pb.ListContainersRequest()).containers
        if not listed:
            # The start-up sweep unmounted the orphan bundle's volume.
            assert mounts_under_bundles(d) == []
        for x in listed:
            assert alive(info_of(c, x.id)["conmonPid"])
            c.runtime.RemoveContainer(pb.RemoveContainerRequest(container_id=x.id))
            assert mounts_under_bundles(d) == []
        ctr = c.runtime.CreateContainer(req).container_id
        c.runtime.StartContainer(pb.StartContainerRequest(container_id=ctr))
        out = exec_sync(c, ctr, ["cat", f"{VOLUME_PATH}/passwd"])
        assert out.exit_code == 0 and out.stdout.startswith(b"root:"), out
        assert_supervised_run(c, ctr)
        c.runtime.RemoveContainer(pb.RemoveContainerRequest(container_id=ctr))
        c.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod))
        c.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod))
    assert_nothing_left(d)
