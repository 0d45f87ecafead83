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
    import asyncio

    def _up() -> None:
        from pyroute2 import NetNS

        with NetNS(netns_path) as ns:
            idx = ns.link_lookup(ifname="lo")[0]
            ns.link("set", index=idx, state="up")

    await asyncio.to_thread(_up)


class LoopbackOnly:
    async def setup(self, req: PodNetworkRequest) -> PodNetworkStatus:
        await bring_up_loopback(req.netns_path)
        return PodNetworkStatus()

    async def teardown(self, req: PodNetworkRequest, status: PodNetworkStatus) -> None:
        return None

    def readiness(self) -> Readiness:
        return Readiness(False, "NetworkPluginNotReady", "no CNI network is configured; pods get loopback only")
