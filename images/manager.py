"""The image service's one entry point for the daemon: resolve, import,
pull, list and remove images; hands out the snapshot dirs of an image's
layers for container roots.

Layout under `<data_root>/images`: `blobs/` and `ingest/` (content store),
`snapshots/` (unpacked layers by chain ID), `records/` (one JSON per image),
`records.lock` and `gc.lock`. An image record is written only after all of
its blobs and snapshots exist, so an interrupted pull or import is never
half-visible. Garbage collection removes blobs and snapshots no record
references; pulls and imports (of this daemon or a `crispy load` process)
hold `gc.lock` shared while they work, and collection runs only when it can
take the lock exclusively."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import fcntl
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, AsyncIterator, Callable

from images import owner, reference
from images.archive_import import ArchiveReader, ImportedImage
from images.content_store import ContentStore
from images.digests import ContentMismatch, chain_ids
from images.image_store import ImageRecord, ImageStore
from images.layer_limits import LayerLimits
from images.manifest import parse_config
from images.platform import Platform, host_platform
from images.registry.auth import AuthConfigLike
from images.registry.puller import Puller
from images.settings import ImageSettings
from images.snapshots import SnapshotStore, disk_usage
from runtime import private_dirs
from runtime.crashpoints import crashpoint
from runtime.errors import CrispyError, FailedPrecondition, InvalidArgument, NotFound
from runtime.telemetry import NO_TELEMETRY, Telemetry

log = logging.getLogger("crispy.images")

__all__ = ["ImageManager", "ImageRecord", "AuthConfigLike", "FsUsage"]

# ImageFsInfo may be polled often; walking a big store each time is waste.
USAGE_CACHE_S = 5.0


class FsUsage:
    def __init__(self, mountpoint: str, used_bytes: int, inodes_used: int, timestamp_ns: int) -> None:
        self.mountpoint, self.used_bytes = mountpoint, used_bytes
        self.inodes_used, self.timestamp_ns = inodes_used, timestamp_ns


def mountpoint_of(path: Path) -> str:
    p = path.resolve()
    dev = p.stat().st_dev
    while p != p.parent:
        parent = p.parent
        if parent.stat().st_dev != dev:
            break
        p = parent
    return str(p)


class ImageManager:
    def __init__(self, daemon_config: ImageSettings, data_root: Path, users_of: Callable[[str], list[str]],
                 telemetry: Telemetry = NO_TELEMETRY) -> None:
        self.telemetry = telemetry
        self.config = daemon_config
        self.images_cfg = daemon_config.images
        self.root = Path(data_root) / "images"
        self.users_of = users_of
        self.content = ContentStore(self.root)
        self.snapshots = SnapshotStore(self.root)
        self.layer_limits = LayerLimits.from_config(self.images_cfg)
        self.store = ImageStore(self.root)
        self.platform: Platform = host_platform()
        self.gc_lock_path = self.root / "gc.lock"
        self._gc_pending = False
        self._snapshot_tasks: dict[str, asyncio.Future[Path]] = {}
        self._usage: FsUsage | None = None
        self._registry: Puller | None = None  # made on the first pull
        self._pinned: set[str] = set()
        self.set_pinned(self.images_cfg.pinned_images)

    def set_pinned(self, names: list[str]) -> None:
        """images.pinned_images, at start-up and on a config reload."""
        pinned = set()
        for name in names:
            ref = reference.try_parse(name)
            if ref is None:
                log.error("ignoring invalid images.pinned_images entry", extra={"fields": {"ref": name}})
            else:
                pinned.add(ref.digested if ref.digest else ref.tagged)
        self._pinned = pinned

    # ---- lifecycle ------------------------------------------------------------

    async def open(self) -> None:
        await asyncio.to_thread(self._open_sync)
        log.info("image store open", extra={"fields": {"root": str(self.root), "images": len(self.store.records),
                                                       "platform": str(self.platform)}})
        await self.collect_garbage()

    def _open_sync(self) -> None:
        # Also `crispy load`, which may run before any daemon made the root.
        private_dirs.ensure_root(self.root.parent)
        private_dirs.ensure_private(self.root)
        self.content.create_dirs()
        self.snapshots.create_dirs()
        self.store.create_dirs()
        self.store.refresh(force=True)
        cleaned = self.snapshots.clean_abandoned() + self.content.clean_stale_partials()
        for name in os.listdir(self.content.ingest_dir):
            # Imports of digest-less layers write import-<owner>-*.tmp.
            if name.startswith("import-"):
                parts = name.split("-")
                if len(parts) < 3 or not owner.alive(parts[1]):
                    (self.content.ingest_dir / name).unlink(missing_ok=True)
                    cleaned += 1
        if cleaned:
            log.info("cleaned up after interrupted pulls", extra={"fields": {"removed": cleaned}})

    async def close(self) -> None:
        if self._registry is not None:
            await self._registry.close()

    # ---- leases and garbage collection -------------------------------------------

    def _shared_lock(self) -> int:
        fd = os.open(self.gc_lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
        except BaseException:
            os.close(fd)
            raise
        return fd

    @contextlib.asynccontextmanager
    async def lease(self) -> AsyncIterator[None]:
        """Keeps garbage collection away from blobs and snapshots that an
        operation has written but not yet recorded."""
        # Opened and locked in one thread call: a pull cancelled meanwhile
        # (its caller went away) closes the descriptor only once the thread
        # is done with it, instead of leaking it or closing it under flock.
        job = asyncio.ensure_future(asyncio.to_thread(self._shared_lock))
        try:
            fd = await asyncio.shield(job)
        except asyncio.CancelledError:
            job.add_done_callback(lambda j: None if j.cancelled() or j.exception() else os.close(j.result()))
            raise
        try:
            yield
        finally:
            os.close(fd)
        if self._gc_pending:
            await self.collect_garbage()

    async def collect_garbage(self) -> dict[str, int]:
        return await asyncio.to_thread(self._gc_sync)

    def _gc_sync(self) -> dict[str, int]:
        fd = os.open(self.gc_lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self._gc_pending = True  # someone is pulling; collect when they finish
                return {"blobs": 0, "snapshots": 0}
            self._gc_pending = False
            with self.store.locked():
                blobs_used: set[str] = set()
                chains_used: set[str] = set()
                for rec in self.store.records.values():
                    blobs_used.update(rec.blobs)
                    chains_used.update(rec.chain_ids)
                removed_blobs = removed_snaps = 0
                for digest in self.content.list_digests():
                    if digest not in blobs_used:
                        self.content.delete(digest)
                        removed_blobs += 1
                for chain in self.snapshots.list_chain_ids():
                    if chain not in chains_used:
                        self.snapshots.delete(chain)
                        removed_snaps += 1
            if removed_blobs or removed_snaps:
                log.info("garbage collected", extra={"fields": {"blobs": removed_blobs, "snapshots": removed_snaps}})
                self._usage = None
            return {"blobs": removed_blobs, "snapshots": removed_snaps}
        finally:
            os.close(fd)

    # ---- lookup ----------------------------------------------------------------------

    def _find(self, ref_or_id: str) -> ImageRecord | None:
        self.store.refresh()
        records = self.store.records
        s = ref_or_id.strip()
        if not s:
            raise InvalidArgument("no image given; name an image by reference (busybox:1.36) or ID")
        if s.startswith("sha256:") and reference.is_digest(s):
            return records.get(s)
        if reference.is_hex_id(s):
            return records.get(f"sha256:{s}")
        ref = reference.try_parse(s)
        if ref is not None:
            for rec in records.values():
                if ((ref.digest and ref.digested in rec.repo_digests)
                        or (not ref.digest and ref.tagged in rec.repo_tags)):
                    return rec
        hexpart = s.removeprefix("sha256:")
        if 3 <= len(hexpart) < 64 and all(c in "0123456789abcdef" for c in hexpart):
            matches = [r for r in records.values() if r.hex.startswith(hexpart)]
            if len(matches) > 1:
                raise InvalidArgument(f"image ID prefix {hexpart!r} is ambiguous ({len(matches)} images); "
                                      "give more digits")
            if matches:
                return matches[0]
        if ref is None:
            # Not a name and not an ID: say why the name is wrong.
            reference.parse(s)
        return None

    async def find(self, ref_or_id: str) -> ImageRecord | None:
        """The image, or None if absent; InvalidArgument for a malformed name."""
        return self._find(ref_or_id)

    async def get(self, ref_or_id: str) -> ImageRecord:
        rec = self._find(ref_or_id)
        if rec is None:
            raise NotFound(f"image {ref_or_id!r} not found; pull it first (crictl pull) or import it with "
                           "'crispy load'")
        return rec

    def list(self) -> list[ImageRecord]:
        self.store.refresh()
        return sorted(self.store.records.values(), key=lambda r: r.id)

    def is_pinned(self, record: ImageRecord) -> bool:
        return record.pinned or any(t in self._pinned for t in record.repo_tags + record.repo_digests)

    # builtins.list: inside the class body `list` is the method above.
    def layer_dirs(self, record: ImageRecord) -> builtins.list[str]:
        return [str(self.snapshots.path(c)) for c in record.chain_ids]

    def full_config(self, record: ImageRecord) -> dict[str, Any]:
        """The whole image config document (for verbose ImageStatus)."""
        try:
            return json.loads(self.content.read(record.id))
        except (OSError, ValueError):
            return {"config": record.config}

    # ---- building records ------------------------------------------------------------

    async def _snapshot(self, chain_id: str, blob: Path, diff_id: str, layer_digest: str) -> Path:
        """One extraction per chain ID, however many pulls want it at once."""
        fut = self._snapshot_tasks.get(chain_id)
        if fut is None:
            fut = asyncio.ensure_future(asyncio.to_thread(self.snapshots.ensure, chain_id, blob, diff_id,
                                                          layer_digest, self.layer_limits))
            self._snapshot_tasks[chain_id] = fut

            def settled(f: asyncio.Future[Path], c: str = chain_id) -> None:
                self._snapshot_tasks.pop(c, None)
                if not f.cancelled():
                    f.exception()  # seen here, so a failure no waiter collects is not logged at GC

            fut.add_done_callback(settled)
        return await asyncio.shield(fut)

    async def unpack_layer(self, chain_id: str, layer_digest: str, diff_id: str) -> Path:
        return await self._snapshot(chain_id, self.content.path(layer_digest), diff_id, layer_digest)

    async def commit(self, img: ImportedImage, pinned: bool = False) -> ImageRecord:
        """Unpacks whatever layers are not yet snapshots and writes the
        record. The caller holds a lease."""
        cfg = parse_config(img.config_bytes)
        if len(cfg.diff_ids) != len(img.layers):
            raise ContentMismatch(f"image {img.config_digest} has {len(img.layers)} layers but its config lists "
                                  f"{len(cfg.diff_ids)} diff IDs")
        chains = chain_ids(cfg.diff_ids)
        await asyncio.gather(*(self.unpack_layer(chains[i], layer.digest, cfg.diff_ids[i])
                               for i, layer in enumerate(img.layers)))
        rec = ImageRecord(
            id=img.config_digest,
            repo_tags=[], repo_digests=[],
            size=len(img.config_bytes) + sum(layer.size for layer in img.layers),
            config=cfg.config, chain_ids=chains, pinned=pinned, diff_ids=cfg.diff_ids,
            blobs=list(dict.fromkeys([img.config_digest, *img.manifest_digests,
                                      *(layer.digest for layer in img.layers)])),
            layer_blobs=[layer.digest for layer in img.layers],
            os=str(cfg.raw.get("os", "")), architecture=str(cfg.raw.get("architecture", "")),
            variant=str(cfg.raw.get("variant", "")), created=str(cfg.raw.get("created", "")),
        )

        crashpoint("pull.before_record")

        def store() -> ImageRecord:
            with self.store.locked():
                return self.store.add_names(rec, img.tags, img.digests)
        rec = await asyncio.to_thread(store)
        self._usage = None
        return rec

    # ---- import and pull ---------------------------------------------------------------

    def _archive_reader(self) -> ArchiveReader:
        return ArchiveReader(self.content, self.platform, self.images_cfg.max_manifest_bytes,
                             self.images_cfg.max_config_bytes)

    async def import_archive(self, path: str) -> builtins.list[ImageRecord]:
        async with self.lease():
            imported = await asyncio.to_thread(self._archive_reader().read, path)
            records = []
            for img in imported:
                rec = await self.commit(img)
                log.info("image imported", extra={"fields": {"id": rec.id, "tags": rec.repo_tags, "from": path}})
                records.append(rec)
            return records

    async def pull(self, ref: str, auth: AuthConfigLike | None) -> ImageRecord:
        if self._registry is None:
            self._registry = Puller(self)
        started = time.perf_counter()
        try:
            rec = await self._registry.pull(ref, auth)
        except CrispyError as e:
            self.telemetry.image_pull(False, e.kind.name.lower(), 0, time.perf_counter() - started)
            raise
        except Exception:
            self.telemetry.image_pull(False, "internal", 0, time.perf_counter() - started)
            raise
        self.telemetry.image_pull(True, "", rec.size, time.perf_counter() - started)
        return rec

    # ---- removal -----------------------------------------------------------------------------

    async def remove(self, ref_or_id: str) -> None:
        """Untags when `ref_or_id` is one tag of several, else deletes the
        image (refused while containers use it). Absent images are fine:
        RemoveImage is idempotent."""
        rec = self._find(ref_or_id)
        if rec is None:
            return
        ref = reference.try_parse(ref_or_id)
        untag = (ref is not None and not ref.digest and ref.tagged in rec.repo_tags and len(rec.repo_tags) > 1
                 and not reference.is_hex_id(ref_or_id))
        if not untag:
            users = self.users_of(rec.id)
            if users:
                raise FailedPrecondition(
                    f"image {ref_or_id} ({rec.id}) is in use by container(s) {', '.join(users)}; remove them first")

        def mutate() -> bool:
            with self.store.locked():
                cur = self.store.records.get(rec.id)
                if cur is None:
                    return False
                if untag and ref is not None:
                    cur.repo_tags = [t for t in cur.repo_tags if t != ref.tagged]
                    self.store.put(cur)
                    return False
                self.store.delete(rec.id)
                return True
        deleted = await asyncio.to_thread(mutate)
        log.info("image removed" if deleted else "image untagged",
                 extra={"fields": {"ref": ref_or_id, "id": rec.id}})
        if deleted:
            await self.collect_garbage()

    # ---- usage ---------------------------------------------------------------------------------

    async def fs_usage(self) -> FsUsage:
        cached = self._usage
        if cached is not None and time.time_ns() - cached.timestamp_ns < USAGE_CACHE_S * 1e9:
            return cached

        def measure() -> FsUsage:
            used, inodes = disk_usage(self.root)
            return FsUsage(mountpoint_of(self.root), used, inodes, time.time_ns())
        self._usage = await asyncio.to_thread(measure)
        return self._usage
