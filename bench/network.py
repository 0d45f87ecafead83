"""The one CNI network every runtime in a bench run uses: a conflist on a
bench-only bridge and subnet, and the clean-up of what CNI leaves on the host
(the bridge itself outlives its last pod)."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

CNI_BIN_DIR = "/usr/lib/cni"
CONFLIST_NAME = "10-crispybench.conflist"


@dataclass(frozen=True)
class BenchNetwork:
    name: str = "crispybench"
    bridge: str = "crispybench0"
    subnet: str = "10.99.0.0/16"


def conflist(net: BenchNetwork, ipam_data_dir: str) -> dict:
    """bridge + host-local IPAM + portmap. Loopback is each runtime's own job
    (containerd adds it to every pod, crispy brings lo up itself), so it is
    not chained here: the loopback plugin cannot share a chain with bridge."""
    return {
        "cniVersion": "1.0.0",
        "name": net.name,
        "plugins": [
            {
                "type": "bridge",
                "bridge": net.bridge,
                "isGateway": True,
                # No masquerade: bench pods never talk off the host, and it
                # would leave per-pod iptables rules to clean.
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": net.subnet}]],
                    "dataDir": ipam_data_dir,
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def write_conf_dir(conf_dir: Path, net: BenchNetwork, ipam_data_dir: Path) -> Path:
    conf_dir.mkdir(parents=True, exist_ok=True)
    path = conf_dir / CONFLIST_NAME
    path.write_text(json.dumps(conflist(net, str(ipam_data_dir)), indent=2))
    return path


def bridge_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def remove_bridge(name: str) -> bool:
    """True if a bridge was there and is now gone."""
    if not bridge_exists(name):
        return False
    subprocess.run(["ip", "link", "del", name], check=False, capture_output=True)
    return not bridge_exists(name)


def leftover_veths(bridge: str) -> list[str]:
    """Host-side veths still enslaved to the bridge (a leak if pods are gone)."""
    brif = Path("/sys/class/net", bridge, "brif")
    return sorted(p.name for p in brif.iterdir()) if brif.exists() else []


def leftover_rules(net: BenchNetwork) -> list[str]:
    """iptables rules that name the bench network (CNI comments carry the
    network name): after every pod is gone there should be none."""
    try:
        out = subprocess.run(["iptables-save"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line for line in out.splitlines() if f'\\"{net.name}\\"' in line or net.bridge in line]
