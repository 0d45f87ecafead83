"""What a pod sandbox asks of pod networking, whatever provides it.

The sandbox code calls `setup` after the pod's network namespace exists and
`teardown` when the pod stops; the daemon asks `readiness` for Status. The
CNI implementation lives in runtime/cni/. `lo` is not the provider's: every
new pod network namespace comes with it up (runtime/namespaces.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Protocol


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
    # `before_add`, if given, is awaited with the teardown state before
    # anything is set up (the caller persists it for crash recovery).
    async def setup(self, req: PodNetworkRequest,
                    before_add: Callable[[dict[str, Any]], Awaitable[None]] | None = None) -> PodNetworkStatus: ...

    # Idempotent; must work when the namespace is already gone.
    async def teardown(self, req: PodNetworkRequest, status: PodNetworkStatus) -> None: ...

    def readiness(self) -> Readiness: ...
