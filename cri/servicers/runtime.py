"""RuntimeService: the RPC groups kubelet uses for pods and containers."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cri.servicers.containers import ContainerRPCs, container_summary
from cri.servicers.sandboxes import SandboxRPCs, sandbox_summary
from cri.servicers.status import StatusRPCs
from cri.servicers.streaming import StreamingRPCs
from cri.servicers.summary_cache import SummaryCache

if TYPE_CHECKING:
    from cri.daemon import Daemon


class RuntimeServicer(StatusRPCs, SandboxRPCs, ContainerRPCs, StreamingRPCs):
    def __init__(self, daemon: "Daemon") -> None:
        self.daemon = daemon
        self.sandbox_summaries = SummaryCache(sandbox_summary, lambda r: r.state, lambda r: r.id)
        self.container_summaries = SummaryCache(container_summary, lambda c: c.state, lambda c: c.id)
