"""ImageManager on a temp data root: import of OCI layouts and docker save
archives, name resolution, untag/remove semantics, GC, restart."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import pytest

from cri.config import Config
from images.digests import ContentMismatch
from images.manager import ImageManager
from runtime.errors import FailedPrecondition, InvalidArgument, NotFound
from tests import imagebuild as ib


@pytest.fixture
def tmp() -> Path:
    d = Path(tempfile.mkdtemp(prefix="crispy-img-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def run(coro):
    return asyncio.run(coro)


def manager(tmp: Path, users: dict[str, list[str]] | None = None) -> ImageManager:
    m = ImageManager(Config(), tmp / "data", lambda image_id: (users or {}).get(image_id, []))
    run(m.open())
    return m


def two_layer_image(tag: str = "one", **kw) -> ib.Image:
    base = ib.make_layer(ib.busybox_entries())
    top = ib.make_layer({"etc": ib.Dir(), "etc/motd": ib.File(tag.encode()), ".wh.home": ib.File(b"")})
    return ib.build_image([base, top], config={"Cmd": ["/bin/sh"], "User": "1000", "Env": [f"TAG={tag}"]}, **kw)


def test_import_oci_layout_and_resolve_every_way(tmp):
    img = two_layer_image()
    ib.write_oci_layout(img, tmp / "layout", "docker.io/library/busybox:latest")
    m = manager(tmp)
    (rec,) = run(m.import_archive(str(tmp / "layout")))
    assert rec.id == img.config_digest
    assert rec.repo_tags == ["docker.io/library/busybox:latest"]
    assert rec.repo_digests == [f"docker.io/library/busybox@{img.digest}"]
    assert rec.config["User"] == "1000" and rec.config["Env"] == ["TAG=one"]
    assert len(rec.chain_ids) == 2 and rec.chain_ids[0] == rec.diff_ids[0]
    assert rec.size == len(img.config) + sum(len(b) for d, b in img.blobs.items() if d != img.config_digest)
    for name in ["busybox", "busybox:latest", "docker.io/library/busybox", rec.id, rec.hex, rec.hex[:12],
                 f"busybox@{img.digest}", f"docker.io/library/busybox@{img.digest}"]:
        assert run(m.get(name)).id == rec.id, name
    with pytest.raises(NotFound) as e:
        run(m.get("busybox:other"))
    assert "crispy load" in e.value.message
    with pytest.raises(InvalidArgument):
        run(m.get("Not A Name"))
    dirs = m.layer_dirs(rec)
    assert dirs == [str(m.snapshots.path(c)) for c in rec.chain_ids]
    assert (Path(dirs[0]) / "bin/busybox").is_file()
    assert (Path(dirs[1]) / "etc/motd").read_bytes() == b"one"
    assert os.lstat(Path(dirs[1]) / "home").st_rdev == 0


def test_import_tarred_layout_with_index_picks_this_platform(tmp):
    amd = two_layer_image("amd")
    arm = two_layer_image("arm", arch="arm64")
    index = ib.build_index([(arm, {"os": "linux", "architecture": "arm64", "variant": "v8"}),
                            (amd, {"os": "linux", "architecture": "amd64"})])
    ib.write_oci_layout(index, tmp / "layout", "example.com/multi:2")
    with tarfile.open(tmp / "layout.tar", "w") as tar:
        tar.add(tmp / "layout", arcname=".")
    m = manager(tmp)
    (rec,) = run(m.import_archive(str(tmp / "layout.tar")))
    assert rec.id == amd.config_digest
    assert rec.repo_digests == [f"example.com/multi@{index.digest}"]
    assert run(m.get("example.com/multi:2")).config["Env"] == ["TAG=amd"]
    # Blobs of the other platform are not copied.
    assert not m.content.has(arm.config_digest)


def test_import_docker_save(tmp):
    img = two_layer_image("saved", docker=True)
    ib.write_docker_archive(img, tmp / "save.tar", "localhost:5000/app:v1")
    m = manager(tmp)
    (rec,) = run(m.import_archive(str(tmp / "save.tar")))
    assert rec.id == img.config_digest
    assert rec.repo_tags == ["localhost:5000/app:v1"]
    assert (Path(m.layer_dirs(rec)[1]) / "etc/motd").read_bytes() == b"saved"


def test_bad_archives_are_clear_errors(tmp):
    m = manager(tmp)
    with pytest.raises(InvalidArgument):
        run(m.import_archive(str(tmp / "missing")))
    (tmp / "junk").write_bytes(b"not a tar")
    with pytest.raises(InvalidArgument):
        run(m.import_archive(str(tmp / "junk")))
    img = two_layer_image()
    ib.write_oci_layout(img, tmp / "layout", "x.io/a:b")
    layer = json.loads(img.manifest)["layers"][1]["digest"].split(":")[1]
    p = tmp / "layout/blobs/sha256" / layer
    p.write_bytes(p.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(ContentMismatch):
        run(m.import_archive(str(tmp / "layout")))
    assert m.list() == []
    # Nothing half-made survives: no record, and GC leaves no orphan snapshots.
    run(m.collect_garbage())
    assert m.snapshots.list_chain_ids() == []


def test_hostile_layer_in_archive_leaves_no_image(tmp):
    evil = ib.make_layer({"x": ib.Symlink("/etc"), "x/pwned": ib.File(b"!")})
    img = ib.build_image([ib.make_layer({"ok": ib.File(b"1")}), evil])
    ib.write_oci_layout(img, tmp / "layout", "x.io/evil:1")
    m = manager(tmp)
    with pytest.raises(Exception) as e:
        run(m.import_archive(str(tmp / "layout")))
    assert "symlink" in str(e.value)
    assert not Path("/etc/pwned").exists()
    assert m.list() == []
    snaps = os.listdir(m.snapshots.dir)
    assert not any(n.startswith(".tmp-") for n in snaps)


def test_untag_remove_and_gc(tmp):
    img = two_layer_image()
    ib.write_oci_layout(img, tmp / "l1", "x.io/a:1")
    ib.write_oci_layout(img, tmp / "l2", "x.io/a:2")
    users: dict[str, list[str]] = {}
    m = manager(tmp, users)
    run(m.import_archive(str(tmp / "l1")))
    (rec,) = run(m.import_archive(str(tmp / "l2")))
    assert sorted(rec.repo_tags) == ["x.io/a:1", "x.io/a:2"]
    run(m.remove("x.io/a:1"))  # one tag of two: untag only
    assert run(m.get(rec.id)).repo_tags == ["x.io/a:2"]
    users[rec.id] = ["ctr-1"]
    with pytest.raises(FailedPrecondition) as e:
        run(m.remove("x.io/a:2"))
    assert "ctr-1" in e.value.message
    users.clear()
    run(m.remove("x.io/a:2"))
    assert m.list() == []
    assert m.content.list_digests() == [] and m.snapshots.list_chain_ids() == []
    run(m.remove("x.io/a:2"))  # idempotent
    run(m.remove(rec.id))


def test_tag_moves_to_the_newer_image_and_gc_keeps_shared_layers(tmp):
    a, b = two_layer_image("a"), two_layer_image("b")
    ib.write_oci_layout(a, tmp / "la", "x.io/app:latest")
    ib.write_oci_layout(b, tmp / "lb", "x.io/app:latest")
    m = manager(tmp)
    (ra,) = run(m.import_archive(str(tmp / "la")))
    (rb,) = run(m.import_archive(str(tmp / "lb")))
    assert run(m.get("x.io/app")).id == rb.id
    assert run(m.get(ra.id)).repo_tags == []
    run(m.remove(ra.id))
    # The base layer is shared with b and must survive.
    assert all(Path(d).is_dir() for d in m.layer_dirs(rb))
    assert ra.chain_ids[1] not in m.snapshots.list_chain_ids()


def test_records_survive_restart_and_other_processes_see_imports(tmp):
    img = two_layer_image()
    ib.write_oci_layout(img, tmp / "layout", "x.io/a:1")
    m1 = manager(tmp)
    assert m1.list() == []
    # A second manager on the same root plays `crispy load` beside the daemon.
    m2 = manager(tmp)
    (rec,) = run(m2.import_archive(str(tmp / "layout")))
    assert run(m1.get("x.io/a:1")).id == rec.id
    m3 = manager(tmp)
    assert [r.id for r in m3.list()] == [rec.id]
    assert m3.list()[0].chain_ids == rec.chain_ids


def test_open_cleans_interrupted_work(tmp):
    m = manager(tmp)
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = m.snapshots.dir / f".tmp-{'a' * 64}-{dead.pid}-0000"
    stale.mkdir()
    (stale / "half").write_bytes(b"x")
    orphan = m.snapshots.dir / ("b" * 64)
    orphan.mkdir()
    run(m.open())
    assert not stale.exists() and not orphan.exists()
