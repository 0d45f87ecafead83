"""The `[cni]` table: where network configs and plugins are, and how long
a plugin may take (cri/config.py reads it with every other table)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class CniConfig:
    conf_dir: str = "/etc/cni/net.d"
    bin_dirs: list[str] = field(default_factory=lambda: ["/opt/cni/bin", "/usr/lib/cni"])
    # Seconds before a hung plugin is killed.
    plugin_timeout: float = 60.0
    # Subnet of the default network crispy writes when conf_dir has none;
    # UpdateRuntimeConfig's pod CIDR takes precedence.
    default_subnet: str = "10.88.0.0/16"
