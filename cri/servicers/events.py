"""GetContainerEvents: the event bus (runtime/events.py) as a stream of
ContainerEventResponse, each with the pod's status and its containers'
statuses as they were when the event happened (what kubelet's evented
PLEG updates its cache from). A subscriber cut off for falling behind
gets RESOURCE_EXHAUSTED; one still connected at shutdown gets UNAVAILABLE."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from cri.proto import api_pb2 as pb
from cri.servicers.containers import container_status
from cri.servicers.node import Node
from cri.servicers.sandboxes import sandbox_status
from runtime.events import Event, EventKind

_TYPES = {EventKind.CREATED: pb.CONTAINER_CREATED_EVENT, EventKind.STARTED: pb.CONTAINER_STARTED_EVENT,
          EventKind.STOPPED: pb.CONTAINER_STOPPED_EVENT, EventKind.DELETED: pb.CONTAINER_DELETED_EVENT}


def event_message(event: Event) -> pb.ContainerEventResponse:
    return pb.ContainerEventResponse(
        container_id=event.container_id, container_event_type=_TYPES[event.kind], created_at=event.created_at,
        pod_sandbox_status=sandbox_status(event.pod) if event.pod is not None else None,
        containers_statuses=[container_status(c) for c in event.containers])


class EventRPCs:
    daemon: Node

    async def GetContainerEvents(self, request: pb.GetEventsRequest,
                                 context: Any) -> AsyncIterator[pb.ContainerEventResponse]:
        with self.daemon.events.subscribe() as sub:
            while True:
                yield event_message(await sub.next())
