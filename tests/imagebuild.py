"""Builds OCI images for tests from Debian's busybox-static, with no Docker
and no network: layers as tar bytes, an image as config + manifest + blobs,
written as an OCI layout, a `docker save` archive, or pushed to a registry.

Shared by tests/, critest/ and bench/.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import json
import subprocess
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

import zstandard

BUSYBOX = "/bin/busybox"

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = {"gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
             "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
             "none": "application/vnd.oci.image.layer.v1.tar"}
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# ---- layer entries -----------------------------------------------------------

@dataclass
class File:
    data: bytes = b""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    xattrs: dict[str, str] = field(default_factory=dict)


@dataclass
class Dir:
    mode: int = 0o755
    uid: int = 0
    gid: int = 0


@dataclass
class Symlink:
    target: str


@dataclass
class Hardlink:
    target: str  # path inside the layer, without leading slash
    # Unpackers (containerd's too) chmod the link path, i.e. the shared inode,
    # to this: give it the target's mode. 0o644 is tarfile's default.
    mode: int = 0o644


@dataclass
class CharDevice:
    major: int
    minor: int
    mode: int = 0o666


@dataclass
class Fifo:
    mode: int = 0o644


Entry = Union[File, Dir, Symlink, Hardlink, CharDevice, Fifo]

MTIME = 1_700_000_000  # fixed, so layers are reproducible


def make_layer(entries: dict[str, Entry]) -> bytes:
    """An uncompressed tar with `entries` in insertion order. Paths are
    relative (no leading slash); whiteouts are just files named `.wh.X`."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path, entry in entries.items():
            info = tarfile.TarInfo(path.lstrip("/"))
            info.mtime = MTIME
            payload = None
            if isinstance(entry, File):
                info.size, info.mode, info.uid, info.gid = len(entry.data), entry.mode, entry.uid, entry.gid
                if entry.xattrs:
                    info.pax_headers = {f"SCHILY.xattr.{k}": v for k, v in entry.xattrs.items()}
                payload = io.BytesIO(entry.data)
            elif isinstance(entry, Dir):
                info.type, info.mode, info.uid, info.gid = tarfile.DIRTYPE, entry.mode, entry.uid, entry.gid
            elif isinstance(entry, Symlink):
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, entry.target, 0o777
            elif isinstance(entry, Hardlink):
                info.type, info.linkname, info.mode = tarfile.LNKTYPE, entry.target, entry.mode
            elif isinstance(entry, CharDevice):
                info.type, info.devmajor, info.devminor, info.mode = tarfile.CHRTYPE, entry.major, entry.minor, entry.mode
            elif isinstance(entry, Fifo):
                info.type, info.mode = tarfile.FIFOTYPE, entry.mode
            tar.addfile(info, payload)
    return buf.getvalue()


def busybox_entries(passwd: str | None = None, group: str | None = None) -> dict[str, Entry]:
    """A minimal root filesystem: busybox with a symlink per applet."""
    binary = Path(BUSYBOX).read_bytes()
    applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True, check=True).stdout.split()
    entries: dict[str, Entry] = {
        "bin": Dir(), "bin/busybox": File(binary, 0o755),
        "etc": Dir(), "tmp": Dir(0o1777), "root": Dir(0o700), "home": Dir(),
        "proc": Dir(), "sys": Dir(), "dev": Dir(), "var": Dir(), "usr": Dir(), "usr/bin": Dir(),
        "etc/passwd": File((passwd or "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n").encode()),
        "etc/group": File((group or "root:x:0:\nnobody:x:65534:\n").encode()),
    }
    for applet in applets:
        if applet != "busybox":
            entries[f"bin/{applet}"] = Symlink("busybox")
    return entries


# ---- images ---------------------------------------------------------------------

@dataclass
class Image:
    """One platform's image: everything a registry or layout needs."""
    manifest: bytes
    config: bytes
    blobs: dict[str, bytes]  # digest -> bytes, config and layers included
    media_type: str

    @property
    def digest(self) -> str:
        return digest_of(self.manifest)

    @property
    def config_digest(self) -> str:
        return digest_of(self.config)


