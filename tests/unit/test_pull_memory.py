"""The daemon's malloc policy (runtime/libc.py pins glibc's mmap threshold
and the trim threshold with it) and the image pull's buffer sizes that rely
on it.

The policy is checked on glibc itself, one allocation at a time: counting a
whole pull's page faults was tried first and measured too noisy to tell the
policy from its absence (50 MB pulled, later pulls of eight runs each: 479-3,632
faults under the policy, 2,667-6,839 with the trim threshold left at 128 KiB;
one CI run failed at 3,148 against a bound of 3,073)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import httpcore
import pytest

from images import layer_stream, unpack
from images.content_store import ContentStore
from runtime import libc

ROOT = Path(__file__).resolve().parents[2]

# Runs in its own process: mallopt changes the whole process. Allocates,
# touches and frees one buffer of `size` bytes `rounds` times with nothing
# in between, and prints the page faults that took.
CHURN = r"""
import ctypes, resource, sys
from runtime import libc
policy, size, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
if policy == "daemon":
    assert libc.pin_mmap_threshold(libc.MMAP_THRESHOLD)
elif policy == "mmap-threshold-only":
    libc.libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    assert libc.libc.mallopt(libc.M_MMAP_THRESHOLD, libc.MMAP_THRESHOLD)
c = libc.libc
c.malloc.restype = ctypes.c_void_p
c.malloc.argtypes = (ctypes.c_size_t,)
c.free.argtypes = (ctypes.c_void_p,)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(rounds):
    p = c.malloc(size)
    ctypes.memset(p, 1, size)
    c.free(p)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def churn_faults(policy: str, size: int, rounds: int) -> int:
    out = subprocess.run([sys.executable, "-c", CHURN, policy, str(size), str(rounds)],
                         cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    return int(out.stdout)


@pytest.mark.skipif(not hasattr(libc.libc, "mallopt"), reason="not glibc")
def test_a_freed_buffer_below_the_threshold_is_reused_not_faulted_in_again():
    size, rounds = 600 * 1024, 40
    pages = size // 4096
    # The control shows the measurement can see the difference: with only
    # the mmap threshold pinned, glibc keeps its 128 KiB trim threshold,
    # hands every freed buffer back and faults it in again.
    assert churn_faults("mmap-threshold-only", size, rounds) > pages * rounds // 2
    # Under the daemon's policy the buffer is faulted in once, then reused.
    assert churn_faults("daemon", size, rounds) < pages * 2


def test_pull_buffers_stay_well_below_the_daemons_mmap_threshold():
    # At or above it every buffer is a fresh mapping; close to it, a few
    # freed together overflow what glibc keeps at its heap's top.
    quarter = libc.MMAP_THRESHOLD // 4
    assert layer_stream.PIECE <= quarter
    assert unpack.READ_CHUNK <= quarter
    # Write batches are not joined; each of their pieces is one network read.
    assert httpcore._async.http11.AsyncHTTP11Connection.READ_NUM_BYTES <= quarter


def test_blob_writer_writes_batches_without_joining_them(tmp_path):
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
