"""RunPodSandbox, StopPodSandbox, RemovePodSandbox, PodSandboxStatus and
ListPodSandbox: protobuf in, calls on the pod service (`daemon.pods`) and
the record index (`daemon.index`), protobuf out."""

from __future__ import annotations

import json
import time
from typing import Any

from cri.proto import api_pb2 as pb
from cri.servicers.filters import labels_match
from cri.servicers.node import Node
from cri.servicers.stats import container_stats, pod_sandbox_stats
from cri.servicers.summary_cache import SummaryCache
from cri.validation import check_pod_config, check_reply_size, check_request
from runtime.errors import InvalidArgument
from runtime.pod_view import pod_ips, verbose_info
from runtime.states import ContainerState, PodState
from runtime.store import SandboxRecord

_STATES = {PodState.READY: pb.SANDBOX_READY, PodState.NOT_READY: pb.SANDBOX_NOTREADY}
_MODES = {"pod": pb.POD, "container": pb.CONTAINER, "node": pb.NODE, "target": pb.TARGET}


def _metadata(rec: SandboxRecord) -> pb.PodSandboxMetadata:
    return pb.PodSandboxMetadata(name=rec.name, namespace=rec.namespace, uid=rec.uid, attempt=rec.attempt)


def _labels(rec: SandboxRecord) -> tuple[dict[str, str], dict[str, str]]:
    return dict(rec.config.get("labels", {})), dict(rec.config.get("annotations", {}))


def sandbox_summary(rec: SandboxRecord) -> pb.PodSandbox:
    labels, annotations = _labels(rec)
    return pb.PodSandbox(id=rec.id, metadata=_metadata(rec), state=_STATES[rec.state], created_at=rec.created_at,
                         labels=labels, annotations=annotations, runtime_handler=rec.runtime_handler)


def sandbox_status(rec: SandboxRecord) -> pb.PodSandboxStatus:
    labels, annotations = _labels(rec)
    ips = pod_ips(rec)
    network = pb.PodSandboxNetworkStatus(ip=ips[0] if ips else "",
                                         additional_ips=[pb.PodIP(ip=ip) for ip in ips[1:]])
    options = pb.NamespaceOption(network=pb.NODE if rec.host_network else pb.POD,
                                 ipc=pb.NODE if rec.host_ipc else pb.POD, pid=_MODES[rec.pid_mode])
    return pb.PodSandboxStatus(
        id=rec.id, metadata=_metadata(rec), state=_STATES[rec.state], created_at=rec.created_at, network=network,
        linux=pb.LinuxPodSandboxStatus(namespaces=pb.Namespace(options=options)),
        labels=labels, annotations=annotations, runtime_handler=rec.runtime_handler)


def matches(rec: SandboxRecord, f: pb.PodSandboxFilter) -> bool:
    if f.id and not rec.id.startswith(f.id):
        return False
    if f.HasField("state") and _STATES[rec.state] != f.state.state:
        return False
    return labels_match(rec.config, f.label_selector)


class SandboxRPCs:
    daemon: Node
    # Only the state of a listed pod changes after RunPodSandbox.
    sandbox_summaries: SummaryCache[SandboxRecord, pb.PodSandbox]

    async def RunPodSandbox(self, request: pb.RunPodSandboxRequest, context: Any) -> pb.RunPodSandboxResponse:
        if not request.HasField("config"):
            raise InvalidArgument("RunPodSandbox needs a config")
        check_request(request)
        check_pod_config(request.config)
        sandbox_id = await self.daemon.pods.run(request)
        return pb.RunPodSandboxResponse(pod_sandbox_id=sandbox_id)

    async def StopPodSandbox(self, request: pb.StopPodSandboxRequest, context: Any) -> pb.StopPodSandboxResponse:
        if not request.pod_sandbox_id:
            raise InvalidArgument("StopPodSandbox needs pod_sandbox_id")
        await self.daemon.pods.stop(request.pod_sandbox_id)
        return pb.StopPodSandboxResponse()

    async def RemovePodSandbox(self, request: pb.RemovePodSandboxRequest, context: Any) -> pb.RemovePodSandboxResponse:
        if not request.pod_sandbox_id:
            raise InvalidArgument("RemovePodSandbox needs pod_sandbox_id")
        await self.daemon.pods.remove(request.pod_sandbox_id)
        return pb.RemovePodSandboxResponse()

    async def UpdatePodSandboxResources(self, request: pb.UpdatePodSandboxResourcesRequest,
                                        context: Any) -> pb.UpdatePodSandboxResourcesResponse:
        if not request.pod_sandbox_id:
            raise InvalidArgument("UpdatePodSandboxResources needs pod_sandbox_id")
        check_request(request)
        await self.daemon.pods.update_resources(
            request.pod_sandbox_id, request.overhead if request.HasField("overhead") else None,
            request.resources if request.HasField("resources") else None)
        return pb.UpdatePodSandboxResourcesResponse()

    async def PodSandboxStatus(self, request: pb.PodSandboxStatusRequest, context: Any) -> pb.PodSandboxStatusResponse:
        index = self.daemon.index
        rec = index.sandbox(request.pod_sandbox_id)
        # Events mark a broken pod a moment later; this covers the moment.
        await self.daemon.health.refresh(rec)
        info = {}
        if request.verbose:
            info = {"info": json.dumps(verbose_info(rec, index.containers_of(rec.id)), sort_keys=True),
                    "explain": json.dumps(await self.daemon.explain.pod(rec), sort_keys=True)}
        return pb.PodSandboxStatusResponse(status=sandbox_status(rec), info=info, timestamp=time.time_ns())

    async def ListPodSandbox(self, request: pb.ListPodSandboxRequest, context: Any) -> pb.ListPodSandboxResponse:
        everything = self.daemon.index.sandboxes
        recs = list(everything.values())
        if request.HasField("filter"):
            recs = [r for r in recs if matches(r, request.filter)]
        recs.sort(key=lambda r: r.created_at)
        reply = pb.ListPodSandboxResponse(items=self.sandbox_summaries.summaries(recs, len(everything)))
        check_reply_size("ListPodSandbox", reply, reply.items, "pod sandboxes")
        return reply

    async def PodSandboxStats(self, request: pb.PodSandboxStatsRequest, context: Any) -> pb.PodSandboxStatsResponse:
        rec = self.daemon.index.sandbox(request.pod_sandbox_id)
        return pb.PodSandboxStatsResponse(stats=await pod_stats(self.daemon, rec))

    async def ListPodSandboxStats(self, request: pb.ListPodSandboxStatsRequest,
                                  context: Any) -> pb.ListPodSandboxStatsResponse:
        recs = sorted(self.daemon.index.sandboxes.values(), key=lambda r: r.created_at)
        if request.HasField("filter"):
            f = request.filter
            recs = [r for r in recs if (not f.id or r.id.startswith(f.id))
                    and labels_match(r.config, f.label_selector)]
        reply = pb.ListPodSandboxStatsResponse(stats=[await pod_stats(self.daemon, r) for r in recs])
        check_reply_size("ListPodSandboxStats", reply, reply.stats, "pod sandboxes")
        return reply


async def pod_stats(daemon: Node, rec: SandboxRecord) -> pb.PodSandboxStats:
    usage = await daemon.usage.pod_usage(rec)
    interfaces = await daemon.usage.pod_network_usage(rec)
    containers = [container_stats(ctr, await daemon.usage.container_usage(ctr))
                  for ctr in daemon.index.containers_of(rec.id) if ctr.state == ContainerState.RUNNING]
    return pod_sandbox_stats(rec, usage, interfaces, containers)
