"""crispy's default pod network: a bridge with host-local addresses and
hostPort support, written only into a config directory that has no network.

Dual-stack when the subnets name both families (e.g. the pod CIDR
"10.244.1.0/24,fd00:10:244:1::/64"): one host-local range set per family.
"""

from __future__ import annotations

import ipaddress
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime import atomicfile
from runtime.cni.config import CONF_EXTENSIONS
from runtime.cni.settings import CniConfig
from runtime.errors import InvalidArgument

DEFAULT_NAME = "crispy"
DEFAULT_BRIDGE = "crispy0"
DEFAULT_FILE = "10-crispy.conflist"


def parse_subnets(spec: str) -> list[str]:
    """"a,b" -> canonical networks, at most one per family."""
    out: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        try:
            net = ipaddress.ip_network(part, strict=False)
        except ValueError:
            raise InvalidArgument(f"subnet {part!r} is not a valid network (want e.g. 10.88.0.0/16)") from None
        if any(n.version == net.version for n in out):
            raise InvalidArgument(f"subnets {spec!r}: more than one IPv{net.version} subnet")
        if net.num_addresses < 4:
            raise InvalidArgument(f"subnet {part!r} is too small for a bridge network")
        out.append(net)
    if not out:
        raise InvalidArgument("no subnet given for the default network")
    return [str(n) for n in out]


def conflist(subnets: list[str], name: str = DEFAULT_NAME, bridge: str = DEFAULT_BRIDGE,
             data_dir: str | None = None, ip_masq: bool = True) -> dict[str, Any]:
    ranges = [[{"subnet": s}] for s in subnets]
    routes = [{"dst": "0.0.0.0/0" if ipaddress.ip_network(s).version == 4 else "::/0"} for s in subnets]
    ipam: dict[str, Any] = {"type": "host-local", "ranges": ranges, "routes": routes}
    if data_dir:
        ipam["dataDir"] = data_dir
    return {
        "cniVersion": "1.0.0",
        "name": name,
        "plugins": [
            {"type": "bridge", "bridge": bridge, "isGateway": True, "ipMasq": ip_masq,
             # Lets a pod reach itself through its own hostPort.
             "hairpinMode": True, "ipam": ipam},
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def has_network_config(conf_dir: str) -> bool:
    try:
        return any(n.endswith(CONF_EXTENSIONS) and not n.startswith(".") for n in os.listdir(conf_dir))
    except FileNotFoundError:
        return False


def install(conf_dir: str, subnets: list[str], **kwargs: Any) -> Path | None:
    """Writes the default network into `conf_dir` unless it already holds a
    network config (then returns None: an operator's config always wins)."""
    if has_network_config(conf_dir):
        return None
    os.makedirs(conf_dir, mode=0o755, exist_ok=True)
    path = Path(conf_dir) / DEFAULT_FILE
    atomicfile.write_bytes(path, json.dumps(conflist(subnets, **kwargs), indent=2).encode() + b"\n", mode=0o644)
    return path


def install_for(cni_cfg: CniConfig, data_root: str) -> tuple[Path | None, str]:
    """What `crispy cni-install` does: the default network on the pod CIDR
    kubelet last gave (UpdateRuntimeConfig, persisted under data_root) or
    else `[cni] default_subnet`. Returns the file written (or None) and a
    sentence for the operator."""
    saved = atomicfile.read_json(Path(data_root) / "runtime-config.json", {}) or {}
    pod_cidr = saved.get("pod_cidr", "")
    subnets = parse_subnets(pod_cidr or cni_cfg.default_subnet)
    path = install(cni_cfg.conf_dir, subnets)
    if path is None:
        return None, f"{cni_cfg.conf_dir} already has a network config; left it alone"
    origin = "pod CIDR from UpdateRuntimeConfig" if pod_cidr else "[cni] default_subnet"
    return path, f"wrote {path}: bridge {DEFAULT_BRIDGE} on {', '.join(subnets)} ({origin})"


def generated_subnets(doc: Any) -> list[str] | None:
    """The subnets of a default network exactly as crispy wrote it, or None
    for anything else (an operator's config, or ours edited by hand)."""
    try:
        bridge = doc["plugins"][0]
        subnets = [r[0]["subnet"] for r in bridge["ipam"]["ranges"]]
        again = conflist(subnets, name=doc["name"], bridge=bridge["bridge"],
                         data_dir=bridge["ipam"].get("dataDir"), ip_masq=bridge["ipMasq"])
    except (KeyError, IndexError, TypeError, ValueError):
        return None
    return subnets if again == doc else None


@dataclass
class Retarget:
    path: Path
    doc: dict[str, Any]
    bridge: str
    old: list[str]
    new: list[str]


def retarget_plan(conf_dir: str, pod_cidr: str) -> Retarget | None:
    """When kubelet's pod CIDR differs from the subnets of the default
    network crispy wrote, the rewrite that applies it; else None."""
    path = Path(conf_dir) / DEFAULT_FILE
    try:
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    old = generated_subnets(doc)
    if old is None:
        return None
    new = parse_subnets(pod_cidr)
    if new == old:
        return None
    bridge = doc["plugins"][0]
    new_doc = conflist(new, name=doc["name"], bridge=bridge["bridge"], data_dir=bridge["ipam"].get("dataDir"),
                       ip_masq=bridge["ipMasq"])
    return Retarget(path, new_doc, bridge["bridge"], old, new)


def bridge_ports(bridge: str) -> list[str] | None:
    """Interfaces attached to `bridge`, or None if there is no such bridge."""
    try:
        return os.listdir(f"/sys/class/net/{bridge}/brif")
    except FileNotFoundError:
        return None
