"""A pod's network as its network namespace has it: interfaces, addresses
and routes (read with iproute2 inside the pinned namespace), DNS (the
resolv.conf its containers get), the CNI network and plugin chain that set
it up, and the hostPort mappings with the NAT rules that implement them."""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict, dataclass, field
from typing import Any

# What one iproute2 or iptables call may take: the report must not hang on
# a wedged netlink socket or xtables lock.
COMMAND_TIMEOUT_S = 5.0
MAX_RULES = 50


@dataclass
class NetworkFacts:
    netns: str  # the pinned file, or "host"
    interfaces: list[dict[str, Any]] = field(default_factory=list)
    routes: list[dict[str, Any]] = field(default_factory=list)
    dns: dict[str, list[str]] = field(default_factory=dict)
    cni_network: str = ""
    cni_plugins: list[str] = field(default_factory=list)
    cni_ifname: str = ""
    ips: list[str] = field(default_factory=list)
    port_mappings: list[dict[str, Any]] = field(default_factory=list)
    nat_rules: list[str] = field(default_factory=list)
    # Worth knowing but asked for (a host network, no CNI network yet).
    notes: list[str] = field(default_factory=list)
    # What the namespace has that the pod's records say it should not, or lacks.
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_addresses(text: str) -> list[dict[str, Any]]:
    """Sans-IO: `ip -j addr show` as interfaces with their addresses."""
    out = []
    for link in json.loads(text or "[]"):
        out.append({"name": link.get("ifname", ""), "state": link.get("operstate", ""),
                    "mac": link.get("address", ""), "mtu": link.get("mtu"),
                    "addresses": [f"{a.get('local')}/{a.get('prefixlen')}" for a in link.get("addr_info", [])
                                  if a.get("local")]})
    return out


def parse_routes(text: str) -> list[dict[str, Any]]:
    """Sans-IO: `ip -j route show`."""
    out = []
    for r in json.loads(text or "[]"):
        out.append({"dst": r.get("dst", ""), "gateway": r.get("gateway", ""), "dev": r.get("dev", ""),
                    "src": r.get("prefsrc", "")})
    return out


def parse_resolv_conf(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {"nameservers": [], "search": [], "options": []}
    for line in text.splitlines():
        parts = line.split()
        if not parts or parts[0].startswith(("#", ";")):
            continue
        if parts[0] == "nameserver" and len(parts) > 1:
            out["nameservers"].append(parts[1])
        elif parts[0] in ("search", "domain"):
            out["search"] = parts[1:]
        elif parts[0] == "options":
            out["options"] += parts[1:]
    return out


def rules_for(iptables_s: str, sandbox_id: str, ips: list[str]) -> list[str]:
    """Sans-IO: the NAT rules (`iptables -t nat -S`) that name the pod, by
    its ID (portmap's comments) or its addresses (DNAT targets)."""
    keys = [sandbox_id, *[f"{ip}:" for ip in ips], *[f"{ip}/32" for ip in ips]]
    return [line for line in iptables_s.splitlines() if any(k and k in line for k in keys)][:MAX_RULES]


def cni_facts(facts: NetworkFacts, network_status: dict[str, Any] | None) -> None:
    """The CNI side, from the pod's record of what ADD ran and returned."""
    state = (network_status or {}).get("state") or {}
    facts.cni_network = state.get("network", "")
    facts.cni_plugins = [p.get("type", "?") for p in (state.get("conflist") or {}).get("plugins", [])]
    facts.cni_ifname = state.get("ifname", "")
    facts.ips = list(state.get("ips") or [])
    facts.port_mappings = list((state.get("capabilityArgs") or {}).get("portMappings") or [])
    if state.get("loopbackOnly"):
        facts.notes.append("no CNI network was configured when the pod started: it has loopback only")


async def run(argv: list[str]) -> tuple[int, str, str]:
    try:
        proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.PIPE)
    except OSError as e:
        return 127, "", str(e)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), COMMAND_TIMEOUT_S)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        return 124, "", f"{argv[0]} took longer than {COMMAND_TIMEOUT_S}s"
    return proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")


async def gather(netns: str, sandbox_id: str, network_status: dict[str, Any] | None,
                 resolv_conf: str) -> NetworkFacts:
    """`netns`: the pinned file, or "" for a host-network pod."""
    facts = NetworkFacts(netns=netns or "host")
    prefix = ["nsenter", f"--net={netns}"] if netns else []
    code, out, err = await run([*prefix, "ip", "-j", "addr", "show"])
    if code == 0:
        facts.interfaces = parse_addresses(out)
    else:
        facts.notes.append(f"cannot list interfaces: {err.strip() or code}")
    for family in ("-4", "-6"):
        code, out, _ = await run([*prefix, "ip", "-j", family, "route", "show"])
        if code == 0:
            facts.routes += parse_routes(out)
    facts.dns = parse_resolv_conf(resolv_conf)
    cni_facts(facts, network_status)
    if facts.port_mappings or facts.ips:
        code, out, err = await run(["iptables", "-w", "5", "-t", "nat", "-S"])
        if code == 0:
            facts.nat_rules = rules_for(out, sandbox_id, facts.ips)
        if facts.port_mappings and not facts.nat_rules:
            facts.warnings.append("the pod has hostPort mappings but no NAT rule names it")
    if netns:
        have = {a.split("/")[0] for i in facts.interfaces for a in i["addresses"]}
        for ip in facts.ips:
            if ip not in have:
                facts.warnings.append(f"CNI gave the pod {ip}, but no interface in its namespace has it")
    return facts
