"""What a SIGHUP may change while crispy runs, as a pure comparison of two
configurations: keys that apply live (log level, registries and the hosts
directory, pinned images, NRI plugins once they are reloadable) and keys
that only a restart applies. cri/daemon.py applies the live part."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cri import config_files

# Key prefixes a running daemon takes over without a restart. NRI plugins
# join with ("nri",) and a Daemon.reload_hooks entry once they can.
LIVE: tuple[config_files.Key, ...] = (
    ("log_level",),
    ("registries",),
    ("registry",),
    ("images", "pinned_images"),
)


@dataclass
class Plan:
    live: list[str] = field(default_factory=list)      # dotted keys
    restart: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.live or self.restart)


def _flat(data: dict[str, Any]) -> dict[config_files.Key, Any]:
    return dict(config_files.leaves(data))


def plan(old: dict[str, Any], new: dict[str, Any], live: tuple[config_files.Key, ...] = LIVE) -> Plan:
    a, b = _flat(old), _flat(new)
    out = Plan()
    for key in sorted(set(a) | set(b)):
        if a.get(key, _MISSING) == b.get(key, _MISSING):
            continue
        name = config_files.dotted(key)
        (out.live if any(key[:len(p)] == p for p in live) else out.restart).append(name)
    return out


_MISSING = object()
