"""What a pod sandbox asks of pod networking, whatever provides it.

The sandbox code calls `setup` after the pod's network namespace exists and
`teardown` when the pod stops; the daemon asks `readiness` for Status. The
CNI implementation lives in runtime/cni/; `LoopbackOnly` is what a node has
until a network is configured: each pod gets its own namespace with lo up.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass
class PortMapping:
    protocol: str  # "tcp", "udp", "sctp"
    container_port: int
    host_port: int
    host_ip: str = ""


@dataclass
class PodNetworkRequest:
    sandbox_id: str
    netns_path: str
    pod_name: str
    pod_namespace: str
    pod_uid: str
    port_mappings: list[PortMapping] = field(default_factory=list)
    # kubelet's cgroup_parent, for plugins that want it (bandwidth).
    cgroup_parent: str = ""


@dataclass
class PodNetworkStatus:
    ip: str = ""
    additional_ips: list[str] = field(default_factory=list)
    # Opaque data the provider needs again for teardown (persisted with the sandbox).
    state: dict = field(default_factory=dict)


@dataclass
class Readiness:
    ready: bool
    reason: str = ""
    message: str = ""


class PodNetwork(Protocol):
    async def setup(self, req: PodNetworkRequest) -> PodNetworkStatus: ...

    # Idempotent; must work when the namespace is already gone.
    async def teardown(self, req: PodNetworkRequest, status: PodNetworkStatus) -> None: ...

    def readiness(self) -> Readiness: ...


async def bring_up_loopback(netns_path: str) -> None:
    # Not pyroute2's NetNS: it forks the daemon, and the forked child's
    # signal wake-up fd is the daemon's own, so the child exiting reached
    # crispy's event loop as a SIGTERM and shut the daemon down.
    import asyncio

    proc = await asyncio.create_subprocess_exec(
        "nsenter", f"--net={netns_path}", "--", "ip", "link", "set", "lo", "up",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate()
    if proc.returncode != 0:
        raise OSError(f"bringing up lo in {netns_path} failed: {err.decode(errors='replace').strip()}")


class LoopbackOnly:
    async def setup(self, req: PodNetworkRequest) -> PodNetworkStatus:
        await bring_up_loopback(req.netns_path)
        return PodNetworkStatus()

    async def teardown(self, req: PodNetworkRequest, status: PodNetworkStatus) -> None:
        return None

    def readiness(self) -> Readiness:
        return Readiness(False, "NetworkPluginNotReady", "no CNI network is configured; pods get loopback only")
