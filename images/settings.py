"""The image store's settings: the `[images]` table and one
`[registries."<host>"]` table per registry (cri/config.py reads them from
the file and flags, with every other table)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass
class RegistryHostConfig:
    # Tried in order before the registry itself.
    mirrors: list[str] = field(default_factory=list)
    # Plain http and no certificate checks.
    insecure: bool = False
    ca_file: str = ""
    # JSON file: {"username": ..., "password": ...} or {"auth": base64}.
    auth_file: str = ""
    # Never contact the registry itself, only its mirrors: for air-gapped
    # nodes, where a fallback would only send lookups out of the node.
    mirrors_only: bool = False


@dataclass
class RegistryConfig:
    # A hosts directory as containerd reads it (<host>/hosts.toml) or as
    # docker reads certs.d (<host>/ca.crt, client.cert, client.key); for a
    # registry with a [registries."<host>"] table of its own, that table
    # wins. Re-read when it changes.
    config_path: str = "/etc/crispy/certs.d"


@dataclass
class ImagesConfig:
    max_concurrent_downloads: int = 3
    # Seconds a pull may receive no bytes before it is cancelled.
    pull_stall_timeout: float = 60.0
    # Bytes/s a registry transfer must keep up, measured over
    # pull_rate_window seconds, or it is cancelled (0 = no minimum).
    pull_min_rate: int = 1024
    pull_rate_window: float = 60.0
    max_manifest_bytes: int = 4 * 1024 * 1024
    max_config_bytes: int = 8 * 1024 * 1024
    # Decompression bombs: a layer's uncompressed tar stream may be at most
    # this many bytes (0 = no limit), and at most max_layer_expansion_ratio
    # times its compressed size unless it stays within
    # layer_expansion_floor_bytes (ratio 0 = no ratio limit).
    max_layer_unpacked_bytes: int = 64 * 1024 ** 3
    max_layer_expansion_ratio: float = 100.0
    layer_expansion_floor_bytes: int = 512 * 1024 * 1024
    # Images reported as pinned, which kubelet's image GC never removes.
    pinned_images: list[str] = field(default_factory=list)


class ImageSettings(Protocol):
    """What the image store reads of the daemon's configuration."""
    images: ImagesConfig
    registries: dict[str, RegistryHostConfig]
    registry: RegistryConfig
