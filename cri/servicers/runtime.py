"""RuntimeService: the RPC groups kubelet uses for pods and containers."""

from __future__ import annotations

from cri.servicers.checkpoint import CheckpointRPCs
from cri.servicers.containers import ContainerRPCs, container_summary
from cri.servicers.events import EventRPCs
from cri.servicers.metrics import MetricsRPCs
from cri.servicers.node import Node
from cri.servicers.sandboxes import SandboxRPCs, sandbox_summary
from cri.servicers.status import StatusRPCs
from cri.servicers.stream_lists import StreamListRPCs
from cri.servicers.streaming import StreamingRPCs
from cri.servicers.summary_cache import SummaryCache


class RuntimeServicer(StatusRPCs, SandboxRPCs, ContainerRPCs, StreamingRPCs, StreamListRPCs, EventRPCs, MetricsRPCs,
                      CheckpointRPCs):
    def __init__(self, daemon: Node) -> None:
        self.daemon = daemon
        self.sandbox_summaries = SummaryCache(sandbox_summary, lambda r: r.state, lambda r: r.id)
        self.container_summaries = SummaryCache(container_summary, lambda c: c.state, lambda c: c.id)
