"""Layers that try to fill the disk: sparse members (every GNU sparse
format, made by GNU tar itself) must unpack with holes, runs of zeros
must not take blocks, and layers expanding past images.max_layer_* limits
are refused with RESOURCE_EXHAUSTED, leaving nothing behind."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import grpc
import pytest

from cri.rpc import status_for
from images.digests import sha256_of
from images.holes import STRIDE, write_skipping_zeros
from images.layer_limits import LayerLimits, LayerTooBig
from images.unpack import BadLayer, unpack_layer
from tests import imagebuild as ib
from tests.integration.test_image_unpack import _blob

GiB = 1 << 30
MiB = 1 << 20
# Data GNU tar stores for the sparse member; everything else is holes.
SPARSE_DATA = {0: b"head" * 1024, GiB: b"middle" * 2000, 2 * GiB - 5000: b"tail!" * 1000}


@pytest.fixture
def tmp() -> Path:
    d = Path(tempfile.mkdtemp(prefix="crispy-bombs-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)



def sparse_tar(tmp: Path, fmt: str) -> bytes:
    """A tar holding one 2 GiB sparse file, written by GNU tar in `fmt`:
    "gnu" is the old GNU 'S' type, "0.0"/"0.1"/"1.0" the PAX versions."""
    src = tmp / f"src-{fmt}"
    src.mkdir()
    f = src / "sparse.img"
    with open(f, "wb") as out:
        out.truncate(2 * GiB)
        for off, data in SPARSE_DATA.items():
            out.seek(off)
            out.write(data)
    opts = ["--format=gnu"] if fmt == "gnu" else ["--format=posix", f"--sparse-version={fmt}"]
    tar = subprocess.run(["tar", "-c", "--sparse", *opts, "--owner=0", "--group=0", "--mtime=@1700000000",
                          "-C", str(src), "sparse.img"], capture_output=True, check=True).stdout
    shutil.rmtree(src)
    return tar


def test_sparse_source_tars_are_small_and_sparse(tmp):
    # The premise: GNU tar really stores these as sparse members.
    for fmt in ("gnu", "0.0", "0.1", "1.0"):
        tar = sparse_tar(tmp, fmt)
        assert len(tar) < 64 * 1024
        with tarfile.open(fileobj=io.BytesIO(tar)) as t:
            (m,) = t.getmembers()
            assert m.sparse and m.size == 2 * GiB
        assert len(ib.compress(tar, "gzip")) < 10 * 1024


@pytest.mark.parametrize("fmt", ["gnu", "0.0", "0.1", "1.0"])
def test_sparse_member_keeps_its_holes(tmp, fmt):
    tar = sparse_tar(tmp, fmt)
    dest = tmp / "snap"
    res = unpack_layer(_blob(tmp, tar), dest, sha256_of(tar))
    assert res.diff_id == sha256_of(tar)
    f = dest / "sparse.img"
    st = os.stat(f)
    assert st.st_size == 2 * GiB
    assert st.st_blocks * 512 < 1 * MiB, f"{st.st_blocks * 512} bytes allocated for a 2 GiB sparse file"
    assert st.st_mtime == ib.MTIME
    with open(f, "rb") as fh:
        for off, data in SPARSE_DATA.items():
            fh.seek(off)
            assert fh.read(len(data)) == data
        fh.seek(GiB // 2)
        assert fh.read(MiB) == bytes(MiB)  # a hole reads as zeros


def _sparse_tar_by_map(realsize: int, sparse_map: str, stored: bytes) -> bytes:
    """A PAX 0.1 sparse member with the map given verbatim."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        info = tarfile.TarInfo("GNUSparseFile.0/f")
        info.size = len(stored)
        info.pax_headers = {"GNU.sparse.map": sparse_map, "GNU.sparse.size": str(realsize), "GNU.sparse.name": "f"}
        t.addfile(info, io.BytesIO(stored))
        ok = tarfile.TarInfo("after")
        ok.size = 2
        t.addfile(ok, io.BytesIO(b"ok"))
    return buf.getvalue()


