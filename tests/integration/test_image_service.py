"""ImageService through the real daemon: images imported with `crispy load`
(while the daemon runs), listed, inspected, untagged, removed, and kept
across a restart."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from cri.proto import api_pb2 as pb
from tests import imagebuild as ib
from tests.daemon_proc import DaemonProcess

pytestmark = pytest.mark.integration


def crispy_load(d: DaemonProcess, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cri.cli", "--data-root", d.data_root, "--state-root", d.state_root,
                           "--socket", d.socket, "load", str(path)], capture_output=True, text=True, timeout=120)


def spec(name: str) -> pb.ImageSpec:
    return pb.ImageSpec(image=name)


def image(tag: str, user: str = "") -> ib.Image:
    cfg = {"Cmd": ["/bin/sh"], "Env": [f"TAG={tag}"]}
    if user:
        cfg["User"] = user
    return ib.build_image([ib.make_layer(ib.busybox_entries()), ib.make_layer({"tag": ib.File(tag.encode())})], config=cfg)


def test_load_list_status_remove_and_restart(daemon: DaemonProcess, daemon_base: Path):
    c = daemon.client()
    img = image("v1", user="1000:1000")
    ib.write_oci_layout(img, daemon_base / "layout", "docker.io/library/busybox:latest")
    ib.write_docker_archive(image("named", user="nobody"), daemon_base / "save.tar", "localhost:5000/named:2")

    out = crispy_load(daemon, daemon_base / "layout")
    assert out.returncode == 0, out.stderr
    assert img.config_digest in out.stdout
    assert crispy_load(daemon, daemon_base / "save.tar").returncode == 0

    listed = c.image.ListImages(pb.ListImagesRequest(), timeout=30).images
    assert sorted(t for i in listed for t in i.repo_tags) == ["docker.io/library/busybox:latest", "localhost:5000/named:2"]
    only = c.image.ListImages(pb.ListImagesRequest(filter=pb.ImageFilter(image=spec("busybox"))), timeout=30).images
    assert [i.id for i in only] == [img.config_digest]

    st = c.image.ImageStatus(pb.ImageStatusRequest(image=spec("busybox"), verbose=True), timeout=30)
    assert st.image.id == img.config_digest
    assert st.image.repo_digests == [f"docker.io/library/busybox@{img.digest}"]
    assert st.image.uid.value == 1000 and st.image.username == ""
    assert st.image.size > 1_000_000
    info = json.loads(st.info["info"])
    assert info["imageSpec"]["config"]["Env"] == ["TAG=v1"]
    assert len(info["layerDirs"]) == 2 and Path(info["layerDirs"][0], "bin/busybox").is_file()
    named = c.image.ImageStatus(pb.ImageStatusRequest(image=spec("localhost:5000/named:2")), timeout=30).image
    assert named.username == "nobody" and not named.HasField("uid")

    absent = c.image.ImageStatus(pb.ImageStatusRequest(image=spec("nothere:1")), timeout=30)
    assert not absent.HasField("image")
    with pytest.raises(grpc.RpcError) as e:
        c.image.ImageStatus(pb.ImageStatusRequest(image=spec("Bad Name")), timeout=30)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    streamed = [i.id for r in c.image.StreamImages(pb.StreamImagesRequest(), timeout=30) for i in r.images]
    assert sorted(streamed) == sorted(i.id for i in listed)

    fs = c.image.ImageFsInfo(pb.ImageFsInfoRequest(), timeout=30).image_filesystems
    assert len(fs) == 1 and fs[0].used_bytes.value > 2_000_000 and fs[0].inodes_used.value > 300
    assert Path(fs[0].fs_id.mountpoint).is_dir()

    # Restart: both images come back.
    daemon.stop()
    d2 = DaemonProcess(daemon_base, config_text='[images]\npinned_images = ["busybox"]\n').start()
    try:
        c2 = d2.client()
        after = c2.image.ListImages(pb.ListImagesRequest(), timeout=30).images
        assert sorted((list(i.repo_tags), i.pinned) for i in after) == [
            (["docker.io/library/busybox:latest"], True), (["localhost:5000/named:2"], False)]
        c2.image.RemoveImage(pb.RemoveImageRequest(image=spec("localhost:5000/named:2")), timeout=30)
        c2.image.RemoveImage(pb.RemoveImageRequest(image=spec(img.config_digest)), timeout=30)
        c2.image.RemoveImage(pb.RemoveImageRequest(image=spec(img.config_digest)), timeout=30)  # idempotent
        assert list(c2.image.ListImages(pb.ListImagesRequest(), timeout=30).images) == []
        snaps = Path(d2.data_root, "images", "snapshots")
        assert [p for p in snaps.iterdir()] == []
        c2.close()
    finally:
        d2.stop()


def test_load_reports_bad_input(daemon: DaemonProcess, daemon_base: Path):
    (daemon_base / "junk.tar").write_bytes(b"nope")
    out = crispy_load(daemon, daemon_base / "junk.tar")
    assert out.returncode == 1
    assert "not a tar archive" in out.stderr and "Traceback" not in out.stderr


def test_pull_image_through_the_daemon(daemon: DaemonProcess):
    from tests.registry import LocalRegistry
    img = image("pulled")
    with LocalRegistry(username="u", password="p") as reg:
        reg.push("team/app", "1.0", img)
        c = daemon.client()
        ref = f"{reg.host}/team/app:1.0"
        with pytest.raises(grpc.RpcError) as e:
            c.image.PullImage(pb.PullImageRequest(image=spec(ref)), timeout=60)
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
        resp = c.image.PullImage(pb.PullImageRequest(image=spec(ref), auth=pb.AuthConfig(
            username="u", password="p", server_address=reg.host)), timeout=60)
        assert resp.image_ref == img.config_digest
        st = c.image.ImageStatus(pb.ImageStatusRequest(image=spec(f"{reg.host}/team/app@{img.digest}")), timeout=30)
        assert st.image.repo_tags == [ref]
        with pytest.raises(grpc.RpcError) as e:
            c.image.PullImage(pb.PullImageRequest(image=spec(f"{reg.host}/team/none:1"), auth=pb.AuthConfig(
                username="u", password="p")), timeout=60)
        assert e.value.code() == grpc.StatusCode.NOT_FOUND
    c.image.RemoveImage(pb.RemoveImageRequest(image=spec(f"{reg.host}/team/app@{img.digest}")), timeout=30)
    assert list(c.image.ListImages(pb.ListImagesRequest(), timeout=30).images) == []


def test_pull_of_invalid_reference_is_invalid_argument(daemon: DaemonProcess):
    c = daemon.client()
    with pytest.raises(grpc.RpcError) as e:
        c.image.PullImage(pb.PullImageRequest(image=spec("UPPER/Case:x y")), timeout=30)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_daemon_killed_mid_pull_leaves_no_image_and_resumes(daemon_base: Path):
    import os
    import signal
    import time

    from tests.registry import LocalRegistry
    from tests.stub_registry import StubRegistry
    big = ib.make_layer({"big": ib.File(os.urandom(3_000_000))})
    img = ib.build_image([ib.make_layer(ib.busybox_entries()), big], compression="none")
    big_digest = ib.digest_of(big)
    with LocalRegistry() as reg, StubRegistry(reg.url) as stub:
        reg.push("app/big", "v1", img)
        stub.faults.stall = {f"/blobs/{big_digest}": 30.0}
        stub.faults.stall_fraction = 0.5
        d = DaemonProcess(daemon_base).start()
        try:
            c = d.client()
            call = c.image.PullImage.future(pb.PullImageRequest(image=spec(f"{stub.host}/app/big:v1")), timeout=60)
            partial = Path(d.data_root, "images", "ingest", big_digest.split(":")[1] + ".partial")
            deadline = time.monotonic() + 30
            while not (partial.exists() and partial.stat().st_size >= 1 << 20):
                assert time.monotonic() < deadline, d.log()
                time.sleep(0.05)
            d.stop(signal.SIGKILL)
            with pytest.raises(grpc.RpcError):
                call.result()
            c.close()
        finally:
            d.stop()
        stub.faults.stall = {}
        d2 = DaemonProcess(daemon_base).start()
        try:
            c2 = d2.client()
            assert list(c2.image.ListImages(pb.ListImagesRequest(), timeout=30).images) == []
            assert not [p for p in Path(d2.data_root, "images", "snapshots").iterdir() if p.name.startswith(".tmp-")]
            before = len(stub.requests)
            resp = c2.image.PullImage(pb.PullImageRequest(image=spec(f"{stub.host}/app/big:v1")), timeout=60)
            assert resp.image_ref == img.config_digest
            ranges = [h.get("Range") for _, p, h in stub.requests[before:] if big_digest in p]
            assert len(ranges) == 1 and ranges[0] is not None and ranges[0].startswith("bytes=") and ranges[0] != "bytes=0-"
            c2.close()
        finally:
            d2.stop()
