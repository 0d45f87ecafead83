"""A merged ContainerAdjustment applied to the OCI spec crispy generated,
before the spec is written and the container created.

What the runtime here cannot do is refused with a clear error rather than
dropped: a plugin that asked for it must not believe it was done.
"""

from __future__ import annotations

from typing import Any

from runtime import cdi
from runtime.errors import InvalidArgument, Unimplemented
from runtime.nri.merge import is_removal
from runtime.nri.proto import api_pb2 as api

_HOOK_KINDS = (("prestart", "prestart"), ("create_runtime", "createRuntime"), ("create_container", "createContainer"),
               ("start_container", "startContainer"), ("poststart", "poststart"), ("poststop", "poststop"))
_IOPRIO = {api.IOPRIO_CLASS_RT: "IOPRIO_CLASS_RT", api.IOPRIO_CLASS_BE: "IOPRIO_CLASS_BE",
           api.IOPRIO_CLASS_IDLE: "IOPRIO_CLASS_IDLE"}


def apply_adjustment(spec: dict[str, Any], adj: api.ContainerAdjustment, *, min_oom_score_adj: int,
                     cdi_spec_dirs: tuple[str, ...] | list[str] = cdi.DEFAULT_SPEC_DIRS) -> None:
    """`min_oom_score_adj`: the daemon's own score; nothing is set below it
    (lowering needs CAP_SYS_RESOURCE, which root lacks on some nodes)."""
    process = spec.setdefault("process", {})
    linux = spec.setdefault("linux", {})
    annotations = spec.setdefault("annotations", {})
    for k, v in adj.annotations.items():
        key, removal = is_removal(k)
        if removal:
            annotations.pop(key, None)
        else:
            annotations[key] = v
    if adj.mounts:
        mounts = spec.setdefault("mounts", [])
        for m in adj.mounts:
            dest, removal = is_removal(m.destination)
            mounts[:] = [x for x in mounts if x.get("destination") != dest]
            if not removal:
                if not dest.startswith("/"):
                    raise InvalidArgument(f"NRI mount destination {dest!r} must be an absolute path")
                entry: dict[str, Any] = {"destination": dest, "type": m.type or "bind", "source": m.source}
                if m.options:
                    entry["options"] = list(m.options)
                mounts.append(entry)
    if adj.env:
        env = process.setdefault("env", [])
        for kv in adj.env:
            name, removal = is_removal(kv.key)
            env[:] = [e for e in env if e.split("=", 1)[0] != name]
            if not removal:
                env.append(f"{name}={kv.value}")
    if adj.args:
        args = list(adj.args)
        # An empty first element means "replace", as containerd/nri reads it.
        process["args"] = args[1:] if args[0] == "" else args
    if adj.HasField("hooks"):
        hooks = spec.setdefault("hooks", {})
        for kind, oci_name in _HOOK_KINDS:
            for h in getattr(adj.hooks, kind):
                hook: dict[str, Any] = {"path": h.path}
                if h.args:
                    hook["args"] = list(h.args)
                if h.env:
                    hook["env"] = list(h.env)
                if h.HasField("timeout"):
                    hook["timeout"] = h.timeout.value
                hooks.setdefault(oci_name, []).append(hook)
    for rl in adj.rlimits:
        rlimits = process.setdefault("rlimits", [])
        rlimits[:] = [x for x in rlimits if x.get("type") != rl.type]
        rlimits.append({"type": rl.type, "hard": rl.hard, "soft": rl.soft})
    if adj.CDI_devices:
        cdi.apply(spec, [d.name for d in adj.CDI_devices], cdi.load(cdi_spec_dirs))
    if adj.HasField("linux"):
        _apply_linux(spec, process, linux, adj.linux, min_oom_score_adj)


