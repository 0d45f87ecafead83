"""This host's OCI platform (GOOS/GOARCH/variant names) and the choice of
one manifest from an image index or Docker manifest list."""

from __future__ import annotations

import platform as _platform
from dataclasses import dataclass
from typing import Any

from runtime.errors import NotFound

_ARCH = {
    "x86_64": ("amd64", ""), "amd64": ("amd64", ""),
    "aarch64": ("arm64", "v8"), "arm64": ("arm64", "v8"),
    "armv7l": ("arm", "v7"), "armv6l": ("arm", "v6"), "armv5tel": ("arm", "v5"),
    "i386": ("386", ""), "i686": ("386", ""),
    "ppc64le": ("ppc64le", ""), "s390x": ("s390x", ""), "riscv64": ("riscv64", ""),
}


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


def host_platform(machine: str | None = None) -> Platform:
    m = machine or _platform.machine()
    arch, variant = _ARCH.get(m, (m, ""))
    return Platform("linux", arch, variant)


def _matches(want: Platform, p: dict[str, Any]) -> bool:
    if p.get("os") != want.os or p.get("architecture") != want.architecture:
        return False
    variant = p.get("variant", "")
    if not variant or not want.variant:
        # arm64 images rarely state v8; an unstated variant is the default one.
        return True
    return variant == want.variant


def select_manifest(manifests: list[dict[str, Any]], want: Platform, accepted_types: set[str],
                    what: str) -> dict[str, Any]:
    """The first entry for `want`, preferring an exact variant match. Entries
    of unknown media types (attestations, signatures) are ignored."""
    candidates = [d for d in manifests
                  if isinstance(d.get("mediaType"), str) and d["mediaType"] in accepted_types
                  and isinstance(d.get("platform"), dict)
                  and _matches(want, d["platform"])]
    for d in candidates:
        if d["platform"].get("variant", "") == want.variant:
            return d
    if candidates:
        return candidates[0]
    raise NotFound(f"{what} has no image for this host's platform {want} (it offers: {_summary(manifests)})")


# How many of an index's platforms a "no matching platform" error names;
# an index may list thousands, and a status message must stay small.
OFFERED_SHOWN = 8


def _name(p: dict[str, Any]) -> str:
    parts = (p.get("os", "?"), p.get("architecture", "?"), p.get("variant", ""))
    # Registry-controlled values: any JSON type, any length.
    return "/".join(str(x)[:32] for x in parts if x)


def _summary(manifests: list[dict[str, Any]]) -> str:
    offered = sorted({_name(d["platform"]) for d in manifests
                      if isinstance(d, dict) and isinstance(d.get("platform"), dict)})
    if not offered:
        return "nothing usable"
    shown = ", ".join(offered[:OFFERED_SHOWN])
    if len(offered) > OFFERED_SHOWN:
        shown += f" and {len(offered) - OFFERED_SHOWN} more platforms"
    return shown
