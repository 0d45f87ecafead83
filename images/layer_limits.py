"""How far one layer may expand when unpacked, so a small download cannot
fill the node's disk or keep a core busy for hours (a decompression bomb).

What is counted is the layer's uncompressed tar stream, the bytes its diff
ID is computed over: every header and every stored byte of file data, but
not the holes of sparse members, which take no disk. A layer may unpack to

    min(max_bytes, max(ratio_floor, max_ratio * compressed size))

bytes; 0 turns either limit off. The floor keeps small layers (a tiny
layer with one preallocated file) from being refused by the ratio alone.
The count is checked as the stream is decompressed, so unpacking stops at
the limit instead of after the damage."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from images.settings import ImagesConfig
from runtime.errors import ResourceExhausted


class LayerTooBig(ResourceExhausted):
    """A layer that unpacks to more than its limits allow."""


@dataclass(frozen=True)
class LayerLimits:
    max_bytes: int = 0
    max_ratio: float = 0
    ratio_floor: int = 0

    @classmethod
    def from_config(cls, images_cfg: ImagesConfig) -> "LayerLimits":
        return cls(max_bytes=images_cfg.max_layer_unpacked_bytes,
                   max_ratio=images_cfg.max_layer_expansion_ratio,
                   ratio_floor=images_cfg.layer_expansion_floor_bytes)

    def cap(self, name: str, compressed_size: int) -> "LayerCap | None":
        """The byte limit for layer `name` of `compressed_size` bytes, or
        None when nothing limits it."""
        caps: list[LayerCap] = []
        if self.max_bytes > 0:
            caps.append(LayerCap(self.max_bytes, (
                f"layer {name} unpacks to more than {self.max_bytes} bytes, the limit set by "
                f"images.max_layer_unpacked_bytes; raise that limit (0 = no limit) if this image is trusted")))
        if self.max_ratio > 0:
            by_ratio = max(self.ratio_floor, int(self.max_ratio * compressed_size))
            caps.append(LayerCap(by_ratio, (
                f"layer {name} unpacks to more than {by_ratio} bytes from {compressed_size} compressed bytes, over "
                f"images.max_layer_expansion_ratio = {self.max_ratio:g} (layers up to "
                f"images.layer_expansion_floor_bytes = {self.ratio_floor} bytes are exempt); this looks like a "
                f"decompression bomb: raise either limit (0 = no ratio limit) if this image is trusted")))
        return min(caps, key=lambda c: c.limit) if caps else None


@dataclass(frozen=True)
class LayerCap:
    limit: int
    message: str


def bounded(pieces: Iterator[bytes], cap: LayerCap | None) -> Iterator[bytes]:
    """`pieces`, raising LayerTooBig as soon as they add up to more than
    the cap (before the piece that crosses it is handed on)."""
    if cap is None:
        yield from pieces
        return
    total = 0
    for piece in pieces:
        total += len(piece)
        if total > cap.limit:
            raise LayerTooBig(cap.message)
        yield piece
