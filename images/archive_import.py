"""Reads images out of an OCI image layout (a directory or a tar of one) or
a `docker save` archive and copies their blobs into the content store.

Every blob named by digest is verified on the way in; layers of a
`docker save` archive have no digest of their own and are verified against
the image config's diff IDs when unpacked. Paths inside the archive are
untrusted: anything leaving it is refused. Blocking; run in a thread."""

from __future__ import annotations

import json
import logging
import posixpath
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Iterator

from images import manifest as mf
from images.content_store import ContentStore
from images.digests import ContentMismatch, hex_of, sha256_of, verify
from images.platform import Platform, select_manifest
from images.reference import Reference, try_parse
from runtime.errors import InvalidArgument

log = logging.getLogger("crispy.images.import")

REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"


@dataclass
class LayerBlob:
    digest: str
    size: int


@dataclass
class ImportedImage:
    """One image whose blobs are now in the content store."""
    config_digest: str
    config_bytes: bytes
    layers: list[LayerBlob]
    manifest_digests: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    digests: list[str] = field(default_factory=list)


class _Source:
    def open(self, name: str) -> BinaryIO:
        raise NotImplementedError

    def exists(self, name: str) -> bool:
        raise NotImplementedError

    def close(self) -> None:
        pass


def _inside(name: str) -> str:
    norm = posixpath.normpath(name.lstrip("/")) if name else ""
    if not name or name.startswith("/") or norm == ".." or norm.startswith("../"):
        raise InvalidArgument(f"archive entry {name!r} points outside the archive")
    return norm


class _DirSource(_Source):
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def _path(self, name: str) -> Path:
        p = (self.root / _inside(name)).resolve()
        if p != self.root and self.root not in p.parents:
            raise InvalidArgument(f"archive entry {name!r} points outside {self.root}")
        return p

    def open(self, name: str) -> BinaryIO:
        try:
            return open(self._path(name), "rb")
        except FileNotFoundError:
            raise InvalidArgument(f"{self.root} has no {name}; is it a complete OCI image layout?") from None

    def exists(self, name: str) -> bool:
        return self._path(name).is_file()


class _TarSource(_Source):
    def __init__(self, path: Path) -> None:
        try:
            self.tar = tarfile.open(path, "r:*")
        except tarfile.TarError as e:
            raise InvalidArgument(f"{path} is not a tar archive, OCI layout directory or docker save file: "
                                  f"{e}") from None
        self.path = path
        self.members: dict[str, tarfile.TarInfo] = {}
        for m in self.tar.getmembers():
            if m.isreg() or m.issym() or m.islnk():
                self.members[posixpath.normpath(m.name.lstrip("/"))] = m

    def _resolve(self, name: str, depth: int = 0) -> tarfile.TarInfo:
        m = self.members.get(_inside(name))
        if m is None:
            raise InvalidArgument(f"{self.path} has no entry {name!r}; the archive is incomplete")
        if m.issym() and depth < 8:
            # Old `docker save` archives share identical layers via symlinks.
            return self._resolve(posixpath.join(posixpath.dirname(_inside(name)), m.linkname), depth + 1)
        if m.islnk() and depth < 8:
            return self._resolve(m.linkname, depth + 1)
        if not m.isreg():
            raise InvalidArgument(f"{self.path}: entry {name!r} is not a regular file")
        return m

    def open(self, name: str) -> BinaryIO:
        f = self.tar.extractfile(self._resolve(name))
        assert f is not None
        return f  # type: ignore[return-value]  # extractfile's IO[bytes] is a BufferedReader, a BinaryIO

    def exists(self, name: str) -> bool:
        try:
            self._resolve(name)
            return True
        except InvalidArgument:
            return False

    def close(self) -> None:
        self.tar.close()


def _read(src: _Source, name: str, limit: int) -> bytes:
    with src.open(name) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise InvalidArgument(f"archive entry {name} is larger than the {limit}-byte limit")
    return data


def _blob_name(digest: str) -> str:
    return f"blobs/sha256/{hex_of(digest)}"


def _read_blob(src: _Source, d: mf.Descriptor, limit: int, what: str) -> bytes:
    if d.size > limit:
        raise InvalidArgument(f"{what} {d.digest} is {d.size} bytes, over the {limit}-byte limit")
    data = _read(src, _blob_name(d.digest), limit)
    verify(data, d.digest, d.size, what)
    return data


def _image_name(annotations: dict[str, Any]) -> Reference | None:
    for key in (CONTAINERD_NAME, REF_NAME):
        value = annotations.get(key)
        # A bare ref.name like "latest" is only a tag within the layout, not
        # an image name; only full references name images.
        if isinstance(value, str) and ("/" in value or ":" in value or "@" in value):
            ref = try_parse(value)
            if ref is not None:
                return ref
    return None


