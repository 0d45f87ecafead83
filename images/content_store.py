"""Blobs addressed by digest under `<images>/blobs/sha256/<hex>`.

A blob becomes visible only after its size and digest were checked: bytes
arrive in `<images>/ingest/<hex>.partial` (kept across failures so a later
pull resumes with a Range request) and are renamed into place. Everything
here is blocking file I/O; the async callers run it in threads."""

from __future__ import annotations

import fcntl
import hashlib
import os
import time
from pathlib import Path
from typing import BinaryIO

from images import owner
from images.digests import ContentMismatch, hex_of
from runtime import private_dirs

# Partial downloads older than this are not worth resuming.
PARTIAL_MAX_AGE_S = 24 * 3600


class BlobWriter:
    """Appends to one partial blob, hashing as it goes. Resumes from what an
    earlier attempt left (the prefix is re-hashed, not trusted)."""

    def __init__(self, store: "ContentStore", digest: str, size: int | None) -> None:
        self.store, self.digest, self.size = store, digest, size
        self.path = store.ingest_dir / f"{hex_of(digest)}.partial"
        store.ingest_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        while True:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            # Another writer (a concurrent pull, or crispy load) may hold the
            # same partial; wait for it, then make sure the file we locked
            # is still the partial and not the blob it was renamed into.
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                same = os.stat(self.path).st_ino == os.fstat(self._fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(self._fd)
        # Set when another writer finished this blob while we waited.
        self.complete = store.has(digest, size)
        try:
            self._hash = hashlib.sha256()
            offset = 0
            if self.complete:
                os.ftruncate(self._fd, 0)
            if size is not None and os.fstat(self._fd).st_size > size:
                os.ftruncate(self._fd, 0)
            while chunk := os.pread(self._fd, 1 << 20, offset):
                self._hash.update(chunk)
                offset += len(chunk)
            self.offset = offset
            os.lseek(self._fd, offset, os.SEEK_SET)
        except BaseException:
            os.close(self._fd)
            raise

    def restart(self) -> None:
        """Drops the resumed prefix (the server ignored our Range)."""
        os.ftruncate(self._fd, 0)
        os.lseek(self._fd, 0, os.SEEK_SET)
        self._hash = hashlib.sha256()
        self.offset = 0

    def write(self, data: bytes) -> None:
        if self.size is not None and self.offset + len(data) > self.size:
            self.discard()
            raise ContentMismatch(f"blob {self.digest} is larger than the {self.size} bytes its descriptor says")
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        self._hash.update(data)
        self.offset += len(data)

    def write_chunks(self, chunks: list[bytes]) -> None:
        """Writes the chunks in one writev, not joined first: a joined batch
        of 1 MiB or more would be a fresh mapping under the daemon's pinned
        mmap threshold (runtime/libc.py), faulted in page by page."""
        total = sum(len(c) for c in chunks)
        if self.size is not None and self.offset + total > self.size:
            self.discard()
            raise ContentMismatch(f"blob {self.digest} is larger than the {self.size} bytes its descriptor says")
        done = os.writev(self._fd, chunks)
        if done < total:  # a short write: the rest one chunk at a time
            for c in chunks:
                if done >= len(c):
                    done -= len(c)
                    continue
                view = memoryview(c)[done:]
                done = 0
                while view:
                    view = view[os.write(self._fd, view):]
        for c in chunks:
            self._hash.update(c)
        self.offset += total

    def commit(self) -> Path:
        """Verifies and publishes the blob; a mismatch deletes the partial."""
        try:
            if self.size is not None and self.offset != self.size:
                raise ContentMismatch(f"blob {self.digest} is {self.offset} bytes but its descriptor says {self.size}")
            actual = "sha256:" + self._hash.hexdigest()
            if actual != self.digest:
                raise ContentMismatch(f"blob {self.digest} has digest {actual}: "
                                      "the content is corrupt or was tampered with")
            os.fsync(self._fd)
            final = self.store.path(self.digest)
            final.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.rename(self.path, final)
            return final
        except ContentMismatch:
            self.discard()
            raise
        finally:
            self.close()

    def finish_existing(self) -> Path:
        """For a writer that found the blob already complete."""
        self.discard()
        return self.store.path(self.digest)

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)
        self.close()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class ContentStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs_dir = root / "blobs" / "sha256"
        self.ingest_dir = root / "ingest"

    def create_dirs(self) -> None:
        # Layer blobs of private images: root only.
        for d in (self.blobs_dir.parent, self.blobs_dir, self.ingest_dir):
            private_dirs.ensure_private(d)

    def path(self, digest: str) -> Path:
        return self.blobs_dir / hex_of(digest)

    def has(self, digest: str, size: int | None = None) -> bool:
        try:
            st = self.path(digest).stat()
        except FileNotFoundError:
            return False
        return size is None or size < 0 or st.st_size == size

    def read(self, digest: str, limit: int | None = None) -> bytes:
        p = self.path(digest)
        if limit is not None and p.stat().st_size > limit:
            raise ContentMismatch(f"blob {digest} is larger than the {limit}-byte limit")
        return p.read_bytes()

    def writer(self, digest: str, size: int | None) -> BlobWriter:
        return BlobWriter(self, digest, size)

    def put_bytes(self, digest: str, data: bytes) -> Path:
        if self.has(digest, len(data)):
            return self.path(digest)
        w = self.writer(digest, len(data))
        if w.complete:
            return w.finish_existing()
        if w.offset:
            w.restart()
        w.write(data)
        return w.commit()

    def put_stream(self, digest: str, size: int | None, src: BinaryIO) -> Path:
        if self.has(digest, size):
            return self.path(digest)
        w = self.writer(digest, size)
        if w.complete:
            return w.finish_existing()
        try:
            if w.offset:
                w.restart()
            while chunk := src.read(1 << 20):
                w.write(chunk)
        except BaseException:
            w.close()
            raise
        return w.commit()

    def put_stream_any(self, src: BinaryIO) -> tuple[str, int]:
        """Stores a stream whose digest is not known in advance (layers in a
        `docker save` archive); returns (digest, size). The caller verifies
        the content by other means (the config's diff IDs)."""
        self.ingest_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.ingest_dir / f"import-{owner.current()}-{os.urandom(6).hex()}.tmp"
        h = hashlib.sha256()
        size = 0
        try:
            with open(tmp, "wb") as out:
                while chunk := src.read(1 << 20):
                    out.write(chunk)
                    h.update(chunk)
                    size += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            digest = "sha256:" + h.hexdigest()
            final = self.path(digest)
            final.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.rename(tmp, final)
            return digest, size
        finally:
            tmp.unlink(missing_ok=True)

    def list_digests(self) -> list[str]:
        try:
            return ["sha256:" + n for n in os.listdir(self.blobs_dir) if len(n) == 64]
        except FileNotFoundError:
            return []

    def delete(self, digest: str) -> None:
        self.path(digest).unlink(missing_ok=True)

    def clean_stale_partials(self, max_age: float = PARTIAL_MAX_AGE_S) -> int:
        """Removes partial downloads too old to be worth resuming."""
        removed = 0
        now = time.time()
        try:
            names = os.listdir(self.ingest_dir)
        except FileNotFoundError:
            return 0
        for name in names:
            p = self.ingest_dir / name
            try:
                if now - p.stat().st_mtime > max_age:
                    p.unlink()
                    removed += 1
            except FileNotFoundError:
                pass
        return removed
