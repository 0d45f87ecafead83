"""The uncompressed tar stream of a layer, made from its compressed bytes as
they are read from the stored blob, hashed on the way for the diff ID.

Compression is sniffed from magic bytes, because registries label layers
loosely. Work is done in big pieces (zlib and hashlib release the GIL for
them, so layers really unpack in parallel); tarfile's small reads are then
served from a buffer instead of each walking a chain of Python file
objects."""

from __future__ import annotations

import hashlib
import io
import os
import zlib
from typing import IO, Iterator, cast

import zstandard

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
# zlib: gzip wrapper (header and trailer CRC/size checked by zlib itself).
_GZIP_WBITS = 16 + zlib.MAX_WBITS
# Upper bound of one decompressed piece: bounds memory for highly
# compressible layers while keeping per-piece Python overhead negligible.
# A quarter of the daemon's mmap threshold (runtime/libc.py): pieces then
# come from the heap and the few freed at a time fit within what glibc keeps
# at its top, so they reuse memory. At 1 MiB each piece was a fresh mmap,
# faulted in page by page (~22,000 faults per 50 MB pulled).
PIECE = 256 * 1024


class TruncatedLayer(EOFError):
    """The compressed stream ended before its end marker."""


def _gunzip(chunks: Iterator[bytes]) -> Iterator[bytes]:
    # A gzip file may hold several members back to back, and zero padding
    # after one (as the gzip tool and Python's gzip module accept).
    d = zlib.decompressobj(_GZIP_WBITS)
    for chunk in chunks:
        while chunk:
            if d.eof:
                chunk = chunk.lstrip(b"\0")
                if not chunk:
                    break
                d = zlib.decompressobj(_GZIP_WBITS)
            out = d.decompress(chunk, PIECE)
            if out:
                yield out
            chunk = d.unused_data if d.eof else d.unconsumed_tail
    if not d.eof:
        rest = d.flush()
        if rest:
            yield rest
        if not d.eof:
            raise TruncatedLayer("the gzip stream ends before its end marker (truncated layer)")


class _ChunkFile:
    """A read()-able view of a chunk iterator, for zstandard's stream reader."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self.chunks = chunks
        self.buf = b""

    def read(self, n: int = -1) -> bytes:
        if not self.buf:
            self.buf = next(self.chunks, b"")
        if n < 0 or n >= len(self.buf):
            out, self.buf = self.buf, b""
            return out
        out, self.buf = self.buf[:n], self.buf[n:]
        return out


def _unzstd(chunks: Iterator[bytes]) -> Iterator[bytes]:
    # zstandard's stubs ask for a whole IO[bytes]; it only ever calls read().
    source = cast(IO[bytes], _ChunkFile(chunks))
    reader = zstandard.ZstdDecompressor().stream_reader(source, read_size=PIECE, read_across_frames=True)
    while piece := reader.read(PIECE):
        yield piece


def decompressed(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """The layer's tar bytes, in pieces of at most PIECE (uncompressed
    layers pass through as they come)."""
    head = b""
    for chunk in chunks:
        head += chunk
        if len(head) >= 4:
            break

    def all_chunks() -> Iterator[bytes]:
        if head:
            yield head
        yield from chunks

    if head[:2] == GZIP_MAGIC:
        return _gunzip(all_chunks())
    if head[:4] == ZSTD_MAGIC:
        return _unzstd(all_chunks())
    return all_chunks()


class TarStream:
    """A read()-only, forward-only file object over decompressed pieces,
    hashing every byte it takes from them (so the hash covers the whole
    stream once it is drained, whatever tarfile chose to read). seek()
    moves forward only, which is all tarfile needs to walk an archive
    member by member; copy_to() and take() hand file data on straight from
    the pieces."""

    def __init__(self, pieces: Iterator[bytes]) -> None:
        self._pieces = pieces
        self._buf = b""
        self._pos = 0    # next byte to hand out, in _buf
        self._base = 0   # stream offset of _buf[0]
        self.hash = hashlib.sha256()
        self.size = 0

    def _more(self) -> bytes:
        piece = next(self._pieces, b"")
        if piece:
            self.hash.update(piece)
            self.size += len(piece)
        return piece

    def _next_piece(self) -> bool:
        piece = self._more()
        if not piece:
            return False
        self._base += len(self._buf)
        self._buf, self._pos = piece, 0
        return True

    def tell(self) -> int:
        return self._base + self._pos

    def seekable(self) -> bool:
        return False

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        here = self.tell()
        if whence != io.SEEK_SET or pos < here:
            raise io.UnsupportedOperation("a layer stream only moves forward")
        skip = pos - here
        while skip:
            avail = len(self._buf) - self._pos
            if avail:
                take = min(avail, skip)
                self._pos += take
                skip -= take
            elif not self._next_piece():
                break  # past the end: the next read() says so
        return self.tell()

    def read(self, n: int = -1) -> bytes:
        pos = self._pos
        avail = len(self._buf) - pos
        if 0 <= n <= avail:
            self._pos = pos + n
            return self._buf[pos:pos + n]
        start = self._base + pos
        parts = [self._buf[pos:]] if avail else []
        have = avail
        while n < 0 or have < n:
            piece = self._more()
            if not piece:
                break
            parts.append(piece)
            have += len(piece)
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        if n < 0 or len(data) <= n:
            self._buf, self._pos, self._base = b"", 0, start + len(data)
            return data
        self._buf, self._pos, self._base = data, n, start
        return data[:n]

    def copy_to(self, fd: int, n: int) -> int:
        """Writes the next `n` bytes to `fd` without copying them; returns
        how many there were (fewer at the end of the stream)."""
        done = 0
        while done < n:
            avail = len(self._buf) - self._pos
            if not avail:
                if not self._next_piece():
                    break
                continue
            take = min(avail, n - done)
            view = memoryview(self._buf)[self._pos:self._pos + take]
            while view:
                view = view[os.write(fd, view):]
            self._pos += take
            done += take
        return done

    def take(self, n: int) -> Iterator[tuple[bytes, int, int]]:
        """The next `n` bytes as (piece, start, end) slices of the pieces
        themselves, no copies; fewer in all at the end of the stream."""
        while n > 0:
            avail = len(self._buf) - self._pos
            if not avail:
                if not self._next_piece():
                    return
                continue
            start = self._pos
            self._pos += min(avail, n)
            n -= self._pos - start
            yield self._buf, start, self._pos

    def drain(self) -> None:
        self._base += len(self._buf)
        self._buf, self._pos = b"", 0
        while self._more():
            pass

    def hexdigest(self) -> str:
        return self.hash.hexdigest()
