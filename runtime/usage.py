"""Resource usage for ContainerStats and PodSandboxStats: one reading of a
container's or pod's cgroup and writable layer, with the CPU rate taken
against the previous reading (kept here, per container and per pod), and
a pod's network interfaces."""

from __future__ import annotations

import asyncio
from typing import Any

from runtime import container_stats, namespaces
from runtime.cgroups import CgroupManager
from runtime.index import RecordIndex
from runtime.pod_view import pinned_of
from runtime.states import ContainerState, PodState
from runtime.store import ContainerRecord, SandboxRecord


class UsageSampler:
    def __init__(self, index: RecordIndex, cgroups: CgroupManager | None) -> None:
        self._index = index
        self._cgroups = cgroups
        # Last CPU reading per container id, and per "pod:<id>".
        self._cpu_samples: dict[str, Any] = {}

    def forget_container(self, container_id: str) -> None:
        self._cpu_samples.pop(container_id, None)

    def forget_pod(self, sandbox_id: str) -> None:
        self._cpu_samples.pop("pod:" + sandbox_id, None)

    async def container_usage(self, ctr: ContainerRecord) -> container_stats.ContainerUsage:
        usage, sample = await asyncio.to_thread(container_stats.collect, self._cgroups, ctr,
                                                self._cpu_samples.get(ctr.id))
        if sample is not None and ctr.id in self._index.containers:
            self._cpu_samples[ctr.id] = sample
        return usage

    async def pod_usage(self, rec: SandboxRecord) -> container_stats.CgroupUsage:
        key = "pod:" + rec.id
        usage, sample = await asyncio.to_thread(container_stats.collect_cgroup, self._cgroups,
                                                rec.cgroup_parent if rec.state == PodState.READY else "",
                                                self._cpu_samples.get(key))
        if sample is not None and rec.id in self._index.sandboxes:
            self._cpu_samples[key] = sample
        return usage

    async def pod_network_usage(self, rec: SandboxRecord) -> list[container_stats.InterfaceUsage] | None:
        """Interfaces of the pod's network namespace, read through any live
        process in it; None for host-network pods or when none runs."""
        if rec.host_network or rec.state != PodState.READY:
            return None
        pinned = pinned_of(rec)
        pids = [pinned.infra_pid] if namespaces.infra_alive(pinned) else []
        pids += [c.pid for c in self._index.containers_of(rec.id) if c.state == ContainerState.RUNNING and c.pid]
        for pid in pids:
            usage = await asyncio.to_thread(container_stats.network_usage, pid)
            if usage is not None:
                return usage
        return None
