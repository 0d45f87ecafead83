"""The per-pod files every container of a pod bind-mounts: /etc/hostname,
/etc/hosts and /etc/resolv.conf."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from runtime.errors import InvalidArgument

HOST_RESOLV_CONF = Path("/etc/resolv.conf")


@dataclass
class DnsSettings:
    servers: list[str] = field(default_factory=list)
    searches: list[str] = field(default_factory=list)
    options: list[str] = field(default_factory=list)

    def empty(self) -> bool:
        return not (self.servers or self.searches or self.options)


def resolv_conf(dns: DnsSettings, host_resolv: Path = HOST_RESOLV_CONF) -> bytes:
    """Kubelet's DnsConfig as resolv.conf; the node's own when it sends none
    (then the pod resolves like the node, as with dnsPolicy Default)."""
    if dns.empty():
        try:
            return host_resolv.read_bytes()
        except FileNotFoundError:
            return b""
    for item in (*dns.servers, *dns.searches, *dns.options):
        if any(c.isspace() for c in item) or not item:
            raise InvalidArgument(f"DNS config entry {item!r} must be one word with no whitespace")
    lines = []
    if dns.searches:
        lines.append("search " + " ".join(dns.searches))
    lines += [f"nameserver {s}" for s in dns.servers]
    if dns.options:
        lines.append("options " + " ".join(dns.options))
    return ("\n".join(lines) + "\n").encode()


def hosts(hostname: str, ips: list[str]) -> bytes:
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback",
             "fe00::0\tip6-localnet", "fe00::0\tip6-mcastprefix", "fe00::1\tip6-allnodes", "fe00::2\tip6-allrouters"]
    if hostname:
        lines += [f"{ip}\t{hostname}" for ip in ips if ip]
    return ("\n".join(lines) + "\n").encode()


@dataclass
class PodFiles:
    hostname: str
    hosts: str
    resolv_conf: str


# Host uid and gid that own the files: the ones the pod's user namespace
# maps to its root, so that root in the pod owns them as in a pod without
# one (else they show as the overflow "nobody"). None: the node's root.
Owner = tuple[int, int] | None


def write_static(pod_dir: Path, hostname: str, dns: DnsSettings, owner: Owner = None) -> PodFiles:
    """hostname and resolv.conf, which need nothing from the pod network;
    `write_hosts` completes the set. Blocking: call through asyncio.to_thread."""
    files = PodFiles(str(pod_dir / "hostname"), str(pod_dir / "hosts"), str(pod_dir / "resolv.conf"))
    _write_new(files.hostname, (hostname + "\n").encode() if hostname else b"", owner)
    _write_new(files.resolv_conf, resolv_conf(dns), owner)
    return files


def write_hosts(files: PodFiles, hostname: str, ips: list[str], owner: Owner = None) -> None:
    """Blocking."""
    _write_new(files.hosts, hosts(hostname, ips), owner)


def _write_new(path: str, data: bytes, owner: Owner) -> None:
    # The pod directory is new and nobody reads these files before the pod's
    # record exists, so no temp file and rename are needed to hide a torn
    # write. No fsync either: a crash of crispy keeps them (page cache), and
    # what would lose them (power loss, a kernel crash) also ends the pod's
    # namespaces and infra, so the sandbox is not ready after it whatever the
    # files hold (its containers are never started in it again).
    # World-readable: containers running as any user read them.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        os.fchmod(fd, 0o644)
        if owner is not None:
            os.fchown(fd, *owner)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
