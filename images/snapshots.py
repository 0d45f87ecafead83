"""Unpacked layers, one directory per chain ID under `<images>/snapshots/<hex>`,
each usable as an overlayfs lower dir.

A layer is extracted into `.tmp-<hex>-<owner>-<rand>` (images/owner.py) and
renamed into place
when complete, so a snapshot directory that exists is always whole. Another
process extracting the same layer at the same time loses the rename race
harmlessly. Blocking; run in threads."""

from __future__ import annotations

import errno
import logging
import os
import shutil
from pathlib import Path

from images import owner
from images.digests import hex_of
from images.layer_limits import LayerLimits
from images.unpack import unpack_layer
from runtime import private_dirs
from runtime.crashpoints import crashpoint

log = logging.getLogger("crispy.images.snapshots")

TMP_PREFIX = ".tmp-"


class SnapshotStore:
    def __init__(self, root: Path) -> None:
        self.dir = root / "snapshots"

    def create_dirs(self) -> None:
        # Layers keep the image's modes (setuid binaries, 1777 dirs): only
        # root may reach them (runtime/private_dirs.py). Temp extractions
        # live here too.
        private_dirs.ensure_private(self.dir)

    def path(self, chain_id: str) -> Path:
        return self.dir / hex_of(chain_id)

    def has(self, chain_id: str) -> bool:
        return self.path(chain_id).is_dir()

    def ensure(self, chain_id: str, blob: Path, diff_id: str, name: str | None = None,
               limits: LayerLimits | None = None) -> Path:
        final = self.path(chain_id)
        if final.is_dir():
            return final
        tmp = self.dir / f"{TMP_PREFIX}{hex_of(chain_id)}-{owner.current()}-{os.urandom(4).hex()}"
        unpack_layer(blob, tmp, diff_id, name=name, limits=limits)
        crashpoint("pull.after_unpack_tmp")
        try:
            os.rename(tmp, final)
        except OSError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            if e.errno not in (errno.EEXIST, errno.ENOTEMPTY) or not final.is_dir():
                raise
        return final

    def list_chain_ids(self) -> list[str]:
        try:
            return ["sha256:" + n for n in os.listdir(self.dir) if len(n) == 64]
        except FileNotFoundError:
            return []

    def delete(self, chain_id: str) -> None:
        p = self.path(chain_id)
        if not p.exists():
            return
        # Rename first so a crash mid-delete never leaves a partial snapshot
        # under its real name.
        doomed = self.dir / f"{TMP_PREFIX}gc-{p.name}-{owner.current()}-{os.urandom(4).hex()}"
        os.rename(p, doomed)
        shutil.rmtree(doomed, ignore_errors=True)

    def clean_abandoned(self) -> int:
        """Removes temp dirs left by processes that died mid-extraction."""
        removed = 0
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return 0
        for name in names:
            if not name.startswith(TMP_PREFIX):
                continue
            parts = name.rsplit("-", 2)
            if len(parts) == 3 and owner.alive(parts[1]):
                continue
            shutil.rmtree(self.dir / name, ignore_errors=True)
            removed += 1
        return removed

    def usage(self) -> tuple[int, int]:
        """(bytes, inodes) used by all snapshots; hard links counted once."""
        return disk_usage(self.dir)


def disk_usage(root: Path) -> tuple[int, int]:
    seen: set[tuple[int, int]] = set()
    total = 0
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except FileNotFoundError:
                continue
            key = (st.st_dev, st.st_ino)
            if key in seen:
                continue
            seen.add(key)
            total += st.st_blocks * 512
    try:
        st = os.lstat(root)
        seen.add((st.st_dev, st.st_ino))
        total += st.st_blocks * 512
    except FileNotFoundError:
        pass
    return total, len(seen)
