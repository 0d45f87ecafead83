"""The explain report of one container or pod: every section gathered at
the moment of asking, as one JSON-able dict, with the disagreements
between what the kernel has and what crispy asked for collected at the
top (`warnings`). The daemon serves it as the `explain` key of the
verbose ContainerStatus/PodSandboxStatus info (cri/servicers/)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path
from typing import Any, Protocol

from runtime import pod_view
from runtime.cgroups.paths import fs_path
from runtime.cgroups.v1 import find_hierarchies
from runtime.container_stats import layer_usage
from runtime.explain import cgroup, filesystem, namespaces, network, processes, security
from runtime.explain.sources import PROC, read
from runtime.host import CGROUP_ROOT, CgroupLayout
from runtime.index import RecordIndex
from runtime.namespaces import infra_alive
from runtime.states import ContainerState, PodState
from runtime.store import ContainerRecord, SandboxRecord

log = logging.getLogger("crispy.explain")

# Version of the report's layout, for scripts reading `--json`.
REPORT_VERSION = 1


class ImageLookup(Protocol):
    """What the report needs of the image store (images/manager.py)."""

    async def find(self, ref_or_id: str) -> Any:
        """The image record (id, repo_tags, chain_ids, layer_blobs, diff_ids), or None."""

    def layer_dirs(self, record: Any) -> list[str]:
        """The image's unpacked layers, bottom first."""


def _read_spec(bundle: str) -> dict[str, Any] | None:
    try:
        with open(Path(bundle) / "config.json") as f:
            spec = json.load(f)
        return spec if isinstance(spec, dict) else None
    except (OSError, ValueError):
        return None


def _image_name(image: Any, fallback: str) -> str:
    tags = list(getattr(image, "repo_tags", []) or [])
    return tags[0] if tags else fallback