class ArchiveReader:
    def __init__(self, store: ContentStore, platform: Platform, max_manifest: int, max_config: int) -> None:
        self.store, self.platform = store, platform
        self.max_manifest, self.max_config = max_manifest, max_config

    def read(self, path: str) -> list[ImportedImage]:
        p = Path(path)
        if not p.exists():
            raise InvalidArgument(f"{path} does not exist")
        src: _Source = _DirSource(p) if p.is_dir() else _TarSource(p)
        try:
            if src.exists("index.json") and src.exists("oci-layout"):
                images = list(self._oci(src))
                if images:
                    if src.exists("manifest.json"):
                        self._names_from_docker_manifest(src, images)
                    return images
            if src.exists("manifest.json"):
                return list(self._docker(src))
            raise InvalidArgument(f"{path} is neither an OCI image layout (index.json, oci-layout) nor a docker save "
                                  f"archive (manifest.json)")
        finally:
            src.close()

    # ---- OCI image layout ---------------------------------------------------

    def _oci(self, src: _Source) -> Iterator[ImportedImage]:
        try:
            index = json.loads(_read(src, "index.json", self.max_manifest))
        except ValueError as e:
            raise InvalidArgument(f"index.json is not valid JSON: {e}") from None
        entries = index.get("manifests") if isinstance(index, dict) else None
        if not isinstance(entries, list) or not entries:
            raise InvalidArgument("index.json lists no images")
        for i, raw in enumerate(entries):
            top = mf.descriptor(raw, f"index.json entry {i}")
            name = _image_name(raw.get("annotations") or {})
            desc = top
            if top.media_type in mf.INDEX_TYPES:
                data = _read_blob(src, top, self.max_manifest, "image index")
                self.store.put_bytes(top.digest, data)
                chosen = select_manifest(mf.parse_index(data), self.platform, mf.MANIFEST_TYPES,
                                         f"image index {top.digest}")
                desc = mf.descriptor(chosen, "image index entry")
            elif top.media_type and top.media_type not in mf.MANIFEST_TYPES:
                log.info("skipping index.json entry of unsupported type", extra={"fields": {"type": top.media_type}})
                continue
            img = self._from_manifest(src, desc)
            img.manifest_digests = list(dict.fromkeys([top.digest, desc.digest]))
            if name is not None:
                if name.tag:
                    img.tags.append(name.tagged)
                img.digests.append(f"{name.name}@{top.digest}")
            yield img

    def _from_manifest(self, src: _Source, desc: mf.Descriptor) -> ImportedImage:
        data = _read_blob(src, desc, self.max_manifest, "manifest")
        mf.media_type_of(data, desc.media_type)
        man = mf.parse_manifest(data)
        self.store.put_bytes(desc.digest, data)
        config = _read_blob(src, man.config, self.max_config, "image config")
        self.store.put_bytes(man.config.digest, config)
        layers = []
        for layer in man.layers:
            if not self.store.has(layer.digest, layer.size):
                with src.open(_blob_name(layer.digest)) as f:
                    self.store.put_stream(layer.digest, layer.size, f)
            layers.append(LayerBlob(layer.digest, layer.size))
        return ImportedImage(man.config.digest, config, layers)

    # ---- docker save ------------------------------------------------------------

    def _docker_manifest(self, src: _Source) -> list[dict[str, Any]]:
        try:
            doc = json.loads(_read(src, "manifest.json", self.max_manifest))
        except ValueError as e:
            raise InvalidArgument(f"manifest.json is not valid JSON: {e}") from None
        if not isinstance(doc, list) or not all(isinstance(e, dict) for e in doc):
            raise InvalidArgument("manifest.json is not a list of images")
        return doc

    def _names_from_docker_manifest(self, src: _Source, images: list[ImportedImage]) -> None:
        # Docker 25+ writes both forms; its manifest.json carries the tags.
        by_config = {img.config_digest: img for img in images}
        for entry in self._docker_manifest(src):
            cfg = str(entry.get("Config", ""))
            hexpart = posixpath.basename(cfg).split(".")[0]
            img = by_config.get(f"sha256:{hexpart}")
            if img is not None:
                for tag in entry.get("RepoTags") or []:
                    ref = try_parse(str(tag))
                    if ref is not None and ref.tagged and ref.tagged not in img.tags:
                        img.tags.append(ref.tagged)

    def _docker(self, src: _Source) -> Iterator[ImportedImage]:
        for i, entry in enumerate(self._docker_manifest(src)):
            cfg_name, layer_names = entry.get("Config"), entry.get("Layers")
            if not isinstance(cfg_name, str) or not isinstance(layer_names, list):
                raise InvalidArgument(f"manifest.json entry {i} lacks Config or Layers")
            config = _read(src, cfg_name, self.max_config)
            config_digest = sha256_of(config)
            stem = posixpath.basename(cfg_name).split(".")[0]
            if len(stem) == 64 and f"sha256:{stem}" != config_digest:
                raise ContentMismatch(f"docker archive config {cfg_name} has digest {config_digest}; "
                                      "the archive is corrupt")
            parsed = mf.parse_config(config)
            if len(parsed.diff_ids) != len(layer_names):
                raise ContentMismatch(f"docker archive image {i}: {len(layer_names)} layers but the config lists "
                                      f"{len(parsed.diff_ids)} diff IDs")
            self.store.put_bytes(config_digest, config)
            layers = []
            for name in layer_names:
                with src.open(str(name)) as f:
                    digest, size = self.store.put_stream_any(f)
                layers.append(LayerBlob(digest, size))
            tags = []
            for tag in entry.get("RepoTags") or []:
                ref = try_parse(str(tag))
                if ref is None or not ref.tag:
                    raise InvalidArgument(f"docker archive names the image {tag!r}, which is not a valid name:tag")
                tags.append(ref.tagged)
            yield ImportedImage(config_digest, config, layers, [], tags, [])

