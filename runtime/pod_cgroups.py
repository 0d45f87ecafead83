"""Pod cgroups: the one crispy makes for a pod that names none, and moving
the pod's own processes (infra, conmon) into the pod's cgroup.

kubelet names the pod's cgroup in cgroup_parent (it made it and removes
it); containers go right below it. A pod that names none (crictl, tests)
gets its own cgroup under the configured default, made here and removed
with the pod. Processes crispy starts for a pod belong to the pod, not to
crispy (whose service cgroup a service manager may kill whole)."""

from __future__ import annotations

import asyncio
import logging

from runtime.cgroups import CgroupManager, ProcessGone, open_layout
from runtime.errors import CrispyError
from runtime.settings import LifecycleSettings
from runtime.store import SandboxRecord

log = logging.getLogger("crispy.pods")


class PodCgroups:
    def __init__(self, cgroups: CgroupManager | None, settings: LifecycleSettings) -> None:
        """`cgroups` None: no cgroup manager, so no process is ever moved."""
        self.cgroups = cgroups
        self._driver = settings.cgroup_driver
        self._layout = settings.cgroup_layout
        self._default_parent = settings.default_cgroup_parent

    def path(self, sandbox_id: str, requested_parent: str) -> str:
        """The cgroup crispy makes (and removes) for a pod; "" when it makes none."""
        if requested_parent or self._driver != "cgroupfs" or self.cgroups is None:
            return ""
        return "/" + "/".join(p for p in (*self._default_parent.split("/"), f"pod-{sandbox_id}") if p)

    async def create(self, rec: SandboxRecord, requested_parent: str) -> None:
        """Sets the record's cgroup parent, and makes the cgroup if it is crispy's."""
        path = self.path(rec.id, requested_parent)
        if not path:
            rec.cgroup_parent = requested_parent
        else:
            assert self.cgroups is not None  # path() is "" without one
            await asyncio.to_thread(self.cgroups.create, path)
            rec.cgroup_parent = rec.cgroup_path = path

    async def remove_path(self, path: str) -> None:
        """Removes a pod cgroup crispy made, in every hierarchy mounted now."""
        if path and self.cgroups is not None:
            # A fresh look at the hierarchies: one mounted since crispy
            # started (a v1 hugetlb, say) holds the pod's cgroup too, made
            # there by the OCI runtime for the pod's containers.
            cgroups = await asyncio.to_thread(open_layout, driver=self._driver, layout=self._layout)
            await asyncio.to_thread(cgroups.remove, path)

    async def remove(self, rec: SandboxRecord) -> None:
        await self.remove_path(rec.cgroup_path)

    async def join(self, rec: SandboxRecord, pid: int, what: str, gone_ok: bool = False) -> None:
        """Best effort: a process left in crispy's cgroup still works.
        `gone_ok`: a process that has exited meanwhile is no news."""
        cgroups = self.cgroups
        if cgroups is None or not rec.cgroup_parent:
            return

        def join() -> None:  # one thread hop
            if not rec.cgroup_path and not cgroups.exists(rec.cgroup_parent):
                cgroups.create(rec.cgroup_parent)
            cgroups.add_process(rec.cgroup_parent, pid)
        try:
            await asyncio.to_thread(join)
        except ProcessGone:
            if not gone_ok:
                log.warning("could not move a process into the pod's cgroup: it is gone", extra={"fields": {
                    "pod": rec.id, "process": what, "pid": pid}})
        except (OSError, CrispyError) as e:
            log.warning("could not move a process into the pod's cgroup", extra={"fields": {
                "pod": rec.id, "process": what, "pid": pid, "error": getattr(e, "message", str(e))}})
