"""What a pod's record says about the pod: its pinned namespaces, its IPs,
whether it is ready, and the verbose status."""

from __future__ import annotations

from typing import Any

from runtime import namespaces
from runtime.states import ContainerState, PodState
from runtime.store import ContainerRecord, SandboxRecord, from_dict


def pinned_of(rec: SandboxRecord) -> namespaces.PodNamespaces:
    return from_dict(namespaces.PodNamespaces, rec.namespaces or {})


def pod_ips(rec: SandboxRecord) -> list[str]:
    st = rec.network_status or {}
    return [ip for ip in [st.get("ip", ""), *st.get("additional_ips", [])] if ip]


def is_ready(rec: SandboxRecord) -> bool:
    return rec.state == PodState.READY


def verbose_info(rec: SandboxRecord, containers: list[ContainerRecord]) -> dict[str, Any]:
    """`containers`: the pod's."""
    pinned = pinned_of(rec)
    infra = pinned.infra_pid if namespaces.infra_alive(pinned) else 0
    ctr_pids = {c.id: c.pid for c in containers if c.state == ContainerState.RUNNING}
    return {
        "id": rec.id,
        "pid": infra,
        # Every live process crispy started for the pod: infra, then containers.
        "pids": ([infra] if infra else []) + list(ctr_pids.values()),
        "containerPids": ctr_pids,
        "infraAlive": namespaces.infra_alive(pinned),
        "namespaces": pinned.paths(),
        "pidMode": rec.pid_mode,
        "cgroupParent": rec.cgroup_parent,
        "cgroupPath": rec.cgroup_path,
        "shm": rec.shm_path,
        "podDir": rec.pod_dir,
        "runtimeHandler": rec.runtime_handler,
        "ociRuntime": rec.oci_runtime,
        "network": rec.network_status,
        "files": {"hostname": rec.hostname_path, "hosts": rec.hosts_path, "resolv.conf": rec.resolv_conf_path},
    }
