"""CreateContainer, StartContainer, StopContainer, RemoveContainer,
ListContainers, ContainerStatus, UpdateContainerResources,
ReopenContainerLog and ExecSync: protobuf in, calls on the container
service (`daemon.containers`) and the record index (`daemon.index`),
protobuf out."""

from __future__ import annotations

import json
from typing import Any, cast

from google.protobuf import json_format

from cri.proto import api_pb2 as pb
from cri.servicers.filters import labels_match
from cri.servicers.node import Node
from cri.servicers.stats import container_stats
from cri.servicers.summary_cache import SummaryCache
from cri.validation import check_container_config, check_reply_size, check_request
from runtime.container_config import verbose_info
from runtime.errors import DeadlineExceeded, InvalidArgument
from runtime.procfs import ProcessIds
from runtime.states import ContainerState
from runtime.store import ContainerRecord

_STATES = {ContainerState.CREATED: pb.CONTAINER_CREATED, ContainerState.RUNNING: pb.CONTAINER_RUNNING,
           ContainerState.EXITED: pb.CONTAINER_EXITED, ContainerState.UNKNOWN: pb.CONTAINER_UNKNOWN}


def _labels(ctr: ContainerRecord) -> tuple[dict[str, str], dict[str, str]]:
    return dict(ctr.config.get("labels", {})), dict(ctr.config.get("annotations", {}))


def _image_spec(ctr: ContainerRecord) -> pb.ImageSpec:
    spec = json_format.ParseDict(ctr.config.get("image", {}), pb.ImageSpec(), ignore_unknown_fields=True)
    # kubelet compares `image` with what it asked for; the id says what ran.
    spec.image = ctr.image
    return spec


def container_summary(ctr: ContainerRecord) -> pb.Container:
    labels, annotations = _labels(ctr)
    return pb.Container(
        id=ctr.id, pod_sandbox_id=ctr.sandbox_id,
        metadata=pb.ContainerMetadata(name=ctr.name, attempt=ctr.attempt), image=_image_spec(ctr),
        image_ref=ctr.image_ref, state=_STATES[ctr.state], created_at=ctr.created_at,
        labels=labels, annotations=annotations, image_id=ctr.image_id)


def container_status(ctr: ContainerRecord, live: pb.LinuxContainerResources | None = None,
                     live_user: ProcessIds | None = None) -> pb.ContainerStatus:
    labels, annotations = _labels(ctr)
    resources = None
    if live is not None:
        resources = pb.ContainerResources(linux=live)
    elif ctr.resources:
        resources = pb.ContainerResources(linux=json_format.ParseDict(
            ctr.resources, pb.LinuxContainerResources(), ignore_unknown_fields=True))
    # The running process's own ids when there is one (what the kernel
    # applies); else what the spec asked the runtime for.
    user = None
    if live_user is not None:
        user = pb.ContainerUser(linux=pb.LinuxContainerUser(
            uid=live_user.uid, gid=live_user.gid, supplemental_groups=list(live_user.groups)))
    elif ctr.user:
        user = pb.ContainerUser(linux=pb.LinuxContainerUser(
            uid=ctr.user.get("uid", 0), gid=ctr.user.get("gid", 0),
            supplemental_groups=ctr.user.get("supplemental_groups", [])))
    # Signal.Value is typed as returning a plain int; it is one of Signal's numbers.
    stop_signal = cast(pb.Signal, pb.Signal.Value(ctr.stop_signal)) if ctr.stop_signal in pb.Signal.keys() \
        else pb.RUNTIME_DEFAULT
    return pb.ContainerStatus(
        id=ctr.id, metadata=pb.ContainerMetadata(name=ctr.name, attempt=ctr.attempt), state=_STATES[ctr.state],
        created_at=ctr.created_at, started_at=ctr.started_at, finished_at=ctr.finished_at,
        exit_code=ctr.exit_code, image=_image_spec(ctr), image_ref=ctr.image_ref, reason=ctr.reason,
        message=ctr.message, labels=labels, annotations=annotations,
        mounts=[json_format.ParseDict(m, pb.Mount(), ignore_unknown_fields=True) for m in ctr.mounts],
        log_path=ctr.log_path, resources=resources, image_id=ctr.image_id, user=user, stop_signal=stop_signal)


def stats_matches(ctr: ContainerRecord, f: pb.ContainerStatsFilter) -> bool:
    if f.id and not ctr.id.startswith(f.id):
        return False
    if f.pod_sandbox_id and not ctr.sandbox_id.startswith(f.pod_sandbox_id):
        return False
    return labels_match(ctr.config, f.label_selector)


def matches(ctr: ContainerRecord, f: pb.ContainerFilter) -> bool:
    if f.id and not ctr.id.startswith(f.id):
        return False
    if f.pod_sandbox_id and not ctr.sandbox_id.startswith(f.pod_sandbox_id):
        return False
    if f.HasField("state") and _STATES[ctr.state] != f.state.state:
        return False
    return labels_match(ctr.config, f.label_selector)


