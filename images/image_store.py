"""Image records: one JSON file per image under `<images>/records/<id hex>.json`,
written atomically, so a crash leaves the old record or the new one.

The files are the truth. The daemon and `crispy load` (a separate process
that may run while the daemon serves) both change them under an exclusive
flock on `<images>/records.lock`, re-reading the directory first when it
changed, so neither loses the other's tags. Changes are detected by a
generation counter in the lock file that every writer bumps (directory
mtimes are too coarse to tell two quick writes apart)."""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from runtime import atomicfile, private_dirs

log = logging.getLogger("crispy.images.store")


@dataclass
class ImageRecord:
    id: str                      # "sha256:<config digest hex>"
    repo_tags: list[str]
    repo_digests: list[str]
    size: int
    config: dict[str, Any]       # the image config's "config" member
    chain_ids: list[str]
    pinned: bool = False
    diff_ids: list[str] = field(default_factory=list)
    # Blobs this image keeps alive: config, manifests (one per repo digest), layers.
    blobs: list[str] = field(default_factory=list)
    layer_blobs: list[str] = field(default_factory=list)
    os: str = "linux"
    architecture: str = ""
    variant: str = ""
    created: str = ""

    @property
    def hex(self) -> str:
        return self.id.split(":", 1)[1]

    @property
    def user(self) -> str:
        return str(self.config.get("User") or "")

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "ImageRecord":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


class ImageStore:
    def __init__(self, root: Path) -> None:
        self.dir = root / "records"
        self.lock_path = root / "records.lock"
        self.records: dict[str, ImageRecord] = {}
        self._seen_gen: int | None = None
        self._dirty = False

    def create_dirs(self) -> None:
        private_dirs.ensure_private(self.dir)

    def _read_gen(self, fd: int | None = None) -> int:
        try:
            if fd is None:
                raw = self.lock_path.read_bytes()
            else:
                raw = os.pread(fd, 32, 0)
            return int(raw.strip() or b"0")
        except (FileNotFoundError, ValueError):
            return 0

    def refresh(self, force: bool = False, fd: int | None = None) -> None:
        """Re-reads the records if another process changed them."""
        gen = self._read_gen(fd)
        if not force and gen == self._seen_gen:
            return
        records: dict[str, ImageRecord] = {}
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            names = []
        for name in names:
            if not name.endswith(".json") or name.startswith("."):
                continue
            try:
                rec = ImageRecord.from_json(json.loads((self.dir / name).read_bytes()))
            except (OSError, ValueError, TypeError) as e:
                log.error("ignoring unreadable image record", extra={"fields": {"file": name, "error": str(e)}})
                continue
            records[rec.id] = rec
        self.records, self._seen_gen = records, gen

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Exclusive access for a read-modify-write; blocking, use in a thread."""
        self.create_dirs()
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self.refresh(fd=fd)
            self._dirty = False
            yield
        finally:
            if self._dirty:
                gen = self._read_gen(fd) + 1
                os.pwrite(fd, f"{gen:020d}\n".encode(), 0)
                self._seen_gen = gen
                self._dirty = False
            os.close(fd)

    def _path(self, image_id: str) -> Path:
        return self.dir / f"{image_id.split(':', 1)[1]}.json"

    def put(self, rec: ImageRecord) -> None:
        """Writes one record; call inside `locked()`."""
        atomicfile.write_json(self._path(rec.id), rec.to_json())
        self.records[rec.id] = rec
        self._dirty = True

    def delete(self, image_id: str) -> None:
        self._path(image_id).unlink(missing_ok=True)
        self.records.pop(image_id, None)
        self._dirty = True

    def owner_of_tag(self, tag: str) -> ImageRecord | None:
        for rec in self.records.values():
            if tag in rec.repo_tags:
                return rec
        return None

    def add_names(self, rec: ImageRecord, tags: list[str], digests: list[str]) -> ImageRecord:
        """Stores `rec` with `tags`/`digests` added, moving each tag off the
        image that held it before (a tag names exactly one image). Call
        inside `locked()`."""
        current = self.records.get(rec.id)
        if current is not None:
            # Keep names and pins earlier pulls gave the same image.
            rec.repo_tags = list(dict.fromkeys(current.repo_tags + rec.repo_tags))
            rec.repo_digests = list(dict.fromkeys(current.repo_digests + rec.repo_digests))
            rec.blobs = list(dict.fromkeys(current.blobs + rec.blobs))
            rec.pinned = rec.pinned or current.pinned
        for tag in tags:
            prev = self.owner_of_tag(tag)
            if prev is not None and prev.id != rec.id:
                prev.repo_tags = [t for t in prev.repo_tags if t != tag]
                self.put(prev)
                log.info("tag moved to another image", extra={"fields": {"tag": tag, "from": prev.id, "to": rec.id}})
        rec.repo_tags = list(dict.fromkeys(rec.repo_tags + tags))
        rec.repo_digests = list(dict.fromkeys(rec.repo_digests + digests))
        self.put(rec)
        return rec
