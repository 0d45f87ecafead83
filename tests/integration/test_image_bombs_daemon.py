"""Disk-filling layers pulled through the real daemon from the loopback
registry: a sparse member stays sparse, a zero bomb over the configured
expansion ratio fails PullImage with RESOURCE_EXHAUSTED naming the layer
and leaves no image or half-unpacked layer, and the same pull works once
an operator raises the limit."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import grpc
import pytest

from cri.proto import api_pb2 as pb
from images.digests import chain_ids
from tests import imagebuild as ib
from tests.daemon_proc import DaemonProcess
from tests.registry import LocalRegistry

pytestmark = pytest.mark.integration

MiB = 1 << 20
SPARSE_SIZE = 2 << 30
BOMB_ZEROS = 64 * MiB
# Small enough that the 64 MiB bomb (~65 KB of gzip) is over it, large
# enough that busybox's layer (ratio ~2) is nowhere near it.
STRICT = "[images]\nmax_layer_expansion_ratio = 50\nlayer_expansion_floor_bytes = 4194304\n"


def sparse_layer() -> bytes:
    src = Path(tempfile.mkdtemp(prefix="crispy-sparse-src-"))
    try:
        with open(src / "disk.img", "wb") as f:
            f.truncate(SPARSE_SIZE)
            f.seek(SPARSE_SIZE // 2)
            f.write(b"data in the middle")
        return subprocess.run(["tar", "-c", "--sparse", "--format=posix", "--sparse-version=1.0", "--owner=0",
                               "--group=0", "-C", str(src), "disk.img"], capture_output=True, check=True).stdout
    finally:
        shutil.rmtree(src)


@pytest.fixture(scope="module")
def registry():
    base = ib.make_layer(ib.busybox_entries())
    bomb = ib.make_layer({"bomb": ib.File(bytes(BOMB_ZEROS))})
    with LocalRegistry() as reg:
        reg.sparse = ib.build_image([base, sparse_layer()])
        reg.bomb = ib.build_image([base, bomb])
        reg.bomb_layer = ib.digest_of(ib.compress(bomb, "gzip"))
        reg.bomb_chain = chain_ids([ib.digest_of(base), ib.digest_of(bomb)])[1]
        reg.push("app/sparse", "v1", reg.sparse)
        reg.push("app/bomb", "v1", reg.bomb)
        yield reg


def spec(name: str) -> pb.ImageSpec:
    return pb.ImageSpec(image=name)


def test_sparse_layer_is_pulled_with_its_holes(registry, daemon_base: Path):
    d = DaemonProcess(daemon_base).start()
    try:
        c = d.client()
        ref = f"{registry.host}/app/sparse:v1"
        c.image.PullImage(pb.PullImageRequest(image=spec(ref)), timeout=120)
        st = c.image.ImageStatus(pb.ImageStatusRequest(image=spec(ref), verbose=True), timeout=30)
        top = Path(json.loads(st.info["info"])["layerDirs"][-1])
        f = os.stat(top / "disk.img")
        assert f.st_size == SPARSE_SIZE
        assert f.st_blocks * 512 < MiB, f"{f.st_blocks * 512} bytes allocated"
        with open(top / "disk.img", "rb") as fh:
            fh.seek(SPARSE_SIZE // 2)
            assert fh.read(18) == b"data in the middle"
        c.close()
    finally:
        d.stop()


def test_zero_bomb_is_refused_then_pulled_after_raising_the_limit(registry, daemon_base: Path):
    ref = f"{registry.host}/app/bomb:v1"
    snapshots = Path(daemon_base, "data", "images", "snapshots")
    d = DaemonProcess(daemon_base, config_text=STRICT).start()
    try:
        c = d.client()
        with pytest.raises(grpc.RpcError) as e:
            c.image.PullImage(pb.PullImageRequest(image=spec(ref)), timeout=120)
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e.value.details()
        msg = e.value.details()
        assert registry.bomb_layer in msg and "images.max_layer_expansion_ratio" in msg and "50" in msg
        st = c.image.ImageStatus(pb.ImageStatusRequest(image=spec(ref)), timeout=30)
        assert not st.HasField("image")
        assert list(c.image.ListImages(pb.ListImagesRequest(), timeout=30).images) == []
        bomb_hex = registry.bomb_chain.split(":")[1]
        assert not [p.name for p in snapshots.iterdir() if bomb_hex in p.name]
        # The base layer's unpack may still be finishing; it must not
        # stay half-done either.
        deadline = time.monotonic() + 30
        while [p for p in snapshots.iterdir() if p.name.startswith(".tmp-")]:
            assert time.monotonic() < deadline, sorted(p.name for p in snapshots.iterdir())
            time.sleep(0.05)
        c.close()
    finally:
        d.stop()
    # The operator trusts the image: no ratio limit, and the 64 MiB of
    # zeros take no disk.
    d = DaemonProcess(daemon_base, config_text="[images]\nmax_layer_expansion_ratio = 0\n").start()
    try:
        c = d.client()
        resp = c.image.PullImage(pb.PullImageRequest(image=spec(ref)), timeout=120)
        assert resp.image_ref == registry.bomb.config_digest
        bomb = os.stat(snapshots / registry.bomb_chain.split(":")[1] / "bomb")
        assert bomb.st_size == BOMB_ZEROS and bomb.st_blocks * 512 < MiB
        c.image.RemoveImage(pb.RemoveImageRequest(image=spec(ref)), timeout=30)
        c.close()
    finally:
        d.stop()