def test_hand_made_sparse_map_is_honoured(tmp):
    tar = _sparse_tar_by_map(10_000, "0,3,5000,4", b"abcWXYZ")
    dest = tmp / "snap"
    unpack_layer(_blob(tmp, tar), dest, None)
    assert (dest / "f").read_bytes() == b"abc" + bytes(4997) + b"WXYZ" + bytes(10_000 - 5004)
    assert (dest / "after").read_bytes() == b"ok"


@pytest.mark.parametrize("sparse_map, why", [
    ("0,10,5,10", "overlapping regions"),
    ("50,10,0,10", "regions out of order"),
    ("0,10,99995,10", "a region past the end of the file"),
    ("0,10,50,5000", "more data than is stored"),
])
def test_bad_sparse_maps_are_refused(tmp, sparse_map, why):
    tar = _sparse_tar_by_map(100_000, sparse_map, os.urandom(20))
    dest = tmp / "snap"
    with pytest.raises(BadLayer) as e:
        unpack_layer(_blob(tmp, tar), dest, None)
    assert "sparse map" in e.value.message, why
    assert not dest.exists()


def test_runs_of_zeros_take_no_blocks(tmp):
    data = os.urandom(100_000) + bytes(48 * MiB) + b"end" + bytes(3 * STRIDE)
    tar = ib.make_layer({"zeros": ib.File(data), "small": ib.File(bytes(100)), "empty": ib.File(b"")})
    dest = tmp / "snap"
    unpack_layer(_blob(tmp, tar), dest, sha256_of(tar))
    st = os.stat(dest / "zeros")
    assert st.st_size == len(data)
    assert st.st_blocks * 512 < 2 * MiB, f"{st.st_blocks * 512} bytes allocated for 48 MiB of zeros"
    with open(dest / "zeros", "rb") as fh:
        assert hashlib.sha256(fh.read()).digest() == hashlib.sha256(data).digest()
    assert (dest / "small").read_bytes() == bytes(100)
    assert (dest / "empty").read_bytes() == b""


@pytest.mark.parametrize("offset", [0, 1, STRIDE - 1, 12345])
def test_write_skipping_zeros_round_trips_any_alignment(tmp, offset):
    parts = [os.urandom(5), bytes(STRIDE * 3 + 7), os.urandom(STRIDE), bytes(STRIDE - 1), b"x", bytes(2 * STRIDE)]
    data = b"".join(parts)
    p = tmp / "f"
    fd = os.open(p, os.O_RDWR | os.O_CREAT | os.O_EXCL)
    try:
        # Fed in uneven slices of one buffer, as the layer stream does.
        pos = 0
        for cut in (3, STRIDE + 11, 2 * STRIDE, len(data)):
            write_skipping_zeros(fd, data, pos, min(cut, len(data)), offset + pos)
            pos = min(cut, len(data))
        os.ftruncate(fd, offset + len(data))
    finally:
        os.close(fd)
    assert p.read_bytes() == bytes(offset) + data


def _limits(max_bytes: int = 0, ratio: float = 0, floor: int = 0) -> LayerLimits:
    return LayerLimits(max_bytes=max_bytes, max_ratio=ratio, ratio_floor=floor)


@pytest.mark.parametrize("how", ["gzip", "zstd"])
def test_zero_bomb_is_refused_by_the_expansion_ratio(tmp, how):
    tar = ib.make_layer({"bomb": ib.File(bytes(64 * MiB))})
    blob = _blob(tmp, tar, how)
    assert blob.stat().st_size < 200 * 1024
    dest = tmp / "snap"
    with pytest.raises(LayerTooBig) as e:
        unpack_layer(blob, dest, sha256_of(tar), name="sha256:feedface", limits=_limits(ratio=100, floor=MiB))
    assert status_for(e.value)[0] == grpc.StatusCode.RESOURCE_EXHAUSTED
    msg = e.value.message
    assert "sha256:feedface" in msg and "images.max_layer_expansion_ratio" in msg
    size = blob.stat().st_size
    assert f"more than {max(MiB, 100 * size)} bytes from {size} compressed bytes" in msg
    assert not dest.exists()
    assert sorted(p.name for p in tmp.iterdir()) == [blob.name]