def _apply_linux(spec: dict[str, Any], process: dict[str, Any], linux: dict[str, Any],
                 adj: api.LinuxContainerAdjustment, min_oom: int) -> None:
    if adj.net_devices:
        raise Unimplemented("NRI adjustment of network devices is not supported by crispy")
    for name in ("scheduler", "memory_policy", "rdt"):
        if adj.HasField(name):
            raise Unimplemented(f"NRI adjustment of linux.{name} is not supported by crispy's OCI runtimes here")
    for d in adj.devices:
        path, removal = is_removal(d.path)
        devices = linux.setdefault("devices", [])
        devices[:] = [x for x in devices if x.get("path") != path]
        rules = linux.setdefault("resources", {}).setdefault("devices", [])
        if removal:
            continue
        entry: dict[str, Any] = {"path": path, "type": d.type or "c", "major": d.major, "minor": d.minor}
        if d.HasField("file_mode"):
            entry["fileMode"] = d.file_mode.value
        if d.HasField("uid"):
            entry["uid"] = d.uid.value
        if d.HasField("gid"):
            entry["gid"] = d.gid.value
        devices.append(entry)
        rules.append({"allow": True, "type": entry["type"], "major": d.major, "minor": d.minor, "access": "rwm"})
    for ns in adj.namespaces:
        kind, removal = is_removal(ns.type)
        namespaces = linux.setdefault("namespaces", [])
        namespaces[:] = [x for x in namespaces if x.get("type") != kind]
        if not removal:
            namespaces.append({"type": kind, **({"path": ns.path} if ns.path else {})})
    for k, v in adj.sysctl.items():
        key, removal = is_removal(k)
        sysctl = linux.setdefault("sysctl", {})
        if removal:
            sysctl.pop(key, None)
        else:
            sysctl[key] = v
    if adj.HasField("resources"):
        apply_resources(linux.setdefault("resources", {}), adj.resources)
    if adj.cgroups_path:
        linux["cgroupsPath"] = adj.cgroups_path
    if adj.HasField("oom_score_adj"):
        value = adj.oom_score_adj.value
        if not -1000 <= value <= 1000:
            raise InvalidArgument(f"NRI oom_score_adj {value} is out of range (-1000..1000)")
        process["oomScoreAdj"] = max(int(value), min_oom)
    if adj.HasField("io_priority"):
        cls = getattr(adj.io_priority, "class")
        if cls == api.IOPRIO_CLASS_NONE:
            process.pop("ioPriority", None)
        else:
            process["ioPriority"] = {"class": _IOPRIO[cls], "priority": adj.io_priority.priority}
    if adj.HasField("seccomp_policy"):
        linux["seccomp"] = seccomp_of(adj.seccomp_policy)


def apply_resources(out: dict[str, Any], r: api.LinuxResources) -> None:
    """NRI resources onto OCI linux.resources (only the fields set)."""
    if r.HasField("memory"):
        mem = out.setdefault("memory", {})
        for name, key in (("limit", "limit"), ("reservation", "reservation"), ("swap", "swap"),
                          ("kernel", "kernel"), ("kernel_tcp", "kernelTCP"), ("swappiness", "swappiness"),
                          ("disable_oom_killer", "disableOOMKiller"), ("use_hierarchy", "useHierarchy")):
            if r.memory.HasField(name):
                mem[key] = getattr(r.memory, name).value
    if r.HasField("cpu"):
        cpu = out.setdefault("cpu", {})
        for name, key in (("shares", "shares"), ("quota", "quota"), ("period", "period"),
                          ("realtime_runtime", "realtimeRuntime"), ("realtime_period", "realtimePeriod")):
            if r.cpu.HasField(name):
                cpu[key] = getattr(r.cpu, name).value
        if r.cpu.cpus:
            cpu["cpus"] = r.cpu.cpus
        if r.cpu.mems:
            cpu["mems"] = r.cpu.mems
    for h in r.hugepage_limits:
        pages = out.setdefault("hugepageLimits", [])
        pages[:] = [p for p in pages if p.get("pageSize") != h.page_size]
        pages.append({"pageSize": h.page_size, "limit": h.limit})
    if r.unified:
        out.setdefault("unified", {}).update(r.unified)
    if r.HasField("pids"):
        out["pids"] = {"limit": r.pids.limit}


def seccomp_of(s: api.LinuxSeccomp) -> dict[str, Any]:
    out: dict[str, Any] = {"defaultAction": s.default_action}
    if s.HasField("default_errno"):
        out["defaultErrnoRet"] = s.default_errno.value
    if s.architectures:
        out["architectures"] = list(s.architectures)
    if s.flags:
        out["flags"] = list(s.flags)
    if s.listener_path:
        out["listenerPath"] = s.listener_path
        out["listenerMetadata"] = s.listener_metadata
    syscalls = []
    for sc in s.syscalls:
        entry: dict[str, Any] = {"names": list(sc.names), "action": sc.action}
        if sc.HasField("errno_ret"):
            entry["errnoRet"] = sc.errno_ret.value
        if sc.args:
            entry["args"] = [{"index": a.index, "value": a.value, "valueTwo": a.value_two, "op": a.op}
                             for a in sc.args]
        syscalls.append(entry)
    out["syscalls"] = syscalls
    return out
