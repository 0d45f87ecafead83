"""The decompressed, hashed tar stream of a layer (images/layer_stream.py):
every compression crispy accepts, fed in chunks of any size, with the
corner cases of real gzip files (several members, zero padding) and broken
ones (truncated, trailing garbage)."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import zlib
from typing import Iterator

import pytest
import zstandard

from images.layer_stream import PIECE, TarStream, TruncatedLayer, decompressed
from tests.imagebuild import compress


def chunked(data: bytes, size: int) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i:i + size]


def plain(data: bytes, size: int) -> bytes:
    return b"".join(decompressed(chunked(data, size)))


PAYLOAD = os.urandom(300_000) + b"\0" * 300_000 + b"abc" * 100_000


@pytest.mark.parametrize("size", [1, 3, 4096, 1 << 20])
@pytest.mark.parametrize("how", ["gzip", "zstd", "none"])
def test_every_compression_in_any_chunking(how, size):
    data = PAYLOAD if size > 1 else PAYLOAD[:20_000]  # byte by byte is slow
    assert plain(compress(data, how), size) == data


def test_gzip_members_back_to_back_and_zero_padding():
    a, b = os.urandom(70_000), b"second member" * 1000
    blob = gzip.compress(a, mtime=0) + b"\0" * 700 + gzip.compress(b, mtime=0) + b"\0" * 33
    for size in (5, 512, 1 << 20):
        assert plain(blob, size) == a + b
    # Python's own gzip reader agrees.
    assert gzip.decompress(blob) == a + b


def test_zstd_frames_back_to_back():
    c = zstandard.ZstdCompressor()
    blob = c.compress(b"one" * 10_000) + c.compress(b"two" * 10_000)
    assert plain(blob, 1000) == b"one" * 10_000 + b"two" * 10_000


def test_truncated_gzip_is_an_error():
    blob = gzip.compress(os.urandom(100_000), mtime=0)
    for cut in (10, 50_000, len(blob) - 1):
        with pytest.raises(TruncatedLayer):
            plain(blob[:cut], 4096)


def test_garbage_after_a_gzip_member_is_an_error():
    blob = gzip.compress(b"x" * 1000, mtime=0) + b"not gzip at all"
    with pytest.raises(zlib.error):
        plain(blob, 7)


def test_corrupt_gzip_checksum_is_an_error():
    blob = bytearray(gzip.compress(b"payload" * 1000, mtime=0))
    blob[-6] ^= 0xFF  # inside the CRC32 trailer
    with pytest.raises(zlib.error):
        plain(bytes(blob), 100)


def test_pieces_stay_bounded_for_very_compressible_layers():
    blob = gzip.compress(b"\0" * (8 * PIECE), mtime=0)
    pieces = list(decompressed(iter([blob])))
    assert max(len(p) for p in pieces) <= PIECE
    assert sum(len(p) for p in pieces) == 8 * PIECE


def test_tar_stream_reads_and_hashes_everything_once():
    data = os.urandom(3 * PIECE + 12345)
    s = TarStream(chunked(data, 100_000))
    got = [s.read(512), s.read(0), s.read(250_000), s.read(1), s.read(PIECE + 7)]
    assert b"".join(got) == data[:len(b"".join(got))]
    rest = s.read(-1)
    assert b"".join(got) + rest == data
    assert s.read(10) == b""
    s.drain()
    assert s.size == len(data)
    assert s.hexdigest() == hashlib.sha256(data).hexdigest()


def test_tar_stream_drain_hashes_what_was_not_read():
    data = os.urandom(500_000)
    s = TarStream(chunked(data, 64_000))
    assert s.read(1000) == data[:1000]
    s.drain()
    assert s.size == len(data)
    assert s.hexdigest() == hashlib.sha256(data).hexdigest()


def test_tar_stream_seeks_forward_only_and_copies_to_a_file(tmp_path):
    # 1 MiB past the first piece, whatever PIECE is: room for the 700,000
    # bytes copied below and a rest after them.
    data = os.urandom(PIECE + (1 << 20) + 999)
    s = TarStream(chunked(data, 300_000))
    assert s.read(10) == data[:10] and s.tell() == 10
    assert s.seek(10) == 10  # staying put is fine
    s.seek(PIECE + 5)
    assert s.tell() == PIECE + 5
    with pytest.raises(io.UnsupportedOperation):
        s.seek(PIECE)
    out = tmp_path / "out"
    fd = os.open(out, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        assert s.copy_to(fd, 700_000) == 700_000
        assert s.tell() == PIECE + 5 + 700_000
        assert s.read(3) == data[PIECE + 700_005:PIECE + 700_008]
        # Asking for more than is left copies what there is.
        assert s.copy_to(fd, len(data)) == len(data) - (PIECE + 700_008)
    finally:
        os.close(fd)
    assert out.read_bytes() == data[PIECE + 5:PIECE + 700_005] + data[PIECE + 700_008:]
    assert s.read(1) == b"" and s.tell() == len(data)
    assert s.seek(len(data) + 100) == len(data)  # past the end: stays at the end
    s.drain()
    assert s.hexdigest() == hashlib.sha256(data).hexdigest()
