"""crispy's records and OCI specs as the NRI API's PodSandbox and Container
messages: what a plugin is shown at every event and in Synchronize.

A container is described from its record (ids, names, state, times) and its
OCI spec (args, env, mounts, hooks, rlimits, devices, resources), as the
runtime would run it; the spec is the one written to the bundle, or the one
about to be written during CreateContainer.
"""

from __future__ import annotations

from typing import Any

from runtime.nri.proto import api_pb2 as api
from runtime.pod_view import pinned_of, pod_ips
from runtime.states import ContainerState
from runtime.store import ContainerRecord, SandboxRecord

_STATES = {
    ContainerState.CREATED: api.CONTAINER_CREATED,
    ContainerState.RUNNING: api.CONTAINER_RUNNING,
    ContainerState.EXITED: api.CONTAINER_STOPPED,
    ContainerState.UNKNOWN: api.CONTAINER_UNKNOWN,
}

# PodNamespaces field -> OCI namespace type.
_POD_NAMESPACES = (("net", "network"), ("ipc", "ipc"), ("uts", "uts"), ("pid", "pid"), ("user", "user"))


def pod_message(rec: SandboxRecord) -> api.PodSandbox:
    config = rec.config
    linux = config.get("linux", {})
    pinned = pinned_of(rec)
    pod = api.PodSandbox(
        id=rec.id, name=rec.name, uid=rec.uid, namespace=rec.namespace,
        labels=config.get("labels", {}), annotations=config.get("annotations", {}),
        runtime_handler=rec.runtime_handler, pid=pinned.infra_pid, ips=pod_ips(rec))
    pod.linux.cgroup_parent = linux.get("cgroup_parent", "") or rec.cgroup_parent
    pod.linux.cgroups_path = rec.cgroup_path
    for field, kind in _POD_NAMESPACES:
        path = getattr(pinned, field)
        if path:
            pod.linux.namespaces.append(api.LinuxNamespace(type=kind, path=path))
    for key, target in (("overhead", pod.linux.pod_overhead), ("resources", pod.linux.pod_resources)):
        if key in linux:
            target.CopyFrom(resources_from_cri(linux[key]))
    return pod


def container_message(ctr: ContainerRecord, spec: dict[str, Any] | None) -> api.Container:
    config = ctr.config
    msg = api.Container(
        id=ctr.id, pod_sandbox_id=ctr.sandbox_id, name=ctr.name, state=_STATES.get(ctr.state, api.CONTAINER_UNKNOWN),
        labels=config.get("labels", {}), annotations=config.get("annotations", {}), pid=max(ctr.pid, 0),
        created_at=ctr.created_at, started_at=ctr.started_at, finished_at=ctr.finished_at,
        exit_code=ctr.exit_code, status_reason=ctr.reason, status_message=ctr.message)
    for dev in config.get("CDI_devices", []):
        msg.CDI_devices.append(api.CDIDevice(name=dev.get("name", "")))
    if spec is None:
        msg.linux.cgroups_path = ctr.cgroup_path
        return msg
    process = spec.get("process", {})
    msg.args.extend(process.get("args", []))
    msg.env.extend(process.get("env", []))
    user = process.get("user", {})
    msg.user.uid, msg.user.gid = user.get("uid", 0), user.get("gid", 0)
    msg.user.additional_gids.extend(user.get("additionalGids", []))
    for rl in process.get("rlimits", []):
        msg.rlimits.append(api.POSIXRlimit(type=rl["type"], hard=rl.get("hard", 0), soft=rl.get("soft", 0)))
    for m in spec.get("mounts", []):
        msg.mounts.append(api.Mount(destination=m.get("destination", ""), type=m.get("type", ""),
                                    source=m.get("source", ""), options=m.get("options", [])))
    hooks = spec.get("hooks", {})
    for kind, oci_name in _HOOK_KINDS:
        for h in hooks.get(oci_name, []):
            getattr(msg.hooks, kind).append(hook_message(h))
    # The spec's annotations hold the container's own plus what crispy adds.
    msg.annotations.update(spec.get("annotations", {}))
    linux = spec.get("linux", {})
    msg.linux.cgroups_path = linux.get("cgroupsPath", ctr.cgroup_path)
    for ns in linux.get("namespaces", []):
        msg.linux.namespaces.append(api.LinuxNamespace(type=ns.get("type", ""), path=ns.get("path", "")))
    for d in linux.get("devices", []):
        dev = api.LinuxDevice(path=d.get("path", ""), type=d.get("type", ""), major=d.get("major", 0),
                              minor=d.get("minor", 0))
        if "fileMode" in d:
            dev.file_mode.value = d["fileMode"]
        if "uid" in d:
            dev.uid.value = d["uid"]
        if "gid" in d:
            dev.gid.value = d["gid"]
        msg.linux.devices.append(dev)
    msg.linux.resources.CopyFrom(resources_from_oci(linux.get("resources", {})))
    if "oomScoreAdj" in process:
        msg.linux.oom_score_adj.value = process["oomScoreAdj"]
    if "ioPriority" in process:
        prio = process["ioPriority"]
        msg.linux.io_priority.priority = prio.get("priority", 0)
        # `class` is a Python keyword: the field is reached by name.
        setattr(msg.linux.io_priority, "class", _IOPRIO_CLASSES.get(prio.get("class", ""), 0))
    msg.linux.sysctl.update(linux.get("sysctl", {}))
    return msg


