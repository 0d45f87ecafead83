"""Image volumes (`Mount.image`): the checks of runtime/image_volumes.py,
their OCI spec entry, the record, RemoveImage's users, and the create /
remove lifecycle with the mount stood in for (it needs root; the
integration tests mount for real)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from cri.proto import api_pb2 as pb
from runtime import image_volumes
from runtime.errors import InvalidArgument, NotFound
from runtime.index import RecordIndex
from runtime.store import ContainerRecord, encode, from_dict
from tests.unit import lifecycle_kit as kit
from tests.unit.test_oci_spec import build_spec, request
from tests.unit.test_oci_spec import rootfs as rootfs  # noqa: F401 - the fixture

VOL_IMAGE = "registry.test/data:1"
VOL_IMAGE_ID = "sha256:" + "ef" * 32


def image_mount(path: str = "/data", image: str = VOL_IMAGE, readonly: bool = True, sub: str = "",
                host_path: str = "") -> pb.Mount:
    return pb.Mount(container_path=path, readonly=readonly, image=pb.ImageSpec(image=image), image_sub_path=sub,
                    host_path=host_path)


# ---- the checks ---------------------------------------------------------------


def test_requests_of_a_config() -> None:
    config = pb.ContainerConfig(mounts=[pb.Mount(container_path="/h", host_path="/tmp"), image_mount(),
                                        image_mount("/etc-only", sub="./etc//ssl/")])
    assert image_volumes.requests(config) == [
        image_volumes.VolumeRequest("/data", VOL_IMAGE, ""),
        image_volumes.VolumeRequest("/etc-only", VOL_IMAGE, "etc/ssl")]


@pytest.mark.parametrize("mount, message", [
    (image_mount(readonly=False), "read-only; set readonly: true"),
    (image_mount(host_path="/srv"), "both host_path"),
    (image_mount(sub="/etc"), "relative to the image's root"),
    (image_mount(sub="etc/../../x"), "must not contain '..'"),
    (image_mount("data"), "absolute path"),
    (pb.Mount(container_path="/h", host_path="/tmp", image_sub_path="etc"), "only applies to image volumes"),
])
def test_refused_requests(mount: pb.Mount, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        image_volumes.requests(pb.ContainerConfig(mounts=[mount]))


def test_sub_dir_resolves_inside_the_image(tmp_path: Path) -> None:
    root = tmp_path / "image"
    (root / "usr/share").mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "etc/passwd").write_text("")
    os.symlink("/usr/share", root / "share")       # absolute: the image's /usr/share, not the host's
    os.symlink("../../../../..", root / "up")      # cannot climb out of the image
    r = str(root)
    assert image_volumes._sub_dir(r, "etc") == f"{r}/etc"
    assert image_volumes._sub_dir(r, "share") == f"{r}/usr/share"
    assert image_volumes._sub_dir(r, "up") == r
    with pytest.raises(InvalidArgument, match="'missing' does not exist in the image"):
        image_volumes._sub_dir(r, "missing")
    with pytest.raises(InvalidArgument, match="is a regular file in the image, not a directory"):
        image_volumes._sub_dir(r, "etc/passwd")


# ---- the spec, the record, RemoveImage ------------------------------------------


def test_spec_binds_the_mounted_volume_read_only(rootfs: str) -> None:  # noqa: F811
    config = pb.ContainerConfig(mounts=[image_mount("/data")])
    spec = build_spec(request(rootfs, config, image_volumes={"/data": "/run/b/image-volumes/0/etc"}))
    entry = next(m for m in spec["mounts"] if m["destination"] == "/data")
    assert entry == {"destination": "/data", "type": "bind", "source": "/run/b/image-volumes/0/etc",
                     "options": ["rbind", "rprivate", "ro"]}
    with pytest.raises(InvalidArgument, match="was not mounted"):
        build_spec(request(rootfs, config))


def test_old_records_load_without_image_volumes() -> None:
    rec = from_dict(ContainerRecord, {"id": "c", "sandbox_id": "p", "name": "n", "attempt": 0, "config": {},
                                      "created_at": 1, "image_id": "sha256:1"})
    assert rec.image_volumes == []
    # Written back as the older crispy wrote it, until a volume is recorded.
    assert "image_volumes" not in json.loads(encode(rec))
    rec.image_volumes = [{"container_path": "/d", "image_id": "sha256:v", "sub_path": "", "target": "/x"}]
    assert json.loads(encode(rec))["image_volumes"] == rec.image_volumes
    fresh = ContainerRecord(id="c", sandbox_id="p", name="n", attempt=0, config={}, created_at=1)
    assert json.loads(encode(fresh))["image_volumes"] == []


def test_image_users_count_volume_users() -> None:
    index = RecordIndex()
    index.containers["a"] = ContainerRecord(id="a", sandbox_id="p", name="a", attempt=0, config={}, created_at=1,
                                            image_id="sha256:root")
    index.containers["b"] = ContainerRecord(
        id="b", sandbox_id="p", name="b", attempt=0, config={}, created_at=1, image_id="sha256:root",
        image_volumes=[{"container_path": "/d", "image_id": "sha256:vol", "sub_path": "", "target": "/x"}])
    assert index.image_users("sha256:root") == ["a", "b"]
    assert index.image_users("sha256:vol") == ["b"]
    assert index.image_users("sha256:other") == []


# ---- create and remove ------------------------------------------------------------


class FakeVolumes:
    """A directory per volume instead of an overlay; `mounted` is what a
    real node would still have mounted."""

    def __init__(self) -> None:
        self.mounted: dict[str, list[str]] = {}
        self.missing_sub_path = False

    def mount(self, layers: list[str], target: str, sub_path: str) -> str:
        os.makedirs(target, exist_ok=True)
        self.mounted[target] = layers
        if self.missing_sub_path:
            raise InvalidArgument(f"image_sub_path {sub_path!r} does not exist in the image")
        return os.path.join(target, sub_path) if sub_path else target

    def unmount(self, target: str) -> None:
        self.mounted.pop(target, None)


def _with_volume_image(node: kit.Node, life: kit.Lifecycle) -> FakeVolumes:
    node.images.images[VOL_IMAGE] = SimpleNamespace(id=VOL_IMAGE_ID, repo_digests=[], config={})
    volumes = FakeVolumes()
    life.containers.volume_mounts = volumes
    return volumes


def _request(pod_id: str, *mounts: pb.Mount) -> pb.CreateContainerRequest:
    req = kit.container_request(pod_id)
    req.config.mounts.extend(mounts)
    return req


def test_create_records_and_remove_unmounts(tmp_path: Path) -> None:
    async def body(node: kit.Node, life: kit.Lifecycle) -> None:
        volumes = _with_volume_image(node, life)
        pod = await life.run_pod()
        ctr_id = await life.containers.create(_request(pod, image_mount("/data", sub="etc")))
        ctr = life.ctr(ctr_id)
        target = image_volumes.target_of(ctr.bundle, 0)
        assert ctr.image_volumes == [{"container_path": "/data", "image_id": VOL_IMAGE_ID, "sub_path": "etc",
                                      "target": target}]
        assert volumes.mounted == {target: [str(node.images.layer_dir)]}
        # The status reports the image mounted: its id, as PullImage returned it.
        assert ctr.mounts[-1]["image"] == {"image": VOL_IMAGE, "image_ref": VOL_IMAGE_ID}
        spec = json.loads((Path(ctr.bundle) / "config.json").read_text())
        assert {"destination": "/data", "type": "bind", "source": f"{target}/etc",
                "options": ["rbind", "rprivate", "ro"]} in spec["mounts"]
        # The record on disk holds the volumes: a restarted daemon unmounts them.
        life = await life.restart()
        life.containers.volume_mounts = volumes
        assert life.ctr(ctr_id).image_volumes == ctr.image_volumes
        assert life.index.image_users(VOL_IMAGE_ID) == [ctr_id]
        await life.containers.remove(ctr_id)
        assert volumes.mounted == {}
        assert life.index.image_users(VOL_IMAGE_ID) == []
        assert not os.path.exists(ctr.bundle)
    kit.run(tmp_path, body)


def test_refusals_leave_nothing(tmp_path: Path) -> None:
    async def body(node: kit.Node, life: kit.Lifecycle) -> None:
        volumes = _with_volume_image(node, life)
        pod = await life.run_pod()
        before = life.on_disk()
        with pytest.raises(InvalidArgument, match="read-only"):
            await life.containers.create(_request(pod, image_mount(readonly=False)))
        with pytest.raises(NotFound, match="for the image volume at /data is not present; pull it first"):
            await life.containers.create(_request(pod, image_mount(image="registry.test/absent:1")))
        volumes.missing_sub_path = True
        with pytest.raises(InvalidArgument, match="does not exist in the image"):
            await life.containers.create(_request(pod, image_mount(sub="not-existing")))
        assert volumes.mounted == {}
        assert life.on_disk() == before
        assert life.index.containers == {}
    kit.run(tmp_path, body)
