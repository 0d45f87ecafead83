"""Several plugins' answers to one event as one: the adjustments and updates
collected in plugin order, with containerd/nri's ownership rule.

Every adjustable field (a memory limit, the args) or entry of a compound
field (an annotation key, a mount destination, an env name, a device path)
belongs to the first plugin that sets it; a later plugin setting it too is
a conflict, and the whole event fails naming both plugins. A plugin may
remove an entry (its key marked with a leading "-"): it then owns the
removal, and only it may set that entry again. OCI hooks accumulate and are
never a conflict. The owners are what validating plugins are shown.
"""

from __future__ import annotations

from typing import Any

from runtime.errors import FailedPrecondition
from runtime.nri.proto import api_pb2 as api

F = api.Field


class Conflict(FailedPrecondition):
    pass


def is_removal(key: str) -> tuple[str, bool]:
    return (key[1:], True) if key.startswith("-") else (key, False)


class Owners:
    """Who set which field of which container."""

    def __init__(self) -> None:
        self._simple: dict[tuple[str, int], str] = {}
        self._compound: dict[tuple[str, int, str], str] = {}

    def _check(self, other: str | None, plugin: str, what: str) -> None:
        if other is None:
            return
        clearer, cleared = is_removal(other)
        if cleared and clearer == plugin:
            return
        if clearer == plugin:
            return
        raise Conflict(f"NRI plugins {clearer!r} and {plugin!r} both tried to set {what}")

    def claim(self, ctr: str, field: int, plugin: str, key: str | None = None) -> None:
        what = F.Name(field) + (f" {key!r}" if key is not None else "")
        if key is None:
            self._check(self._simple.get((ctr, field)), plugin, what)
            self._simple[(ctr, field)] = plugin
        else:
            self._check(self._compound.get((ctr, field, key)), plugin, what)
            self._compound[(ctr, field, key)] = plugin

    def clear(self, ctr: str, field: int, plugin: str, key: str | None = None) -> None:
        if key is None:
            self._simple[(ctr, field)] = "-" + plugin
        else:
            self._compound[(ctr, field, key)] = "-" + plugin

    def message(self) -> api.OwningPlugins:
        out = api.OwningPlugins()
        for (ctr, field), plugin in self._simple.items():
            out.owners[ctr].simple[field] = plugin
        for (ctr, field, key), plugin in self._compound.items():
            out.owners[ctr].compound[field].owners[key] = plugin
        return out


# Simple resource fields: (sub-message, field name, Field enum).
_MEMORY = (("limit", F.MemLimit), ("reservation", F.MemReservation), ("swap", F.MemSwapLimit),
           ("kernel", F.MemKernelLimit), ("kernel_tcp", F.MemTCPLimit), ("swappiness", F.MemSwappiness),
           ("disable_oom_killer", F.MemDisableOomKiller), ("use_hierarchy", F.MemUseHierarchy))
_CPU = (("shares", F.CPUShares), ("quota", F.CPUQuota), ("period", F.CPUPeriod),
        ("realtime_runtime", F.CPURealtimeRuntime), ("realtime_period", F.CPURealtimePeriod))


def merge_resources(owners: Owners, ctr: str, plugin: str, src: api.LinuxResources, dst: api.LinuxResources) -> None:
    """`src`'s set fields claimed and copied onto `dst`."""
    if src.HasField("memory"):
        for name, field in _MEMORY:
            if src.memory.HasField(name):
                owners.claim(ctr, field, plugin)
                getattr(dst.memory, name).CopyFrom(getattr(src.memory, name))
    if src.HasField("cpu"):
        for name, field in _CPU:
            if src.cpu.HasField(name):
                owners.claim(ctr, field, plugin)
                getattr(dst.cpu, name).CopyFrom(getattr(src.cpu, name))
        if src.cpu.cpus:
            owners.claim(ctr, F.CPUSetCPUs, plugin)
            dst.cpu.cpus = src.cpu.cpus
        if src.cpu.mems:
            owners.claim(ctr, F.CPUSetMems, plugin)
            dst.cpu.mems = src.cpu.mems
    for h in src.hugepage_limits:
        owners.claim(ctr, F.HugepageLimits, plugin, h.page_size)
        kept = [x for x in dst.hugepage_limits if x.page_size != h.page_size]
        del dst.hugepage_limits[:]
        dst.hugepage_limits.extend([*kept, h])
    for key, value in src.unified.items():
        owners.claim(ctr, F.CgroupsUnified, plugin, key)
        dst.unified[key] = value
    if src.HasField("blockio_class"):
        owners.claim(ctr, F.BlockioClass, plugin)
        dst.blockio_class.CopyFrom(src.blockio_class)
    if src.HasField("rdt_class"):
        owners.claim(ctr, F.RdtClass, plugin)
        dst.rdt_class.CopyFrom(src.rdt_class)
    if src.HasField("pids"):
        owners.claim(ctr, F.PidsLimit, plugin)
        dst.pids.CopyFrom(src.pids)


