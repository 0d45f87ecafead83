"""Scenario registry: one module per scenario, each registered by name."""

from __future__ import annotations

from bench.scenarios import (
    churn,
    container_start,
    exec_sync,
    image_volume,
    memory,
    nri,
    observe,
    pod_net,
    pod_start,
    pull,
    relist,
    userns_pod,
)
from bench.scenarios.base import Scenario

REGISTRY: dict[str, Scenario] = {s.name: s for s in (
    memory.IdleMemory(),
    pull.PullCold(),
    pull.PullWarm(),
    pod_start.PodStart(),
    container_start.ContainerStart(),
    image_volume.ImageVolumeStart(),
    userns_pod.UsernsPodStart(),
    exec_sync.ExecSync(),
    nri.NriOverhead(),
    pod_net.PodStartNetworked(),
    churn.Churn(),
    # These three share one fleet of running pods; memory goes first, as it
    # needs the node without pods for its baseline.
    memory.Memory(),
    relist.Relist(),
    relist.Stats(),
    observe.PodMetrics(),
    observe.EventsLatency(),
)}