class ContainerRPCs:
    daemon: Node
    # Only the state of a listed container changes after CreateContainer.
    container_summaries: SummaryCache[ContainerRecord, pb.Container]

    async def CreateContainer(self, request: pb.CreateContainerRequest, context: Any) -> pb.CreateContainerResponse:
        if not request.HasField("config"):
            raise InvalidArgument("CreateContainer needs a config")
        check_request(request)
        check_container_config(request.config)
        container_id = await self.daemon.containers.create(request)
        return pb.CreateContainerResponse(container_id=container_id)

    async def StartContainer(self, request: pb.StartContainerRequest, context: Any) -> pb.StartContainerResponse:
        await self.daemon.containers.start(request.container_id)
        return pb.StartContainerResponse()

    async def StopContainer(self, request: pb.StopContainerRequest, context: Any) -> pb.StopContainerResponse:
        if request.timeout < 0:
            raise InvalidArgument("StopContainer timeout must not be negative")
        await self.daemon.containers.stop(request.container_id, float(request.timeout))
        return pb.StopContainerResponse()

    async def RemoveContainer(self, request: pb.RemoveContainerRequest, context: Any) -> pb.RemoveContainerResponse:
        if not request.container_id:
            raise InvalidArgument("RemoveContainer needs container_id")
        await self.daemon.containers.remove(request.container_id)
        return pb.RemoveContainerResponse()

    async def ListContainers(self, request: pb.ListContainersRequest, context: Any) -> pb.ListContainersResponse:
        everything = self.daemon.index.containers
        ctrs = list(everything.values())
        if request.HasField("filter"):
            ctrs = [c for c in ctrs if matches(c, request.filter)]
        ctrs.sort(key=lambda c: c.created_at)
        reply = pb.ListContainersResponse(containers=self.container_summaries.summaries(ctrs, len(everything)))
        check_reply_size("ListContainers", reply, reply.containers, "containers")
        return reply

    async def ContainerStatus(self, request: pb.ContainerStatusRequest, context: Any) -> pb.ContainerStatusResponse:
        ctr = self.daemon.index.container(request.container_id)
        info = {}
        if request.verbose:
            # What the kernel has (crispy explain), only when asked: kubelet never sets verbose.
            info = {"info": json.dumps(verbose_info(ctr), sort_keys=True),
                    "explain": json.dumps(await self.daemon.explain.container(ctr), sort_keys=True)}
        live = await self.daemon.containers.live_resources(ctr)
        live_user = await self.daemon.containers.live_user(ctr)
        return pb.ContainerStatusResponse(status=container_status(ctr, live, live_user), info=info)

    async def ExecSync(self, request: pb.ExecSyncRequest, context: Any) -> pb.ExecSyncResponse:
        if not request.cmd:
            raise InvalidArgument("ExecSync needs a command")
        if request.timeout < 0:
            raise InvalidArgument("ExecSync timeout must not be negative")
        check_request(request)
        result = await self.daemon.containers.exec_sync(request.container_id, list(request.cmd), float(request.timeout))
        if result.timed_out:
            # kubelet's prober reads DEADLINE_EXCEEDED as a probe timeout.
            raise DeadlineExceeded(f"command {list(request.cmd)!r} timed out after {request.timeout}s and was killed")
        return pb.ExecSyncResponse(stdout=result.stdout, stderr=result.stderr, exit_code=result.exit_code)

    async def UpdateContainerResources(self, request: pb.UpdateContainerResourcesRequest,
                                       context: Any) -> pb.UpdateContainerResourcesResponse:
        if not request.HasField("linux"):
            raise InvalidArgument("UpdateContainerResources needs linux resources (Windows is not supported)")
        check_request(request)
        await self.daemon.containers.update_resources(request.container_id, request.linux)
        return pb.UpdateContainerResourcesResponse()

    async def ReopenContainerLog(self, request: pb.ReopenContainerLogRequest,
                                 context: Any) -> pb.ReopenContainerLogResponse:
        await self.daemon.containers.reopen_log(request.container_id)
        return pb.ReopenContainerLogResponse()

    async def ContainerStats(self, request: pb.ContainerStatsRequest, context: Any) -> pb.ContainerStatsResponse:
        ctr = self.daemon.index.container(request.container_id)
        return pb.ContainerStatsResponse(stats=container_stats(ctr, await self.daemon.usage.container_usage(ctr)))

    async def ListContainerStats(self, request: pb.ListContainerStatsRequest,
                                 context: Any) -> pb.ListContainerStatsResponse:
        usage = self.daemon.usage
        # Every container, as containerd does: not yet started or exited ones
        # report their writable layer and no cgroup usage.
        ctrs = list(self.daemon.index.containers.values())
        if request.HasField("filter"):
            ctrs = [c for c in ctrs if stats_matches(c, request.filter)]
        ctrs.sort(key=lambda c: c.created_at)
        reply = pb.ListContainerStatsResponse(stats=[container_stats(c, await usage.container_usage(c)) for c in ctrs])
        check_reply_size("ListContainerStats", reply, reply.stats, "containers")
        return reply