# Memoised: critest/ builds many images on one multi-megabyte base layer.
@functools.lru_cache(maxsize=16)
def compress(tar: bytes, how: str) -> bytes:
    if how == "gzip":
        return gzip.compress(tar, mtime=0)
    if how == "zstd":
        return zstandard.ZstdCompressor().compress(tar)
    return tar


def build_image(layers: list[bytes], config: dict | None = None, compression: str = "gzip",
                docker: bool = False, arch: str = "amd64", os_name: str = "linux") -> Image:
    """`layers` are uncompressed tars, lowest first. `config` is the image
    config's `config` member (Entrypoint, Cmd, Env, User, ...)."""
    cfg = {
        "architecture": arch, "os": os_name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(MTIME)),
        "config": config if config is not None else {"Cmd": ["/bin/sh"], "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [digest_of(t) for t in layers]},
        "history": [{"created_by": "crispy tests"} for _ in layers],
    }
    config_bytes = json.dumps(cfg, sort_keys=True).encode()
    blobs = {digest_of(config_bytes): config_bytes}
    layer_descs = []
    for tar in layers:
        data = compress(tar, "gzip" if docker else compression)
        blobs[digest_of(data)] = data
        layer_descs.append({"mediaType": DOCKER_LAYER if docker else OCI_LAYER[compression],
                            "digest": digest_of(data), "size": len(data)})
    mt = DOCKER_MANIFEST if docker else OCI_MANIFEST
    manifest = {"schemaVersion": 2, "mediaType": mt,
                "config": {"mediaType": DOCKER_CONFIG if docker else OCI_CONFIG,
                           "digest": digest_of(config_bytes), "size": len(config_bytes)},
                "layers": layer_descs}
    return Image(json.dumps(manifest, sort_keys=True).encode(), config_bytes, blobs, mt)


@dataclass
class Index:
    manifest: bytes
    images: list[Image]
    media_type: str

    @property
    def digest(self) -> str:
        return digest_of(self.manifest)


def build_index(images: list[tuple[Image, dict]], docker: bool = False) -> Index:
    """`images` pairs each image with its platform dict ({"os", "architecture", "variant"?})."""
    mt = DOCKER_LIST if docker else OCI_INDEX
    body = {"schemaVersion": 2, "mediaType": mt,
            "manifests": [{"mediaType": img.media_type, "digest": img.digest, "size": len(img.manifest),
                           "platform": plat} for img, plat in images]}
    return Index(json.dumps(body, sort_keys=True).encode(), [img for img, _ in images], mt)


def busybox_image(**kw) -> Image:
    return build_image([make_layer(busybox_entries())], **kw)


# ---- on-disk forms ----------------------------------------------------------------

def write_oci_layout(image: Image | Index, path: Path, ref_name: str = "latest") -> None:
    blobs_dir = path / "blobs" / "sha256"
    blobs_dir.mkdir(parents=True, exist_ok=True)
    images = image.images if isinstance(image, Index) else [image]
    for img in images:
        for dg, data in img.blobs.items():
            (blobs_dir / dg.split(":", 1)[1]).write_bytes(data)
        (blobs_dir / img.digest.split(":", 1)[1]).write_bytes(img.manifest)
    if isinstance(image, Index):
        (blobs_dir / image.digest.split(":", 1)[1]).write_bytes(image.manifest)
    (path / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    top = {"mediaType": image.media_type, "digest": image.digest, "size": len(image.manifest),
           "annotations": {"org.opencontainers.image.ref.name": ref_name}}
    (path / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [top]}))


def write_docker_archive(image: Image, path: Path, repo_tag: str) -> None:
    """The `docker save` format: manifest.json, config JSON and layer tars."""
    manifest = json.loads(image.manifest)
    with tarfile.open(path, "w") as tar:
        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), MTIME
            tar.addfile(info, io.BytesIO(data))
        cfg_name = image.config_digest.split(":", 1)[1] + ".json"
        add(cfg_name, image.config)
        layer_names = []
        for i, desc in enumerate(manifest["layers"]):
            data = image.blobs[desc["digest"]]
            if desc["mediaType"].endswith("gzip"):
                data = gzip.decompress(data)
            name = f"layer{i}/layer.tar"
            add(name, data)
            layer_names.append(name)
        add("manifest.json", json.dumps([{"Config": cfg_name, "RepoTags": [repo_tag], "Layers": layer_names}]).encode())
