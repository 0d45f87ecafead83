"""CheckpointContainer: refused with what is missing while CRIU cannot work
on the node; the checkpoint itself is not implemented yet."""

from __future__ import annotations

from typing import Any

from cri.proto import api_pb2 as pb
from cri.servicers.node import Node
from runtime.errors import FailedPrecondition, InvalidArgument, Unimplemented
from runtime.states import ContainerState


class CheckpointRPCs:
    daemon: Node

    async def CheckpointContainer(self, request: pb.CheckpointContainerRequest,
                                  context: Any) -> pb.CheckpointContainerResponse:
        if request.timeout < 0:
            raise InvalidArgument("CheckpointContainer timeout must not be negative")
        ctr = self.daemon.index.container(request.container_id)
        problem = await self.daemon.criu.problem()
        if problem is not None:
            raise FailedPrecondition(f"cannot checkpoint container {ctr.id[:13]}: {problem}")
        if ctr.state != ContainerState.RUNNING:
            raise FailedPrecondition(f"container {ctr.id[:13]} is {ctr.state}; only a running container can be "
                                     "checkpointed")
        raise Unimplemented("CRIU works on this node, but crispy cannot checkpoint containers yet")
