"""Manifests, indexes and image configs as crispy accepts them: OCI and
Docker schema 2, checked field by field so a bad document becomes a clear
error instead of a KeyError later. Schema 1 is refused."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from images.digests import ContentMismatch
from images.reference import is_digest
from runtime.errors import FailedPrecondition, InvalidArgument

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_SCHEMA1 = ("application/vnd.docker.distribution.manifest.v1+json",
                  "application/vnd.docker.distribution.manifest.v1+prettyjws")

INDEX_TYPES = {OCI_INDEX, DOCKER_LIST}
MANIFEST_TYPES = {OCI_MANIFEST, DOCKER_MANIFEST}
LAYER_TYPES = {
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.diff.tar",
}
ACCEPT = ", ".join([OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST])


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: dict[str, Any] | None = None


@dataclass
class Manifest:
    media_type: str
    config: Descriptor
    layers: list[Descriptor]


@dataclass
class ImageConfig:
    raw: dict[str, Any]
    diff_ids: list[str]

    @property
    def config(self) -> dict[str, Any]:
        c = self.raw.get("config")
        return c if isinstance(c, dict) else {}


def _json(data: bytes, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise ContentMismatch(f"{what} is not valid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise ContentMismatch(f"{what} is not a JSON object")
    return doc


def descriptor(d: Any, what: str) -> Descriptor:
    if not isinstance(d, dict):
        raise ContentMismatch(f"{what}: descriptor is not an object")
    digest, size, mt = d.get("digest"), d.get("size"), d.get("mediaType", "")
    if not isinstance(digest, str) or not is_digest(digest) or not digest.startswith("sha256:"):
        raise ContentMismatch(f"{what}: descriptor digest {digest!r} is not a sha256 digest")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ContentMismatch(f"{what}: descriptor for {digest} has invalid size {size!r}")
    plat = d.get("platform")
    return Descriptor(str(mt), digest, size, plat if isinstance(plat, dict) else None)


def media_type_of(data: bytes, header_type: str = "") -> str:
    """The document's own mediaType, else the one the server sent, else a
    guess from its shape (old OCI documents omit mediaType)."""
    doc = _json(data, "manifest")
    mt = doc.get("mediaType") or header_type.split(";")[0].strip()
    if doc.get("schemaVersion") == 1 or mt in DOCKER_SCHEMA1:
        raise FailedPrecondition("the registry offers this image only as a Docker schema 1 manifest, which crispy "
                                 "does not support (it is deprecated and unverifiable); re-push the image with a "
                                 "current Docker or buildah")
    if mt in INDEX_TYPES or mt in MANIFEST_TYPES:
        return mt
    if "manifests" in doc:
        return OCI_INDEX
    if "layers" in doc and "config" in doc:
        return OCI_MANIFEST
    raise InvalidArgument(f"unsupported manifest media type {mt!r}; crispy handles OCI and Docker schema 2 images")


def parse_index(data: bytes) -> list[dict[str, Any]]:
    doc = _json(data, "image index")
    entries = doc.get("manifests")
    if not isinstance(entries, list):
        raise ContentMismatch("image index has no 'manifests' list")
    return [e for e in entries if isinstance(e, dict)]


def parse_manifest(data: bytes) -> Manifest:
    mt = media_type_of(data)
    if mt not in MANIFEST_TYPES:
        raise ContentMismatch(f"expected an image manifest, got {mt}")
    doc = _json(data, "manifest")
    config = descriptor(doc.get("config"), "manifest config")
    layers_raw = doc.get("layers")
    if not isinstance(layers_raw, list):
        raise ContentMismatch("manifest has no 'layers' list")
    layers = [descriptor(d, f"manifest layer {i}") for i, d in enumerate(layers_raw)]
    for layer in layers:
        if layer.media_type and layer.media_type not in LAYER_TYPES:
            raise InvalidArgument(f"layer {layer.digest} has media type {layer.media_type!r}, "
                                  "which crispy cannot unpack "
                                  f"(supported: tar, tar+gzip, tar+zstd)")
    return Manifest(mt, config, layers)


def parse_config(data: bytes) -> ImageConfig:
    doc = _json(data, "image config")
    rootfs = doc.get("rootfs")
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list) or not all(isinstance(d, str) and is_digest(d) and d.startswith("sha256:")
                                                 for d in diff_ids):
        raise ContentMismatch("image config has no valid rootfs.diff_ids list")
    return ImageConfig(doc, list(diff_ids))
