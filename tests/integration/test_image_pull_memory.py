"""A cold pull under the daemon's malloc policy (runtime/libc.py pins glibc's
mmap threshold) reuses its buffers instead of faulting in fresh memory for
every piece: once each 1 MiB piece was its own mmap, a 50 MB pull took
~22,000 page faults and measurably longer than before the pin."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpcore
import pytest

from images import layer_stream, unpack
from runtime import libc
from tests import imagebuild as ib
from tests.registry import LocalRegistry

ROOT = Path(__file__).resolve().parents[2]

# Runs in its own process: mallopt changes the whole process, and the fault
# count must be the pull's alone.
PULLER = r"""
import asyncio, json, resource, shutil, sys, tempfile
from pathlib import Path
from cri.config import Config, RegistryHostConfig
from images.manager import ImageManager
from runtime import libc

ref, host = sys.argv[1], sys.argv[2]
assert libc.pin_mmap_threshold(libc.MMAP_THRESHOLD)  # as cri/daemon.py does


async def main():
    tmp = Path(tempfile.mkdtemp(prefix="crispy-pullmem-"))
    cfg = Config()
    cfg.registries = {host: RegistryHostConfig(insecure=True)}
    m = ImageManager(cfg, tmp / "data", lambda _id: [])
    faults = []
    try:
        await m.open()
        for i in range(3):
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            await m.pull(ref, None)
            faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
            await m.remove(ref)
            await m.collect_garbage()
        left = sorted(p.name for p in m.content.blobs_dir.iterdir())
    finally:
        await m.close()
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps({"faults": faults, "blobs_left": left}))

asyncio.run(main())
"""


def test_pull_buffers_stay_well_below_the_daemons_mmap_threshold():
    # At or above it every buffer is a fresh mapping; close to it, a few
    # freed together overflow what glibc keeps at its heap's top.
    quarter = libc.MMAP_THRESHOLD // 4
    assert layer_stream.PIECE <= quarter
    assert unpack.READ_CHUNK <= quarter
    # Write batches are not joined; each of their pieces is one network read.
    assert httpcore._async.http11.AsyncHTTP11Connection.READ_NUM_BYTES <= quarter


@pytest.fixture
def registry():
    with LocalRegistry() as reg:
        yield reg


def test_cold_pull_reuses_memory_under_the_daemons_malloc_policy(registry):
    layers = [ib.make_layer({f"d{i}": ib.Dir(), f"d{i}/blob": ib.File(os.urandom(4 << 20))}) for i in range(6)]
    img = ib.build_image(layers)
    registry.push("app/big", "v1", img)
    pulled = sum(len(b) for b in img.blobs.values())
    out = subprocess.run([sys.executable, "-c", PULLER, f"{registry.host}/app/big:v1", registry.host],
                         cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert res["blobs_left"] == []
    # The first pull warms up the heap (and imports); later ones should find
    # their buffers there. With a fresh mapping per piece a pull faults in
    # more pages than it downloads (~1.7 per page before the fix).
    pages = pulled // 4096
    assert min(res["faults"][1:]) < pages // 2, (res["faults"], pages)


def test_blob_writer_writes_batches_without_joining_them(tmp_path):
    import hashlib

    from images.content_store import ContentStore
    from images.digests import ContentMismatch

    (tmp_path / "images").mkdir()
    store = ContentStore(tmp_path / "images")
    store.create_dirs()
    chunks = [os.urandom(n) for n in (65536, 1, 4096, 65536, 300_000)]
    data = b"".join(chunks)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    w = store.writer(digest, len(data))
    w.write_chunks(chunks[:2])
    w.write_chunks(chunks[2:])
    assert w.offset == len(data)
    assert w.commit().read_bytes() == data

    w = store.writer("sha256:" + "0" * 64, 10)
    with pytest.raises(ContentMismatch, match="larger than the 10 bytes"):
        w.write_chunks([b"12345", b"678901"])
