"""PullImage: resolve a reference on the registry (mirrors first), pick
this host's manifest from an index, fetch the config and the layers (in
parallel, bounded daemon-wide by images.max_concurrent_downloads and
shared fairly among registries, slots.py), unpack each layer as it
arrives, then write the image record.

Two pulls of the same reference share one pull; two pulls needing the same
blob share one download. A pull (and a download) is cancelled once no
caller waits for it any more; what was downloaded stays for the next try.
Long pulls log their progress."""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

from images import manifest as mf
from images import reference
from images.archive_import import ImportedImage, LayerBlob
from images.content_store import ContentStore
from images.digests import ContentMismatch, chain_ids
from images.image_store import ImageRecord
from images.platform import Platform, select_manifest
from images.registry.auth import AuthConfigLike, Credentials, credentials_from, pull_scope
from images.registry.client import RegistryClient, Target
from images.registry.hosts import Endpoint, configured_credentials, endpoints_for
from images.registry.hosts_dir import HostsDir
from images.registry.shared import SharedWork
from images.registry.slots import DownloadSlots
from images.settings import ImagesConfig, ImageSettings
from images.snapshots import SnapshotStore
from runtime.crashpoints import crashpoint
from runtime.errors import CrispyError, InvalidArgument, ResourceExhausted

log = logging.getLogger("crispy.images.pull")

PROGRESS_INTERVAL_S = 5.0


class PullDestination(Protocol):
    """Where a pull puts what it fetches: images/manager.py's ImageManager,
    named by what the puller uses so that the registry side does not
    import the manager that owns it."""
    config: ImageSettings  # its `registries`
    images_cfg: ImagesConfig
    platform: Platform
    content: ContentStore
    snapshots: SnapshotStore

    def lease(self) -> AbstractAsyncContextManager[None]: ...

    async def unpack_layer(self, chain_id: str, layer_digest: str, diff_id: str) -> Path: ...

    async def commit(self, img: ImportedImage, pinned: bool = False) -> ImageRecord: ...


@dataclass
class Progress:
    ref: str
    total: int = 0
    done: int = 0
    started: float = field(default_factory=time.monotonic)

    def add(self, n: int) -> None:
        self.done += n

    def blob(self) -> Callable[[int], None]:
        """A callback for one blob's download, told how many of its bytes
        crispy has (which can also go back, when a download starts over)."""
        seen = 0

        def at(n: int) -> None:
            nonlocal seen
            self.done += n - seen
            seen = n
        return at

    def fields(self) -> dict[str, Any]:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        return {"ref": self.ref, "bytes": self.done, "total": self.total,
                "mb_per_s": round(self.done / elapsed / 1e6, 2), "elapsed_s": round(elapsed, 1)}


def _request_credentials(auth: AuthConfigLike | None, domain: str) -> Credentials | None:
    if auth is None:
        return None
    creds = credentials_from(auth.username, auth.password, auth.auth, auth.identity_token, auth.registry_token)
    if creds.empty:
        return None
    server = (auth.server_address or "").strip()
    if server:
        # kubelet fills server_address with the registry the secret is for.
        host = server.split("://", 1)[-1].split("/", 1)[0]
        if host not in (domain, reference.parse(f"{domain}/x").api_host) and not (
                domain == reference.DEFAULT_DOMAIN and host in ("index.docker.io", "registry-1.docker.io")):
            log.info("ignoring credentials for another registry",
                     extra={"fields": {"server": host, "registry": domain}})
            return None
    return creds


