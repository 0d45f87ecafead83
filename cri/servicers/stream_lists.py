"""StreamPodSandboxes, StreamContainers, StreamContainerStats and
StreamPodSandboxStats: the List RPCs' filters and answers, sent in pages
(cri/servicers/paging.py) so that lists past one message's limit work.
Stats are read page by page, not all before the first is sent."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from cri.proto import api_pb2 as pb
from cri.servicers import containers, sandboxes
from cri.servicers.filters import labels_match
from cri.servicers.node import Node
from cri.servicers.paging import async_pages, pages
from cri.servicers.stats import container_stats
from cri.servicers.summary_cache import SummaryCache
from runtime.store import ContainerRecord, SandboxRecord


class StreamListRPCs:
    daemon: Node
    sandbox_summaries: SummaryCache[SandboxRecord, pb.PodSandbox]
    container_summaries: SummaryCache[ContainerRecord, pb.Container]

    def _sandboxes(self, f: pb.PodSandboxFilter | None) -> list[SandboxRecord]:
        recs = list(self.daemon.index.sandboxes.values())
        if f is not None:
            recs = [r for r in recs if sandboxes.matches(r, f)]
        return sorted(recs, key=lambda r: r.created_at)

    def _containers(self, f: pb.ContainerFilter | None) -> list[ContainerRecord]:
        ctrs = list(self.daemon.index.containers.values())
        if f is not None:
            ctrs = [c for c in ctrs if containers.matches(c, f)]
        return sorted(ctrs, key=lambda c: c.created_at)

    async def StreamPodSandboxes(self, request: pb.StreamPodSandboxesRequest,
                                 context: Any) -> AsyncIterator[pb.StreamPodSandboxesResponse]:
        recs = self._sandboxes(request.filter if request.HasField("filter") else None)
        items: Sequence[pb.PodSandbox] = self.sandbox_summaries.summaries(recs, len(self.daemon.index.sandboxes))
        for page in pages(items):
            yield pb.StreamPodSandboxesResponse(pod_sandboxes=page)

    async def StreamContainers(self, request: pb.StreamContainersRequest,
                               context: Any) -> AsyncIterator[pb.StreamContainersResponse]:
        ctrs = self._containers(request.filter if request.HasField("filter") else None)
        items = self.container_summaries.summaries(ctrs, len(self.daemon.index.containers))
        for page in pages(items):
            yield pb.StreamContainersResponse(containers=page)

    async def StreamContainerStats(self, request: pb.StreamContainerStatsRequest,
                                   context: Any) -> AsyncIterator[pb.StreamContainerStatsResponse]:
        ctrs = list(self.daemon.index.containers.values())
        if request.HasField("filter"):
            ctrs = [c for c in ctrs if containers.stats_matches(c, request.filter)]
        ctrs.sort(key=lambda c: c.created_at)
        usage = self.daemon.usage

        async def stats() -> AsyncIterator[pb.ContainerStats]:
            for c in ctrs:
                yield container_stats(c, await usage.container_usage(c))
        async for page in async_pages(stats()):
            yield pb.StreamContainerStatsResponse(container_stats=page)

    async def StreamPodSandboxStats(self, request: pb.StreamPodSandboxStatsRequest,
                                    context: Any) -> AsyncIterator[pb.StreamPodSandboxStatsResponse]:
        recs = sorted(self.daemon.index.sandboxes.values(), key=lambda r: r.created_at)
        if request.HasField("filter"):
            f = request.filter
            recs = [r for r in recs if (not f.id or r.id.startswith(f.id)) and labels_match(r.config, f.label_selector)]

        async def stats() -> AsyncIterator[pb.PodSandboxStats]:
            for r in recs:
                yield await sandboxes.pod_stats(self.daemon, r)
        async for page in async_pages(stats()):
            yield pb.StreamPodSandboxStatsResponse(pod_sandbox_stats=page)
