"""RuntimeService: the RPC groups kubelet uses for pods and containers."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cri.servicers.containers import ContainerRPCs
from cri.servicers.sandboxes import SandboxRPCs
from cri.servicers.status import StatusRPCs
from cri.servicers.streaming import StreamingRPCs

if TYPE_CHECKING:
    from cri.daemon import Daemon


class RuntimeServicer(StatusRPCs, SandboxRPCs, ContainerRPCs, StreamingRPCs):
    def __init__(self, daemon: "Daemon") -> None:
        self.daemon = daemon