# NRI Hooks field -> OCI hooks key.
_HOOK_KINDS = (("prestart", "prestart"), ("create_runtime", "createRuntime"), ("create_container", "createContainer"),
               ("start_container", "startContainer"), ("poststart", "poststart"), ("poststop", "poststop"))

_IOPRIO_CLASSES = {"IOPRIO_CLASS_RT": api.IOPRIO_CLASS_RT, "IOPRIO_CLASS_BE": api.IOPRIO_CLASS_BE,
                   "IOPRIO_CLASS_IDLE": api.IOPRIO_CLASS_IDLE}


def hook_message(h: dict[str, Any]) -> api.Hook:
    hook = api.Hook(path=h.get("path", ""), args=h.get("args", []), env=h.get("env", []))
    if "timeout" in h:
        hook.timeout.value = h["timeout"]
    return hook


def resources_from_oci(r: dict[str, Any]) -> api.LinuxResources:
    out = api.LinuxResources()
    mem, cpu = r.get("memory", {}), r.get("cpu", {})
    for key, target in (("limit", out.memory.limit), ("reservation", out.memory.reservation),
                        ("swap", out.memory.swap), ("kernel", out.memory.kernel),
                        ("kernelTCP", out.memory.kernel_tcp), ("swappiness", out.memory.swappiness)):
        if key in mem:
            target.value = mem[key]
    for key, target in (("shares", out.cpu.shares), ("quota", out.cpu.quota), ("period", out.cpu.period),
                        ("realtimeRuntime", out.cpu.realtime_runtime), ("realtimePeriod", out.cpu.realtime_period)):
        if key in cpu:
            target.value = cpu[key]
    out.cpu.cpus, out.cpu.mems = cpu.get("cpus", ""), cpu.get("mems", "")
    for h in r.get("hugepageLimits", []):
        out.hugepage_limits.append(api.HugepageLimit(page_size=h["pageSize"], limit=h["limit"]))
    out.unified.update(r.get("unified", {}))
    if "pids" in r:
        out.pids.limit = r["pids"].get("limit", 0)
    return out


def resources_from_cri(r: dict[str, Any]) -> api.LinuxResources:
    """CRI LinuxContainerResources (as proto JSON) in NRI terms."""
    out = api.LinuxResources()
    if "memory_limit_in_bytes" in r:
        out.memory.limit.value = int(r["memory_limit_in_bytes"])
    if "memory_swap_limit_in_bytes" in r:
        out.memory.swap.value = int(r["memory_swap_limit_in_bytes"])
    if "cpu_shares" in r:
        out.cpu.shares.value = int(r["cpu_shares"])
    if "cpu_quota" in r:
        out.cpu.quota.value = int(r["cpu_quota"])
    if "cpu_period" in r:
        out.cpu.period.value = int(r["cpu_period"])
    out.cpu.cpus, out.cpu.mems = r.get("cpuset_cpus", ""), r.get("cpuset_mems", "")
    for h in r.get("hugepage_limits", []):
        out.hugepage_limits.append(api.HugepageLimit(page_size=h.get("page_size", ""), limit=int(h.get("limit", 0))))
    out.unified.update(r.get("unified", {}))
    return out


def resources_to_cri(r: api.LinuxResources) -> dict[str, Any]:
    """NRI LinuxResources as CRI LinuxContainerResources proto JSON (the
    record's and the cgroup manager's terms); only what is set."""
    out: dict[str, Any] = {}
    if r.HasField("memory"):
        if r.memory.HasField("limit"):
            out["memory_limit_in_bytes"] = str(r.memory.limit.value)
        if r.memory.HasField("swap"):
            out["memory_swap_limit_in_bytes"] = str(r.memory.swap.value)
    if r.HasField("cpu"):
        for name, field in (("cpu_shares", "shares"), ("cpu_quota", "quota"), ("cpu_period", "period")):
            if r.cpu.HasField(field):
                out[name] = str(getattr(r.cpu, field).value)
        if r.cpu.cpus:
            out["cpuset_cpus"] = r.cpu.cpus
        if r.cpu.mems:
            out["cpuset_mems"] = r.cpu.mems
    if r.hugepage_limits:
        out["hugepage_limits"] = [{"page_size": h.page_size, "limit": str(h.limit)} for h in r.hugepage_limits]
    if r.unified:
        out["unified"] = dict(r.unified)
    return out
