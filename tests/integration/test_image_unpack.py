"""Layer extraction into overlayfs-form snapshot dirs (needs root: device
nodes, owners and trusted.* xattrs)."""

from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
import tarfile
import tempfile
from pathlib import Path

import pytest

from images.digests import ContentMismatch, sha256_of
from images.unpack import BadLayer, UnsafeLayer, unpack_layer
from tests import imagebuild as ib


@pytest.fixture
def tmp() -> Path:
    d = Path(tempfile.mkdtemp(prefix="crispy-unpack-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _blob(tmp: Path, tar: bytes, how: str = "gzip") -> Path:
    p = tmp / f"blob-{os.urandom(4).hex()}"
    p.write_bytes(ib.compress(tar, how))
    return p


def _raw_tar(members: list[tuple[str, str, str]]) -> bytes:
    """(name, type, linkname) with names exactly as given (no cleaning)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, link in members:
            info = tarfile.TarInfo(name)
            data = b""
            if kind == "file":
                data = b"evil"
                info.size = len(data)
            elif kind == "dir":
                info.type = tarfile.DIRTYPE
            elif kind == "sym":
                info.type, info.linkname = tarfile.SYMTYPE, link
            elif kind == "hard":
                info.type, info.linkname = tarfile.LNKTYPE, link
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.mark.parametrize("how", ["gzip", "zstd", "none"])
def test_unpacks_every_kind_of_entry(tmp, how):
    tar = ib.make_layer({
        "etc": ib.Dir(0o751, uid=0, gid=0),
        "etc/conf": ib.File(b"hello", 0o640, uid=1000, gid=2000, xattrs={"user.note": "kept", "trusted.crispy": "t"}),
        "etc/suid": ib.File(b"s", 0o4755, uid=0, gid=0),
        "etc/hard": ib.Hardlink("etc/conf"),
        "etc/link": ib.Symlink("conf"),
        "etc/dangling": ib.Symlink("/nowhere/at/all"),
        "dev": ib.Dir(),
        "dev/null": ib.CharDevice(1, 3, 0o666),
        "deep/implicit/file": ib.File(b"x"),
        "ro": ib.Dir(0o555),
        "ro/inside": ib.File(b"y"),
    })
    dest = tmp / "snap"
    res = unpack_layer(_blob(tmp, tar, how), dest, sha256_of(tar))
    assert res.diff_id == sha256_of(tar)
    conf = dest / "etc/conf"
    st = os.lstat(conf)
    assert conf.read_bytes() == b"hello"
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime) == (0o640, 1000, 2000, ib.MTIME)
    assert os.getxattr(conf, "user.note") == b"kept"
    assert os.getxattr(conf, "trusted.crispy") == b"t"
    assert stat.S_IMODE(os.lstat(dest / "etc/suid").st_mode) == 0o4755
    assert os.lstat(dest / "etc/hard").st_ino == st.st_ino and st.st_nlink == 2
    assert os.readlink(dest / "etc/link") == "conf"
    assert os.readlink(dest / "etc/dangling") == "/nowhere/at/all"
    assert os.lstat(dest / "etc/link").st_mtime == ib.MTIME
    dev = os.lstat(dest / "dev/null")
    assert stat.S_ISCHR(dev.st_mode) and (os.major(dev.st_rdev), os.minor(dev.st_rdev)) == (1, 3)
    assert stat.S_IMODE(dev.st_mode) == 0o666
    etc = os.lstat(dest / "etc")
    assert stat.S_IMODE(etc.st_mode) == 0o751 and etc.st_mtime == ib.MTIME
    assert stat.S_IMODE(os.lstat(dest / "ro").st_mode) == 0o555
    assert (dest / "ro/inside").read_bytes() == b"y"
    assert (dest / "deep/implicit/file").read_bytes() == b"x"


def test_whiteouts_become_overlay_form(tmp):
    tar = ib.make_layer({
        "a": ib.Dir(),
        "a/.wh.gone": ib.File(b""),
        "b": ib.Dir(),
        "b/new": ib.File(b"n"),
        "b/.wh..wh..opq": ib.File(b""),
        ".wh.topfile": ib.File(b""),
    })
    dest = tmp / "snap"
    unpack_layer(_blob(tmp, tar), dest, None)
    wh = os.lstat(dest / "a/gone")
    assert stat.S_ISCHR(wh.st_mode) and wh.st_rdev == 0
    assert stat.S_ISCHR(os.lstat(dest / "topfile").st_mode)
    assert os.getxattr(dest / "b", "trusted.overlay.opaque") == b"y"
    assert (dest / "b/new").read_bytes() == b"n"
    names = {p.name for p in dest.rglob("*")}
    assert not any(n.startswith(".wh.") for n in names)


def test_layer_cannot_set_overlay_xattrs(tmp):
    tar = ib.make_layer({"d": ib.Dir(), "d/f": ib.File(b"x", xattrs={"trusted.overlay.redirect": "/etc"})})
    dest = tmp / "snap"
    unpack_layer(_blob(tmp, tar), dest, None)
    with pytest.raises(OSError):
        os.getxattr(dest / "d/f", "trusted.overlay.redirect")


@pytest.mark.parametrize("members", [
    [("../escape", "file", "")],
    [("a/../../escape", "file", "")],
    [("/etc/escape", "file", "")],
    [("link", "sym", "/tmp"), ("link/escape", "file", "")],
    [("d", "dir", ""), ("d/up", "sym", "../.."), ("d/up/escape", "file", "")],
    [("hl", "hard", "../../etc/passwd")],
    [("hl", "hard", "/etc/passwd")],
    [("link", "sym", "/etc"), ("hl", "hard", "link/passwd")],
])
def test_hostile_members_fail_and_leave_nothing(tmp, members):
    outside = tmp / "outside"
    outside.mkdir()
    dest = outside / "inner" / "snap"
    dest.parent.mkdir()
    with pytest.raises(UnsafeLayer) as e:
        unpack_layer(_blob(tmp, _raw_tar(members)), dest, None)
    assert "outside its layer" in e.value.message or "symlink" in e.value.message
    assert not dest.exists()
    assert sorted(p.name for p in outside.rglob("*")) == ["inner"]
    assert not Path("/tmp/escape").exists() and not Path("/etc/escape").exists()


def test_diff_id_mismatch_is_refused(tmp):
    tar = ib.make_layer({"f": ib.File(b"x")})
    dest = tmp / "snap"
    with pytest.raises(ContentMismatch):
        unpack_layer(_blob(tmp, tar), dest, sha256_of(b"something else"))
    assert not dest.exists()


def test_truncated_layer_is_refused(tmp):
    tar = ib.make_layer({"f": ib.File(os.urandom(200_000))})
    blob = _blob(tmp, tar)
    blob.write_bytes(blob.read_bytes()[:50_000])
    dest = tmp / "snap"
    with pytest.raises((BadLayer, ContentMismatch)):
        unpack_layer(blob, dest, sha256_of(tar))
    assert not dest.exists()


def test_uncompressed_layer_cut_inside_a_file_is_refused(tmp):
    tar = ib.make_layer({"a": ib.File(b"x" * 5000), "f": ib.File(os.urandom(200_000))})
    blob = tmp / "cut"
    blob.write_bytes(tar[:100_000])
    dest = tmp / "snap"
    with pytest.raises(BadLayer) as e:
        unpack_layer(blob, dest, None)
    assert "truncated" in e.value.message
    assert not dest.exists()


def test_garbage_is_refused(tmp):
    blob = tmp / "garbage"
    blob.write_bytes(b"\x1f\x8bnot really gzip" * 100)
    with pytest.raises(BadLayer):
        unpack_layer(blob, tmp / "snap", None)
    assert not (tmp / "snap").exists()


@pytest.mark.integration
def test_snapshots_work_as_overlay_lower_dirs(tmp):
    lower = ib.make_layer({
        "keep": ib.File(b"k"), "gone": ib.File(b"g"),
        "dir": ib.Dir(), "dir/old1": ib.File(b"1"), "dir/old2": ib.File(b"2"),
    })
    upper = ib.make_layer({".wh.gone": ib.File(b""), "dir": ib.Dir(), "dir/.wh..wh..opq": ib.File(b""),
                           "dir/new": ib.File(b"n")})
    l0, l1 = tmp / "l0", tmp / "l1"
    unpack_layer(_blob(tmp, lower), l0, None)
    unpack_layer(_blob(tmp, upper), l1, None)
    merged = tmp / "merged"
    merged.mkdir()
    # lowerdir lists the top layer first.
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", f"lowerdir={l1}:{l0}", str(merged)], check=True)
    try:
        assert (merged / "keep").read_bytes() == b"k"
        assert not (merged / "gone").exists()
        assert sorted(os.listdir(merged / "dir")) == ["new"]
    finally:
        subprocess.run(["umount", str(merged)], check=True)
