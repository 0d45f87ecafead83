"""What the servicers use of the daemon, by name: its services and the
few node-wide answers (readiness, status, the pod CIDR). cri/daemon.py's
Daemon is the one implementation; naming it here keeps the servicers from
importing the daemon that builds them."""

from __future__ import annotations

from typing import Any, Protocol

from cri.config import Config
from cri.explain_on_demand import ExplainOnDemand
from cri.streaming.server import StreamingServer
from images.manager import ImageManager
from runtime.container_service import ContainerService
from runtime.criu import Criu
from runtime.events import EventBus
from runtime.features import NodeFeatures
from runtime.index import RecordIndex
from runtime.pod_health import PodHealth
from runtime.pod_metrics import PodMetricsSampler
from runtime.pod_service import PodService
from runtime.usage import UsageSampler


class Node(Protocol):
    config: Config
    version: str
    pods: PodService
    containers: ContainerService
    index: RecordIndex
    usage: UsageSampler
    health: PodHealth
    images: ImageManager
    streaming: StreamingServer
    features: NodeFeatures
    events: EventBus
    pod_metrics: PodMetricsSampler
    criu: Criu
    explain: ExplainOnDemand

    def runtime_readiness(self) -> dict[str, Any]: ...

    def network_readiness(self) -> dict[str, Any]: ...

    def status_info(self) -> dict[str, Any]: ...

    async def set_pod_cidr(self, cidr: str) -> None: ...