class Puller:
    def __init__(self, images: PullDestination) -> None:
        self.images = images
        cfg = images.images_cfg
        self.client = RegistryClient(cfg.pull_stall_timeout, min_rate=cfg.pull_min_rate,
                                     rate_window=cfg.pull_rate_window)
        self.slots = DownloadSlots(cfg.max_concurrent_downloads)
        self._pulls: SharedWork[str, ImageRecord] = SharedWork()
        self._blobs: SharedWork[str, None] = SharedWork()
        self.hosts_dir = HostsDir()

    async def close(self) -> None:
        await self.client.close()

    async def pull(self, ref_str: str, auth: AuthConfigLike | None) -> ImageRecord:
        ref = reference.parse(ref_str)
        key = str(ref)
        if self._pulls.running(key):
            log.info("joining a pull already under way", extra={"fields": {"ref": key}})
        return await self._pulls.join(key, lambda: self._pull(ref, auth))

    def _endpoints(self, domain: str) -> list[Endpoint]:
        """crispy's own [registries."<domain>"] table if there is one, else
        the hosts directory's word on the registry, else the registry alone."""
        registries = self.images.config.registries
        if domain not in registries:
            found = self.hosts_dir.endpoints(self.images.config.registry.config_path, domain)
            if found is not None:
                return [ep for ep in found if ep.capabilities & {"pull", "resolve"}]
        return endpoints_for(domain, registries)

    def _targets(self, ref: reference.Reference, auth: AuthConfigLike | None) -> list[Target]:
        registries = self.images.config.registries
        req_creds = _request_credentials(auth, ref.domain)
        out = []
        for ep in self._endpoints(ref.domain):
            if ep.mirror:
                creds = configured_credentials(registries, ep.config_key) or Credentials()
            else:
                creds = req_creds or configured_credentials(registries, ep.config_key) or Credentials()
            out.append(Target(ep, creds, pull_scope(ref.path)))
        return out

    async def _pull(self, ref: reference.Reference, auth: AuthConfigLike | None) -> ImageRecord:
        targets = self._targets(ref, auth)
        progress = Progress(str(ref))
        reporter = asyncio.ensure_future(self._report(progress))
        try:
            async with self.images.lease():
                errors: list[str] = []
                last: CrispyError | None = None
                for i, t in enumerate(targets):
                    if "resolve" not in t.endpoint.capabilities and not ref.digest:
                        continue  # a pull-only mirror serves blobs, never tags
                    # Blobs from pull-only mirrors placed before it first, then in turn.
                    early = [x for x in targets[:i] if "resolve" not in x.endpoint.capabilities]
                    order = [x for x in early + targets[i:] + targets[:i] if "pull" in x.endpoint.capabilities]
                    try:
                        rec = await self._pull_from(ref, t, _unique(order), progress)
                    except CrispyError as e:
                        errors.append(f"{t.endpoint}: {e.message}")
                        last = e
                        if t.endpoint.mirror:
                            log.info("mirror failed, trying the next endpoint",
                                     extra={"fields": {"ref": str(ref), "mirror": str(t.endpoint), "error": e.message}})
                        continue
                    log.info("image pulled",
                             extra={"fields": {**progress.fields(), "id": rec.id, "from": str(t.endpoint)}})
                    return rec
                if last is None:
                    raise InvalidArgument(f"no endpoint of {ref.domain} may resolve tags (each host's capabilities "
                                          f"lack \"resolve\"); pull {ref} by digest or give a host \"resolve\"")
                if len(errors) > 1:
                    last = type(last)(f"pulling {ref} failed on every endpoint: " + "; ".join(errors))
                log.info("pull failed", extra={"fields": {**progress.fields(), "error": last.message}})
                raise last
        except asyncio.CancelledError:
            log.info("pull cancelled: no caller waits for it any more", extra={"fields": progress.fields()})
            raise
        finally:
            reporter.cancel()

    async def _report(self, progress: Progress) -> None:
        while True:
            await asyncio.sleep(PROGRESS_INTERVAL_S)
            log.info("pulling", extra={"fields": progress.fields()})

    async def _pull_from(self, ref: reference.Reference, t: Target, blob_order: list[Target],
                         progress: Progress) -> ImageRecord:
        cfg = self.images.images_cfg
        repo = ref.path
        top_bytes, top_type, top_digest = await self.client.get_manifest(
            t, repo, ref.digest or ref.tag, cfg.max_manifest_bytes)
        media_type = mf.media_type_of(top_bytes, top_type)
        manifest_digests = [top_digest]
        blobs_to_store = [(top_digest, top_bytes)]
        man_bytes, man_digest = top_bytes, top_digest
        if media_type in mf.INDEX_TYPES:
            chosen = select_manifest(mf.parse_index(top_bytes), self.images.platform, mf.MANIFEST_TYPES, f"image {ref}")
            desc = mf.descriptor(chosen, f"image index of {ref}")
            man_bytes, _, man_digest = await self.client.get_manifest(
                t, repo, desc.digest, cfg.max_manifest_bytes, expected=(desc.digest, desc.size))
            mf.media_type_of(man_bytes, desc.media_type)
            manifest_digests.append(man_digest)
            blobs_to_store.append((man_digest, man_bytes))
        man = mf.parse_manifest(man_bytes)

        if man.config.size > cfg.max_config_bytes:
            raise ResourceExhausted(f"image config of {ref} is {man.config.size} bytes, over the "
                                    f"{cfg.max_config_bytes}-byte limit (images.max_config_bytes)")
        if not self.images.content.has(man.config.digest, man.config.size):
            progress.total += man.config.size
        await self._blob(blob_order, repo, man.config.digest, man.config.size, progress)
        config_bytes = await asyncio.to_thread(self.images.content.read, man.config.digest, cfg.max_config_bytes)
        parsed = mf.parse_config(config_bytes)
        if len(parsed.diff_ids) != len(man.layers):
            raise ContentMismatch(f"image {ref}: the manifest lists {len(man.layers)} layers but the config "
                                  f"{len(parsed.diff_ids)} diff IDs")
        chains = chain_ids(parsed.diff_ids)
        progress.total += sum(d.size for d, c in zip(man.layers, chains, strict=True)
                              if not self.images.snapshots.has(c))

        async def layer(i: int) -> None:
            d = man.layers[i]
            if self.images.snapshots.has(chains[i]):
                return  # already unpacked for another image: nothing to download
            await self._blob(blob_order, repo, d.digest, d.size, progress)
            crashpoint("pull.after_layer_download")
            await self.images.unpack_layer(chains[i], d.digest, parsed.diff_ids[i])

        tasks = [asyncio.ensure_future(layer(i)) for i in range(len(man.layers))]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        for digest, data in blobs_to_store:
            await asyncio.to_thread(self.images.content.put_bytes, digest, data)
        img = ImportedImage(man.config.digest, config_bytes, [LayerBlob(d.digest, d.size) for d in man.layers],
                            manifest_digests, [ref.tagged] if ref.tagged and not ref.digest else [],
                            [f"{ref.name}@{top_digest}"])
        return await self.images.commit(img)

    async def _blob(self, order: list[Target], repo: str, digest: str, size: int, progress: Progress) -> None:
        store = self.images.content
        if store.has(digest, size):
            return
        await self._blobs.join(digest, lambda: self._download(order, repo, digest, size, progress))

    async def _download(self, order: list[Target], repo: str, digest: str, size: int, progress: Progress) -> None:
        last: CrispyError | None = None
        at = progress.blob()
        for t in order:
            try:
                await self._fetch_in_slot(t, repo, digest, size, at)
                return
            except CrispyError as e:
                last = e
                if t is not order[-1]:
                    log.info("blob download failed, trying the next endpoint",
                             extra={"fields": {"blob": digest, "endpoint": str(t.endpoint), "error": e.message}})
        assert last is not None
        raise last

    async def _fetch_in_slot(self, t: Target, repo: str, digest: str, size: int, at: Callable[[int], None]) -> None:
        """fetch_blob while holding a download slot for the endpoint's host;
        asked to yield the slot (another registry's turn), the download
        stops and queues again, to resume where it stopped."""
        host = t.endpoint.host
        while True:
            slot = await self.slots.acquire(host)
            try:
                fetch = asyncio.ensure_future(self.client.fetch_blob(t, repo, digest, size, self.images.content, at))
                revoked = asyncio.ensure_future(slot.revoked.wait())
                try:
                    await asyncio.wait({fetch, revoked}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    revoked.cancel()
                    if not fetch.done():
                        fetch.cancel()
                    await asyncio.wait({fetch, revoked})
                if not fetch.cancelled():
                    return fetch.result()
                log.info("download yields its slot to another registry", extra={"fields": {
                    "blob": digest, "registry": host}})
            finally:
                self.slots.release(slot)


def _unique(targets: list[Target]) -> list[Target]:
    seen: set[int] = set()
    out = []
    for t in targets:
        if id(t) not in seen:
            seen.add(id(t))
            out.append(t)
    return out
