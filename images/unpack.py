"""Extracts one layer tar into its own directory in overlayfs form, ready to
be a lower dir: `.wh.NAME` becomes a 0:0 character device NAME and
`.wh..wh..opq` becomes `trusted.overlay.opaque=y` on its directory.

The directory starts empty and only this code writes it, so what is on
disk is exactly what earlier members made; a member whose path would leave
the directory (absolute, `..`, or through a symlink an earlier member
created) is refused. The uncompressed stream (layer_stream.py) is hashed
and must equal the image config's diff ID. Blocking; run it in a thread."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import stat
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator, cast

import zstandard

from images.digests import ContentMismatch
from images.holes import write_skipping_zeros
from images.layer_limits import LayerLimits, bounded
from images.layer_stream import TarStream, decompressed
from runtime.errors import CrispyError, ErrorKind

log = logging.getLogger("crispy.images.unpack")

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
# xattrs a layer must never set: they steer overlayfs itself (redirects,
# metacopy, whiteouts) and would let an image reach outside its layers.
_FORBIDDEN_XATTR_PREFIXES = ("trusted.overlay.", "user.overlay.")

# Compressed bytes are read from the blob in pieces this big: well below the
# daemon's mmap threshold (runtime/libc.py, layer_stream.PIECE says why), so
# each read reuses heap memory instead of faulting in a fresh mapping.
READ_CHUNK = 256 * 1024


class UnsafeLayer(CrispyError):
    """A layer member that would be written outside its layer directory."""

    kind = ErrorKind.INVALID_ARGUMENT


class BadLayer(CrispyError):
    """A layer that is not a readable tar stream."""

    kind = ErrorKind.DATA_LOSS


@dataclass
class _DirMeta:
    rel: str
    mode: int
    mtime_ns: int


def _clean(name: str, what: str) -> str:
    if name.startswith("/"):
        raise UnsafeLayer(f"layer {what} {name!r} is an absolute path; "
                          "refusing to unpack an image that writes outside its layer")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeLayer(f"layer {what} {name!r} contains '..'; refusing to unpack an image that writes outside its "
                          "layer")
    return "/".join(parts)


class _Extractor:
    def __init__(self, dest: Path, data: TarStream) -> None:
        self.dest = dest
        self.data = data
        self.dirs: dict[str, _DirMeta] = {}

    def _abs(self, rel: str) -> str:
        return os.path.join(self.dest, rel) if rel else str(self.dest)

    def _ensure_parents(self, rel: str, member: str) -> None:
        parts = rel.split("/")[:-1]
        cur = ""
        for part in parts:
            cur = f"{cur}/{part}" if cur else part
            p = self._abs(cur)
            try:
                st = os.lstat(p)
            except FileNotFoundError:
                os.mkdir(p, 0o755)
                continue
            if stat.S_ISLNK(st.st_mode):
                raise UnsafeLayer(f"layer member {member!r} goes through the symlink {cur!r}; refusing to unpack an "
                                  f"image that writes outside its layer")
            if not stat.S_ISDIR(st.st_mode):
                raise BadLayer(f"layer member {member!r} needs {cur!r} to be a directory, but the layer made it a file")

    def _clear(self, rel: str, keep_dir: bool) -> None:
        p = self._abs(rel)
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            if keep_dir:
                return
            shutil.rmtree(p)
            self.dirs = {k: v for k, v in self.dirs.items() if k != rel and not k.startswith(rel + "/")}
        else:
            os.unlink(p)

    def _owner_and_xattrs(self, p: str, m: tarfile.TarInfo, fd: int | None = None, link: bool = False) -> None:
        try:
            if fd is not None:
                os.fchown(fd, m.uid, m.gid)
            else:
                os.chown(p, m.uid, m.gid, follow_symlinks=False)
        except OSError as e:
            raise BadLayer(f"cannot set owner {m.uid}:{m.gid} on layer member {m.name!r}: {e.strerror}") from None
        for key, value in (m.pax_headers or {}).items():
            if not key.startswith("SCHILY.xattr."):
                continue
            name = key[len("SCHILY.xattr."):]
            if name.startswith(_FORBIDDEN_XATTR_PREFIXES):
                log.warning("dropping overlay xattr from layer", extra={"fields": {"member": m.name, "xattr": name}})
                continue
            raw = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
            try:
                os.setxattr(fd if fd is not None else p, name, raw, follow_symlinks=not link)
            except OSError as e:
                # user.* xattrs cannot exist on symlinks; nothing to preserve there.
                if link and e.errno in (errno.EPERM, errno.ENOTSUP):
                    continue
                raise BadLayer(f"cannot set xattr {name} on layer member {m.name!r}: {e.strerror}") from None

    @staticmethod
    def _mtime_ns(m: tarfile.TarInfo) -> int:
        return int(float(m.mtime) * 1_000_000_000)

    def member(self, tar: tarfile.TarFile, m: tarfile.TarInfo) -> None:
        rel = _clean(m.name, "member")
        base = rel.rsplit("/", 1)[-1]
        if rel:
            self._ensure_parents(rel, m.name)
        if base == OPAQUE_MARKER:
            parent = rel.rsplit("/", 1)[0] if "/" in rel else ""
            os.setxattr(self._abs(parent), OPAQUE_XATTR, b"y")
            return
        if base.startswith(WHITEOUT_PREFIX):
            target = base[len(WHITEOUT_PREFIX):]
            if target in ("", ".", ".."):
                raise UnsafeLayer(f"layer whiteout {m.name!r} names no file")
            parent = rel.rsplit("/", 1)[0] if "/" in rel else ""
            trel = f"{parent}/{target}" if parent else target
            p = self._abs(trel)
            if os.path.lexists(p):
                return  # this layer's own entry wins; a whiteout only hides lower layers
            os.mknod(p, 0o600 | stat.S_IFCHR, os.makedev(0, 0))
            os.chown(p, m.uid, m.gid, follow_symlinks=False)
            return
        p = self._abs(rel)
        mtime = self._mtime_ns(m)
        if m.isdir():
            self._clear(rel, keep_dir=True)
            if not os.path.lexists(p):
                os.mkdir(p, 0o700)
            self._owner_and_xattrs(p, m)
            self.dirs[rel] = _DirMeta(rel, stat.S_IMODE(m.mode), mtime)
            return
        if not rel:
            raise BadLayer(f"layer member {m.name!r} replaces the layer root with a non-directory")
        self._clear(rel, keep_dir=False)
        if m.isreg():
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                regions = [(0, m.size)] if m.sparse is None else _sparse_map(m, tar.offset)
                if self._write_data(fd, m, regions) < m.size:
                    os.ftruncate(fd, m.size)  # a hole at the end still counts in the length
                self._owner_and_xattrs(p, m, fd=fd)
                os.fchmod(fd, stat.S_IMODE(m.mode))  # after chown, which clears set-id bits
            finally:
                os.close(fd)
            os.utime(p, ns=(mtime, mtime), follow_symlinks=False)
        elif m.issym():
            os.symlink(m.linkname, p)
            self._owner_and_xattrs(p, m, link=True)
            os.utime(p, ns=(mtime, mtime), follow_symlinks=False)
        elif m.islnk():
            target = _clean(m.linkname, "hard link target")
            if not target:
                raise UnsafeLayer(f"layer hard link {m.name!r} points at the layer root")
            self._ensure_parents(target, m.linkname)
            tp = self._abs(target)
            try:
                st = os.lstat(tp)
            except FileNotFoundError:
                raise BadLayer(f"layer hard link {m.name!r} points at {m.linkname!r}, "
                               "which the layer does not contain") from None
            if stat.S_ISDIR(st.st_mode):
                raise BadLayer(f"layer hard link {m.name!r} points at a directory")
            os.link(tp, p, follow_symlinks=False)
        elif m.ischr() or m.isblk() or m.isfifo():
            kind = stat.S_IFCHR if m.ischr() else stat.S_IFBLK if m.isblk() else stat.S_IFIFO
            dev = os.makedev(m.devmajor, m.devminor) if kind != stat.S_IFIFO else 0
            os.mknod(p, 0o600 | kind, dev)
            self._owner_and_xattrs(p, m)
            os.chmod(p, stat.S_IMODE(m.mode))
            os.utime(p, ns=(mtime, mtime), follow_symlinks=False)
        else:
            log.warning("skipping layer member of unknown type",
                        extra={"fields": {"member": m.name, "type": repr(m.type)}})

    def _write_data(self, fd: int, m: tarfile.TarInfo, regions: list[tuple[int, int]]) -> int:
        """Writes the member's stored data, which is `regions` (file offset,
        length) back to back, straight from the decompressed pieces;
        tarfile's own reader would copy each byte four times and fill
        sparse members' holes with written zeros. Returns the file's
        length so far."""
        self.data.seek(m.offset_data)
        length_now = 0
        for offset, length in regions:
            done = 0
            for buf, start, end in self.data.take(length):
                if write_skipping_zeros(fd, buf, start, end, offset + done):
                    length_now = offset + done + (end - start)
                done += end - start
            if done != length:
                raise BadLayer(f"layer member {m.name!r} is cut short: the layer is truncated")
        return length_now

    def finish(self) -> None:
        # Deepest first: setting a parent's mtime before its children are done
        # would be undone, and a read-only mode would block the children.
        for meta in sorted(self.dirs.values(), key=lambda d: d.rel.count("/") + (1 if d.rel else 0), reverse=True):
            p = self._abs(meta.rel)
            os.chmod(p, meta.mode)
            os.utime(p, ns=(meta.mtime_ns, meta.mtime_ns), follow_symlinks=False)


def _sparse_map(m: tarfile.TarInfo, next_header: int) -> list[tuple[int, int]]:
    """The data regions of a sparse member (any GNU sparse format), checked
    so they cannot overlap, leave the file or claim more stored data than
    the archive holds before the next header."""
    regions: list[tuple[int, int]] = []
    end = 0
    # typeshed declares `sparse` as bytes; tarfile fills it with (offset, size) pairs.
    for offset, length in cast("list[tuple[int, int]]", m.sparse or []):
        if length == 0:
            continue  # padding entries and the end-of-file marker
        if offset < end or length < 0 or offset + length > m.size:
            raise BadLayer(f"layer member {m.name!r} has an invalid sparse map (region {offset}+{length} of a "
                           f"{m.size}-byte file)")
        regions.append((offset, length))
        end = offset + length
    if sum(length for _, length in regions) > next_header - m.offset_data:
        raise BadLayer(f"layer member {m.name!r} has a sparse map claiming more data than the layer stores for it")
    return regions


@dataclass
class UnpackResult:
    diff_id: str
    tar_size: int


def _file_chunks(raw: BinaryIO) -> Iterator[bytes]:
    while chunk := raw.read(READ_CHUNK):
        yield chunk


def unpack_layer(blob: Path, dest: Path, expected_diff_id: str | None, name: str | None = None,
                 limits: LayerLimits | None = None) -> UnpackResult:
    """Extracts `blob` into `dest`, which must not exist yet. On any failure
    `dest` is removed; nothing half-extracted is left behind. `name` (the
    layer's digest) is what errors call the layer."""
    with open(blob, "rb", buffering=0) as raw:
        return unpack_stream(_file_chunks(raw), name or blob.name, dest, expected_diff_id,
                             limits=limits, compressed_size=os.fstat(raw.fileno()).st_size)


def unpack_stream(chunks: Iterator[bytes], name: str, dest: Path, expected_diff_id: str | None,
                  limits: LayerLimits | None = None, compressed_size: int = 0) -> UnpackResult:
    """Extracts the layer whose compressed bytes `chunks` yields into `dest`
    (which must not exist yet) and checks its diff ID; refuses it with
    LayerTooBig (RESOURCE_EXHAUSTED) once it unpacks to more than `limits`
    allow for `compressed_size`. On any failure `dest` is removed; nothing
    half-extracted is left behind."""
    cap = limits.cap(name, compressed_size) if limits else None
    dest.mkdir(mode=0o755)
    try:
        reader = TarStream(bounded(decompressed(chunks), cap))
        ex = _Extractor(dest, reader)
        try:
            # "r:" (not the stream mode "r|"): tarfile then reads headers
            # from `reader` itself and skips to each next header with a
            # forward seek, so file data can be taken from `reader` directly.
            # TarStream has the read/seek/tell tarfile uses, but is no IO[bytes].
            with tarfile.open(fileobj=reader, mode="r:", errorlevel=2) as tar:  # type: ignore[call-overload]
                for m in tar:
                    ex.member(tar, m)
            reader.drain()
        except (tarfile.TarError, EOFError, zstandard.ZstdError, zlib.error) as e:
            raise BadLayer(f"layer {name} is not a valid (compressed) tar stream: {e}") from None
        except OSError as e:
            if isinstance(e, (FileNotFoundError, PermissionError)) or e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise
            raise BadLayer(f"layer {name} could not be unpacked: {e}") from None
        ex.finish()
        diff_id = "sha256:" + reader.hexdigest()
        if expected_diff_id and diff_id != expected_diff_id:
            raise ContentMismatch(f"layer {name} unpacks to {diff_id}, but the image config says {expected_diff_id}")
        return UnpackResult(diff_id, reader.size)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