def _keyed(owners: Owners, ctr: str, plugin: str, field: int, items: Any, dst: Any, key_of: Any) -> None:
    """Compound list fields (mounts, devices, env, rlimits, CDI devices): an
    entry replaces an earlier one with its key; a removal drops it."""
    for item in items:
        key, removal = is_removal(key_of(item))
        if removal:
            owners.clear(ctr, field, plugin, key)
        else:
            owners.claim(ctr, field, plugin, key)
        kept = [x for x in dst if is_removal(key_of(x))[0] != key]
        del dst[:]
        dst.extend([*kept, item])


class CreateResult:
    """The adjustment of one CreateContainer, built plugin by plugin."""

    def __init__(self, container_id: str) -> None:
        self.id = container_id
        self.owners = Owners()
        self.adjust = api.ContainerAdjustment()
        self.updates = UpdateSet(self.owners)

    def add(self, plugin: str, reply: api.CreateContainerResponse) -> None:
        self.merge_adjustment(plugin, reply.adjust)
        self.updates.add(plugin, list(reply.update))

    def merge_adjustment(self, plugin: str, adj: api.ContainerAdjustment) -> None:
        o, ctr, out = self.owners, self.id, self.adjust
        for k, v in adj.annotations.items():
            key, removal = is_removal(k)
            if removal:
                o.clear(ctr, F.Annotations, plugin, key)
                out.annotations.pop(key, None)
                out.annotations[k] = ""
            else:
                o.claim(ctr, F.Annotations, plugin, key)
                out.annotations.pop("-" + key, None)
                out.annotations[key] = v
        _keyed(o, ctr, plugin, F.Mounts, adj.mounts, out.mounts, lambda m: m.destination)
        _keyed(o, ctr, plugin, F.Env, adj.env, out.env, lambda e: e.key)
        _keyed(o, ctr, plugin, F.Rlimits, adj.rlimits, out.rlimits, lambda r: r.type)
        _keyed(o, ctr, plugin, F.CdiDevices, adj.CDI_devices, out.CDI_devices, lambda d: d.name)
        if adj.args:
            o.claim(ctr, F.Args, plugin)
            del out.args[:]
            out.args.extend(adj.args)
        if adj.HasField("hooks"):
            out.hooks.MergeFrom(adj.hooks)  # hooks add up
        if not adj.HasField("linux"):
            return
        src, dst = adj.linux, out.linux
        _keyed(o, ctr, plugin, F.Devices, src.devices, dst.devices, lambda d: d.path)
        _keyed(o, ctr, plugin, F.Namespace, src.namespaces, dst.namespaces, lambda n: n.type)
        if src.HasField("resources"):
            merge_resources(o, ctr, plugin, src.resources, dst.resources)
        if src.cgroups_path:
            o.claim(ctr, F.CgroupsPath, plugin)
            dst.cgroups_path = src.cgroups_path
        for name, field in (("oom_score_adj", F.OomScoreAdj), ("io_priority", F.IoPriority),
                            ("seccomp_policy", F.SeccompPolicy), ("scheduler", F.LinuxSched),
                            ("memory_policy", F.MemoryPolicy)):
            if src.HasField(name):
                o.claim(ctr, field, plugin)
                getattr(dst, name).CopyFrom(getattr(src, name))
        for k, value in src.sysctl.items():
            key, removal = is_removal(k)
            if removal:
                o.clear(ctr, F.Sysctl, plugin, key)
            else:
                o.claim(ctr, F.Sysctl, plugin, key)
            dst.sysctl[k] = value
        for k, dev in src.net_devices.items():
            o.claim(ctr, F.LinuxNetDevices, plugin, is_removal(k)[0])
            dst.net_devices[k].CopyFrom(dev)
        if src.HasField("rdt"):
            o.claim(ctr, F.RdtClosID, plugin)
            dst.rdt.CopyFrom(src.rdt)


class UpdateSet:
    """Container updates from several plugins: one merged update per
    container, fields owned as for adjustments."""

    def __init__(self, owners: Owners | None = None) -> None:
        self.owners = owners if owners is not None else Owners()
        self.by_id: dict[str, api.ContainerUpdate] = {}

    def add(self, plugin: str, updates: list[api.ContainerUpdate]) -> None:
        for u in updates:
            if not u.container_id:
                continue
            merged = self.by_id.get(u.container_id)
            if merged is None:
                merged = self.by_id[u.container_id] = api.ContainerUpdate(container_id=u.container_id,
                                                                           ignore_failure=u.ignore_failure)
            else:
                merged.ignore_failure = merged.ignore_failure and u.ignore_failure
            try:
                merge_resources(self.owners, u.container_id, plugin, u.linux.resources, merged.linux.resources)
            except Conflict:
                if not u.ignore_failure:
                    raise

    def updates(self) -> list[api.ContainerUpdate]:
        return list(self.by_id.values())