def test_repetitive_data_is_refused_by_the_byte_limit(tmp):
    # Not zeros, so holes would not save the disk: only the limit does.
    tar = ib.make_layer({"a": ib.File(b"crispy!!" * (4 * MiB))})
    dest = tmp / "snap"
    with pytest.raises(LayerTooBig) as e:
        unpack_layer(_blob(tmp, tar), dest, None, name="sha256:abc", limits=_limits(max_bytes=8 * MiB))
    assert "sha256:abc" in e.value.message and "images.max_layer_unpacked_bytes" in e.value.message
    assert str(8 * MiB) in e.value.message
    assert not dest.exists()


def test_limits_let_ordinary_and_small_layers_through(tmp):
    # Incompressible data far over the floor: ratio about 1.
    tar = ib.make_layer({"r": ib.File(os.urandom(4 * MiB))})
    unpack_layer(_blob(tmp, tar), tmp / "a", sha256_of(tar), limits=_limits(max_bytes=5 * MiB, ratio=2, floor=MiB))
    # Zeros, a ratio of ~1000, but under the floor.
    z = ib.make_layer({"z": ib.File(bytes(8 * MiB))})
    unpack_layer(_blob(tmp, z), tmp / "b", sha256_of(z), limits=_limits(ratio=10, floor=9 * MiB))
    # 0 means no limit.
    unpack_layer(_blob(tmp, z), tmp / "c", sha256_of(z), limits=_limits(max_bytes=0, ratio=0))
    # Exactly at the limit is allowed.
    unpack_layer(_blob(tmp, z), tmp / "d", sha256_of(z), limits=_limits(max_bytes=len(z)))
    with pytest.raises(LayerTooBig):
        unpack_layer(_blob(tmp, z), tmp / "e", sha256_of(z), limits=_limits(max_bytes=len(z) - 1))
    assert not (tmp / "e").exists()


def test_sparse_holes_do_not_count_against_the_limits(tmp):
    tar = sparse_tar(tmp, "1.0")
    dest = tmp / "snap"
    unpack_layer(_blob(tmp, tar), dest, sha256_of(tar), limits=_limits(max_bytes=MiB, ratio=10, floor=MiB))
    assert os.stat(dest / "sparse.img").st_size == 2 * GiB


def test_limit_keys_have_safe_defaults_and_refuse_negatives(tmp):
    from cri import config
    from runtime.errors import InvalidArgument
    cfg = config.Config()
    limits = LayerLimits.from_config(cfg.images)
    assert limits == LayerLimits(max_bytes=64 << 30, max_ratio=100, ratio_floor=512 * MiB)
    # The attack in the report: ~2 MB of gzip unpacking to 2 GiB.
    cap = limits.cap("sha256:x", 2 * MiB)
    assert cap is not None and cap.limit == 512 * MiB
    p = tmp / "c.toml"
    p.write_text("[images]\nmax_layer_expansion_ratio = 20\nmax_layer_unpacked_bytes = 0\n")
    loaded = config.load(path=str(p))
    assert loaded.images.max_layer_expansion_ratio == 20.0 and loaded.images.max_layer_unpacked_bytes == 0
    assert LayerLimits.from_config(loaded.images).cap("sha256:x", 100 * MiB).limit == 2000 * MiB
    p.write_text("[images]\nlayer_expansion_floor_bytes = -1\n")
    with pytest.raises(InvalidArgument) as e:
        config.load(path=str(p))
    assert "images.layer_expansion_floor_bytes" in e.value.message
