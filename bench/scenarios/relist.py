"""Relist with N running pods: kubelet's PLEG lists every pod and container
once a second, so these calls' latency under load bounds how fast a node
notices changes."""

from __future__ import annotations

import time

from bench import workload
from bench.fleet import Fleet, ensure_fleet
from bench.scenarios.base import Context, Metric, Samples, Scenario
from bench.target import Target
from cri.proto import api_pb2 as pb


class Relist(Scenario):
    name = "relist"
    title = "Relist with N running pods"
    uses_fleet = True
    metrics = {
        "list_pods_s": Metric("s", "lower", "ListPodSandbox, N pods"),
        "list_containers_s": Metric("s", "lower", "ListContainers, N pods"),
    }

    def setup(self, ctx: Context, target: Target) -> Fleet:
        workload.ensure_image(target, ctx.images.busybox, ctx.images.busybox_image)
        return ensure_fleet(target, ctx.images.busybox, ctx.pods)

    def iterate(self, ctx: Context, target: Target, state: Fleet, out: Samples) -> None:
        rt = target.client.runtime
        t0 = time.perf_counter()
        pods = rt.ListPodSandbox(pb.ListPodSandboxRequest(), timeout=60).items
        out.add("list_pods_s", time.perf_counter() - t0)
        t0 = time.perf_counter()
        containers = rt.ListContainers(pb.ListContainersRequest(), timeout=60).containers
        out.add("list_containers_s", time.perf_counter() - t0)
        if len(pods) < len(state.pod_ids) or len(containers) < len(state.container_ids):
            raise RuntimeError(f"listed {len(pods)} pods and {len(containers)} containers, "
                               f"expected at least {len(state.pod_ids)} of each")


class Stats(Relist):
    name = "stats"
    title = "Stats with N running pods"
    metrics = {
        "list_container_stats_s": Metric("s", "lower", "ListContainerStats, N pods"),
        "list_pod_stats_s": Metric("s", "lower", "ListPodSandboxStats, N pods"),
    }

    def iterate(self, ctx: Context, target: Target, state: Fleet, out: Samples) -> None:
        rt = target.client.runtime
        t0 = time.perf_counter()
        stats = rt.ListContainerStats(pb.ListContainerStatsRequest(), timeout=60).stats
        out.add("list_container_stats_s", time.perf_counter() - t0)
        if len(stats) < len(state.container_ids):
            raise RuntimeError(f"stats for {len(stats)} containers, expected {len(state.container_ids)}")
        t0 = time.perf_counter()
        rt.ListPodSandboxStats(pb.ListPodSandboxStatsRequest(), timeout=60)
        out.add("list_pod_stats_s", time.perf_counter() - t0)