class Explainer:
    def __init__(self, index: RecordIndex, images: ImageLookup, layout: CgroupLayout, driver: str,
                 cgroup_root: Path = CGROUP_ROOT, proc: Path = PROC) -> None:
        self.index = index
        self.images = images
        self.layout = layout
        self.driver = driver
        self.cgroup_root = cgroup_root
        self.proc = proc
        # Unpacked layers never change: each is measured once.
        self._layer_sizes: dict[str, int | None] = {}

    # ---- containers ---------------------------------------------------------

    async def container(self, ctr: ContainerRecord) -> dict[str, Any]:
        """Never raises for what it finds: a fact it cannot read is
        absent, and an unexpected failure is the report's `error` (verbose
        status must still answer)."""
        try:
            return await self._container(ctr)
        except Exception as e:
            log.exception("explaining a container failed", extra={"fields": {"container": ctr.id}})
            return {"version": REPORT_VERSION, "kind": "container", "id": ctr.id, "error": f"{type(e).__name__}: {e}"}

    async def _container(self, ctr: ContainerRecord) -> dict[str, Any]:
        pod = self.index.sandboxes.get(ctr.sandbox_id)
        running = ctr.state == ContainerState.RUNNING and ctr.pid > 0
        image = await self.images.find(ctr.image_id) if ctr.image_id else None
        report: dict[str, Any] = {
            "version": REPORT_VERSION, "kind": "container", "id": ctr.id, "name": ctr.name,
            "pod": {"id": ctr.sandbox_id, "name": pod.name if pod else "", "namespace": pod.namespace if pod else ""},
            "state": str(ctr.state), "pid": ctr.pid if running else 0, "created_at": ctr.created_at,
            "image": _image_name(image, ctr.image), "image_id": ctr.image_id, "notes": [], "warnings": []}
        if not running:
            report["notes"].append(f"the container is {ctr.state}: it has no processes, so there are no kernel "
                                   f"facts to show")
            return report
        await asyncio.to_thread(self._measure_layers, image)
        sections = await asyncio.to_thread(self._container_sections, ctr, pod, image, report["image"])
        report.update(sections)
        return report

    def _measure_layers(self, image: Any) -> None:
        if image is None:
            return
        for chain_id, d in zip(image.chain_ids, self.images.layer_dirs(image), strict=False):
            if chain_id not in self._layer_sizes:
                usage = layer_usage(Path(d))
                self._layer_sizes[chain_id] = usage.used_bytes if usage else None

    def _container_sections(self, ctr: ContainerRecord, pod: SandboxRecord | None, image: Any,
                            image_name: str) -> dict[str, Any]:
        pid, proc = ctr.pid, self.proc
        warnings: list[str] = []
        spec = _read_spec(ctr.bundle)
        if spec is None:
            warnings.append(f"the bundle's config.json ({ctr.bundle}) is unreadable: nothing to compare the kernel's "
                            f"facts with")
            spec = {}
        linux = spec.get("linux") or {}
        pod_paths = pod_view.pinned_of(pod).paths() if pod else {}

        tree = processes.tree(pid, proc)
        if not tree:
            warnings.append(f"process {pid} is gone: the container exited while being explained")

        nss = namespaces.of_container(pid, linux.get("namespaces") or [], pod_paths, proc)
        warnings += [w for n in nss for w in n.warnings]

        cg = self._cgroup_of(pid)
        expected = fs_path(ctr.cgroup_path, self.driver) if ctr.cgroup_path else ""
        if expected and cg.path and cg.path != expected:
            cg.warnings.append(f"the process is in cgroup {cg.path}, crispy made {expected}")
        cg.warnings += cgroup.compare(cg, linux.get("resources") or {})
        warnings += cg.warnings

        mounts = filesystem.parse_mountinfo(read(proc / str(pid) / "mountinfo") or "")
        root = filesystem.root_facts(mounts, image, image_name, spec.get("root") or {}, self._layer_sizes)
        table, mount_warnings = filesystem.mount_table(mounts, spec.get("mounts") or [])

        def exists(p: str) -> bool:
            return os.path.lexists(f"{proc}/{pid}/root{p}")
        masked = filesystem.masked_paths(mounts, linux.get("maskedPaths") or [], exists)
        readonly = filesystem.readonly_paths(mounts, linux.get("readonlyPaths") or [], exists)
        fs_warnings = root.warnings + mount_warnings + [f"{c.path} is {c.state}" for c in masked + readonly
                                                        if c.state.startswith("NOT")]
        warnings += fs_warnings

        sec = security.read_facts(pid, proc)
        sec.seccomp_profile = security.profile_of(ctr.config, bool(linux.get("seccomp")))
        if cg.version == 1 and cg.devices:
            sec.devices, sec.devices_source = cg.devices, "cgroup v1 devices.list"
        else:
            sec.devices, sec.devices_source = security.spec_devices(spec), "spec (v2 enforces them with eBPF)"
        sec.warnings = security.compare(sec, spec)
        warnings += sec.warnings

        return {
            "processes": [p.to_dict() for p in tree],
            "namespaces": [n.to_dict() for n in nss],
            "cgroup": cg.to_dict(),
            "filesystem": {"root": root.to_dict(), "mounts": table, "masked_paths": [c.to_dict() for c in masked],
                           "readonly_paths": [c.to_dict() for c in readonly], "warnings": fs_warnings},
            "security": sec.to_dict(),
            "warnings": warnings,
        }

    def _cgroup_of(self, pid: int) -> cgroup.CgroupFacts:
        paths = cgroup.parse_proc_cgroup(read(self.proc / str(pid) / "cgroup") or "")
        return self._read_cgroup(paths)

    def _read_cgroup(self, paths: dict[str, str]) -> cgroup.CgroupFacts:
        if self.layout.mode == "v2":
            unified = Path(self.layout.unified_path or self.cgroup_root)
            return cgroup.read_v2(paths.get("unified", ""), unified) if "unified" in paths \
                else cgroup.CgroupFacts(version=2, path="", dirs={}, warnings=["the process has no cgroup (gone)"])
        facts = cgroup.read_v1(paths, find_hierarchies(self.cgroup_root))
        if not facts.path:
            facts.warnings.append("the process has no cgroup (gone)")
        return facts

    # ---- pods -----------------------------------------------------------------

    async def pod(self, rec: SandboxRecord) -> dict[str, Any]:
        """As `container`: never raises."""
        try:
            return await self._pod(rec)
        except Exception as e:
            log.exception("explaining a pod failed", extra={"fields": {"sandbox": rec.id}})
            return {"version": REPORT_VERSION, "kind": "pod", "id": rec.id, "error": f"{type(e).__name__}: {e}"}

    async def _pod(self, rec: SandboxRecord) -> dict[str, Any]:
        pinned = pod_view.pinned_of(rec)
        infra = pinned.infra_pid if await asyncio.to_thread(_infra_alive, pinned) else 0
        ctrs = sorted(self.index.containers_of(rec.id), key=lambda c: c.created_at)
        report: dict[str, Any] = {
            "version": REPORT_VERSION, "kind": "pod", "id": rec.id, "name": rec.name, "namespace": rec.namespace,
            "uid": rec.uid, "state": str(rec.state), "created_at": rec.created_at, "infra_pid": infra,
            "runtime_handler": rec.runtime_handler, "host_network": rec.host_network, "host_ipc": rec.host_ipc,
            "pid_mode": rec.pid_mode,
            "containers": [{"id": c.id, "name": c.name, "state": str(c.state),
                            "pid": c.pid if c.state == ContainerState.RUNNING else 0} for c in ctrs],
            "notes": [], "warnings": []}
        if rec.state != PodState.READY:
            report["notes"].append("the pod is stopped: its processes are killed and its network released; its "
                                   "namespaces stay pinned until it is removed")
        sections = await asyncio.to_thread(self._pod_sections, rec, infra, ctrs)
        resolv = await asyncio.to_thread(read, Path(rec.resolv_conf_path)) if rec.resolv_conf_path else ""
        net = await network.gather(pinned.net, rec.id, rec.network_status, resolv or "")
        if rec.host_network:
            net.notes.insert(0, "HOST network: the pod sees and binds the node's interfaces")
        sections["network"] = net.to_dict()
        report.update(sections)
        report["warnings"] = sections["warnings"] + net.warnings
        return report

    def _pod_sections(self, rec: SandboxRecord, infra: int, ctrs: list[ContainerRecord]) -> dict[str, Any]:
        warnings: list[str] = []
        nss = namespaces.of_pod(infra, pod_view.pinned_of(rec).paths(), rec.host_network, rec.host_ipc,
                                rec.pid_mode, self.proc)
        warnings += [w for n in nss for w in n.warnings]
        trees = []
        if infra:
            trees.append({"container": "(infra)", "processes": [p.to_dict() for p in processes.tree(infra, self.proc)]})
        for c in ctrs:
            if c.state == ContainerState.RUNNING and c.pid:
                tree = processes.tree(c.pid, self.proc)
                trees.append({"container": c.name, "processes": [p.to_dict() for p in tree]})
        cg: dict[str, Any] = {}
        if rec.cgroup_path:
            rel = fs_path(rec.cgroup_path, self.driver)
            facts = self._read_cgroup({"unified": rel} if self.layout.mode == "v2" else
                                      {c: rel for c in ("memory", "cpu", "cpuacct", "pids", "devices")})
            cg = facts.to_dict()
        return {"namespaces": [n.to_dict() for n in nss], "processes": trees, "cgroup": cg, "warnings": warnings}


def _infra_alive(pinned: Any) -> bool:
    return bool(pinned.infra_pid) and infra_alive(pinned)
