"""The object the daemon holds for pods and containers (`daemon.pods`):
the in-memory index of records, name reservations, per-object locks, and
recovery of what kept running while crispy was down.

Name reservations make RunPodSandbox and CreateContainer safe to retry: the
work runs in its own task, shielded from the caller's deadline, and a retry
with the same metadata and the same request joins that task (or gets its
finished result) instead of failing with a clash or making a second copy.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Hashable

from cri.errors import AlreadyExists, CrispyError, FailedPrecondition, Internal, InvalidArgument, NotFound
from runtime import namespaces, private_dirs, sandbox
from runtime.cgroups import ProcessGone
from runtime.cgroups.warmup import MigrationWarmup
from runtime.oci.factory import RuntimeFactory
from runtime.oci.interface import OciRuntime, RuntimeKind
from runtime.store import ContainerRecord, RecordStore, SandboxRecord

if TYPE_CHECKING:
    from cri.daemon import Daemon

log = logging.getLogger("crispy.pods")

# Seconds ReopenContainerLog waits for conmon to recreate the log file.
REOPEN_WAIT = 10.0


@dataclass
class _Reservation:
    digest: str
    task: "asyncio.Future[Any]"
    owner_id: str = ""


def request_digest(*messages: Any) -> str:
    h = hashlib.sha256()
    for m in messages:
        h.update(m.SerializeToString(deterministic=True) if hasattr(m, "SerializeToString") else str(m).encode())
        h.update(b"\0")
    return h.hexdigest()


class PodManager:
    def __init__(self, daemon: "Daemon") -> None:
        self.daemon = daemon
        self.state_root: Path = daemon.state_root
        self.store = RecordStore(daemon.data_root)
        self.default_cgroup_parent = daemon.config.runtime.default_cgroup_parent
        self.sandboxes: dict[str, SandboxRecord] = {}
        self.containers: dict[str, ContainerRecord] = {}
        self._names: dict[Hashable, _Reservation] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.cgroups: Any = None
        # None without cgroups: then no process is ever moved.
        self.migration_warmup: MigrationWarmup | None = None
        # Per container: the task watching its conmon, and an event set once
        # its exit is recorded.
        self.watchers: dict[str, asyncio.Task[None]] = {}
        self.exit_events: dict[str, asyncio.Event] = {}
        # Last CPU reading per container, for ContainerStats' CPU rate.
        self.cpu_samples: dict[str, Any] = {}
        self.runtimes = RuntimeFactory(self.state_root)
        from runtime.pod_health import PodHealth
        self.health = PodHealth(self)

    # ---- start-up --------------------------------------------------------

    async def open(self) -> None:
        await asyncio.to_thread(self._prepare_dirs)
        self.cgroups = _open_cgroups(self.daemon)
        if self.cgroups is not None:
            self.migration_warmup = MigrationWarmup(self.daemon.cgroup_layout)
        # Each configured runtime is asked what it is and copied now rather
        # than on the first RunPodSandbox or CreateContainer.
        await asyncio.to_thread(lambda: [self.runtimes.for_path(p) for p in self.configured_runtime_paths()])
        pods, ctrs = await asyncio.to_thread(self.store.load)
        for rec in pods:
            self.sandboxes[rec.id] = rec
            self._reserve_done(("pod", rec.name, rec.namespace, rec.uid, rec.attempt), rec.request_digest, rec.id)
        for ctr in ctrs:
            if ctr.sandbox_id not in self.sandboxes:
                log.warning("container record without its pod", extra={"fields": {"id": ctr.id, "pod": ctr.sandbox_id}})
            self.containers[ctr.id] = ctr
            self._reserve_done(("ctr", ctr.sandbox_id, ctr.name, ctr.attempt), ctr.request_digest, ctr.id)
        await self._recover()
        from runtime import sandbox_orphans
        await sandbox_orphans.sweep(self)
        self.health.open()
        for rec in self.sandboxes.values():
            self.health.track(rec)
        log.info("pods loaded", extra={"fields": {"pods": len(self.sandboxes), "containers": len(self.containers)}})

    def _prepare_dirs(self) -> None:
        self.store.prepare()
        # Pod dirs hold each pod's /dev/shm (1777), bundles each container's
        # mounted root, rootfs/ each writable layer: see runtime/private_dirs.py.
        for d in (self.state_root / "pods", self.state_root / "containers", self.state_root / "exits",
                  self.state_root / "sock", self.state_root / "oci", self.state_root / "exec",
                  self.daemon.data_root / "rootfs"):
            private_dirs.ensure_private(d)
        for d in (self.state_root / "pods", self.state_root / "containers", self.daemon.data_root / "rootfs"):
            private_dirs.tighten_children(d)

    async def _recover(self) -> None:
        from runtime import pod_intent
        ready = [r for r in self.sandboxes.values() if r.state == "ready" and r.pod_dir]
        stopping = await asyncio.to_thread(lambda: [r for r in ready if pod_intent.stopping(Path(r.pod_dir))])
        for rec in stopping:
            await self.health.mark_not_ready(rec, "crispy stopped while StopPodSandbox was tearing it down")
        for rec in list(self.sandboxes.values()):
            # The pod's init died while we were away (or the node rebooted):
            # its PID namespace cannot take new members; or a pin is gone.
            await self.health.refresh(rec)
        from runtime import container
        for ctr in list(self.containers.values()):
            if not await container.recover(self, ctr):
                # A created container whose monitor is gone: discarded, so
                # that kubelet's retried CreateContainer makes a fresh one.
                del self.containers[ctr.id]
                self.release_name(("ctr", ctr.sandbox_id, ctr.name, ctr.attempt), ctr.id)

    # ---- names, locks, lookup ------------------------------------------

    def _reserve_done(self, key: Hashable, digest: str, owner_id: str) -> None:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        fut.set_result(owner_id)
        self._names[key] = _Reservation(digest, fut, owner_id)

    def release_name(self, key: Hashable, owner_id: str) -> None:
        r = self._names.get(key)
        if r is not None and r.owner_id == owner_id:
            del self._names[key]

    async def reserved(self, key: Hashable, digest: str, what: str,
                       work: Callable[[], Awaitable[Any]]) -> Any:
        """Runs `work` once per name; see the module docstring."""
        r = self._names.get(key)
        if r is not None:
            if r.digest != digest:
                holder = f"{r.owner_id[:13]}" if r.owner_id else "a request still in progress"
                raise AlreadyExists(f"{what} is already in use by {holder}; remove it first or use a new attempt number")
            return await asyncio.shield(r.task)
        task = asyncio.ensure_future(work())
        reservation = _Reservation(digest, task)
        self._names[key] = reservation

        def _done(t: "asyncio.Future[Any]") -> None:
            if t.cancelled() or t.exception() is not None:
                if self._names.get(key) is reservation:
                    del self._names[key]
            else:
                reservation.owner_id = t.result()
        task.add_done_callback(_done)
        return await asyncio.shield(task)

    def lock(self, object_id: str) -> asyncio.Lock:
        lk = self._locks.get(object_id)
        if lk is None:
            lk = self._locks[object_id] = asyncio.Lock()
        return lk

    def forget_lock(self, object_id: str) -> None:
        self._locks.pop(object_id, None)

    @staticmethod
    def _find(table: dict[str, Any], ref: str, what: str) -> Any:
        if not ref:
            raise InvalidArgument(f"{what} id is empty")
        rec = table.get(ref)
        if rec is not None:
            return rec
        # crictl and people use unique id prefixes.
        matches = [v for k, v in table.items() if k.startswith(ref)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise InvalidArgument(f"{what} id prefix {ref!r} is ambiguous ({len(matches)} match); give more characters")
        raise NotFound(f"{what} {ref!r} not found")

    def sandbox(self, ref: str) -> SandboxRecord:
        return self._find(self.sandboxes, ref, "pod sandbox")

    def container(self, ref: str) -> ContainerRecord:
        return self._find(self.containers, ref, "container")

    def containers_of(self, sandbox_id: str) -> list[ContainerRecord]:
        return [c for c in self.containers.values() if c.sandbox_id == sandbox_id]

    def runtime_for(self, rec: SandboxRecord | ContainerRecord) -> OciRuntime:
        """The OCI runtime that runs a pod's or container's containers."""
        return self.runtimes.for_record(rec)

    def configured_runtime_paths(self) -> list[str]:
        """The default runtime and every handler's that is installed."""
        paths = set()
        if self.daemon.default_runtime is not None:
            paths.add(self.daemon.default_runtime.path)
        for wanted in self.daemon.config.runtime.handlers.values():
            path = wanted if os.path.isabs(wanted) else shutil.which(wanted)
            if path:
                paths.add(path)
        return sorted(paths)

    def close(self) -> None:
        self.health.close()
        self.runtimes.close()

    def runtime_for_handler(self, handler: str) -> str:
        handlers = self.daemon.config.runtime.handlers
        if handler in handlers:
            wanted = handlers[handler]
            path = wanted if os.path.isabs(wanted) else shutil.which(wanted)
            if not path:
                raise InvalidArgument(f"runtime handler {handler!r} maps to {wanted!r}, which is not installed")
            if self.runtimes.for_path(path).kind is RuntimeKind.CRUN:
                from runtime.host import crun_blocker
                blocker = crun_blocker(self.daemon.cgroup_layout)
                if blocker:
                    # Say so now rather than at the first CreateContainer.
                    raise FailedPrecondition(f"runtime handler {handler!r} uses crun, which cannot run containers "
                                             f"on this node: {blocker}")
            return path
        if handler == "":
            if self.daemon.default_runtime is None:
                raise FailedPrecondition("no OCI runtime is available on this node; install crun or runc")
            return self.daemon.default_runtime.path
        known = ", ".join(repr(h) for h in sorted({"", *handlers}))
        raise InvalidArgument(f"unknown runtime handler {handler!r}; this node has: {known} "
                              f"(configure more under [runtime.handlers])")

    # ---- cgroups ----------------------------------------------------------

    async def cgroups_create_pod(self, rec: SandboxRecord, requested_parent: str) -> None:
        """kubelet names the pod's cgroup in cgroup_parent (it made it and
        removes it); containers go right below it. A pod that names none
        (crictl, tests) gets its own cgroup under the configured default,
        made here and removed with the pod. The infra process joins it once
        both exist (sandbox._join_infra): it belongs to the pod, not to
        crispy (whose service cgroup a service manager may kill whole)."""
        path = self.pod_cgroup_path(rec.id, requested_parent)
        if not path:
            rec.cgroup_parent = requested_parent
        else:
            await asyncio.to_thread(self.cgroups.create, path)
            rec.cgroup_parent = rec.cgroup_path = path

    def pod_cgroup_path(self, sandbox_id: str, requested_parent: str) -> str:
        """The cgroup crispy makes (and removes) for a pod; "" when it makes none."""
        if requested_parent or self.daemon.config.runtime.cgroup_driver != "cgroupfs" or self.cgroups is None:
            return ""
        return "/" + "/".join(p for p in (*self.default_cgroup_parent.split("/"), f"pod-{sandbox_id}") if p)

    async def remove_cgroup_path(self, path: str) -> None:
        """Removes a pod cgroup crispy made, in every hierarchy mounted now."""
        if path and self.cgroups is not None:
            # A fresh look at the hierarchies: one mounted since crispy
            # started (a v1 hugetlb, say) holds the pod's cgroup too, made
            # there by the OCI runtime for the pod's containers.
            cgroups = await asyncio.to_thread(_open_cgroups, self.daemon)
            await asyncio.to_thread(cgroups.remove, path)

    async def join_pod_cgroup(self, rec: SandboxRecord, pid: int, what: str, gone_ok: bool = False) -> None:
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

    async def cgroups_remove_pod(self, rec: SandboxRecord) -> None:
        await self.remove_cgroup_path(rec.cgroup_path)

    # ---- pods -------------------------------------------------------------

    async def run_pod(self, req: Any) -> str:
        md = req.config.metadata
        if not md.name or not md.namespace or not md.uid:
            raise InvalidArgument("PodSandboxConfig.metadata needs name, namespace and uid")
        key = ("pod", md.name, md.namespace, md.uid, md.attempt)
        digest = request_digest(req)

        async def work() -> str:
            rec = await sandbox.run(self, req, digest)
            self.sandboxes[rec.id] = rec
            self.health.track(rec)
            return rec.id
        return await self.reserved(key, digest, f"pod sandbox name {md.name}_{md.namespace}_{md.uid}_{md.attempt}", work)

    async def stop_pod(self, ref: str) -> None:
        try:
            rec = self.sandbox(ref)
        except NotFound:
            return  # already removed: nothing left to stop

        async def locked() -> None:
            async with self.lock(rec.id):
                if rec.id in self.sandboxes:
                    self.health.untrack(rec.id)
                    await sandbox.stop(self, rec)
        await _uncancellable(locked())

    async def remove_pod(self, ref: str) -> None:
        try:
            rec = self.sandbox(ref)
        except NotFound:
            return

        async def locked() -> None:
            async with self.lock(rec.id):
                if rec.id not in self.sandboxes:
                    return
                self.health.untrack(rec.id)
                await sandbox.remove(self, rec)
                del self.sandboxes[rec.id]
                self.cpu_samples.pop("pod:" + rec.id, None)
                self.release_name(("pod", rec.name, rec.namespace, rec.uid, rec.attempt), rec.id)
            self.forget_lock(rec.id)
        await _uncancellable(locked())

    # ---- containers (runtime/container.py) -----------------------------

    def exit_event(self, container_id: str) -> asyncio.Event:
        ev = self.exit_events.get(container_id)
        if ev is None:
            ev = self.exit_events[container_id] = asyncio.Event()
        return ev

    async def create_container(self, req: Any) -> str:
        from runtime import container
        md = req.config.metadata
        if not req.pod_sandbox_id:
            raise InvalidArgument("CreateContainer needs pod_sandbox_id")
        pod = self.sandbox(req.pod_sandbox_id)
        key = ("ctr", pod.id, md.name, md.attempt)
        digest = request_digest(pod.id, req.config)

        async def work() -> str:
            async with self.lock(pod.id):
                if pod.id not in self.sandboxes:
                    raise NotFound(f"pod sandbox {pod.id[:13]} was removed")
                ctr = await container.create(self, req, digest)
                self.containers[ctr.id] = ctr
                container.watch(self, ctr)
                return ctr.id
        return await self.reserved(key, digest, f"container name {md.name} (attempt {md.attempt}) in pod {pod.id[:13]}", work)

    async def start_container(self, ref: str) -> None:
        from runtime import container
        ctr = self.container(ref)

        async def locked() -> None:
            async with self.lock(ctr.id):
                await container.start(self, ctr)
        await _uncancellable(locked())

    async def stop_container(self, ref: str, timeout: float) -> None:
        try:
            ctr = self.container(ref)
        except NotFound:
            return  # idempotent: a container that is gone is stopped
        await _uncancellable(self.stop_container_record(ctr, timeout))

    async def remove_container(self, ref: str) -> None:
        try:
            ctr = self.container(ref)
        except NotFound:
            return  # idempotent
        await _uncancellable(self.remove_container_record(ctr))

    async def exec_sync(self, ref: str, cmd: list[str], timeout: float) -> Any:
        """Not under the container's lock: probes run alongside lifecycle calls."""
        from runtime import container, exec_sync
        from runtime.oci_spec import exec_process_spec
        ctr = self.container(ref)
        container.require_running(ctr, "ExecSync")
        spec = await asyncio.to_thread(container.read_spec, ctr)
        process = exec_process_spec(spec, list(cmd), False)
        return await exec_sync.exec_sync(self.runtime_for(ctr), ctr.id, process, Path(ctr.bundle), timeout)

    async def update_resources(self, ref: str, resources: Any) -> None:
        """Applied to the live cgroup, then recorded: ContainerStatus reports
        what the cgroup holds."""
        from runtime.sandbox import to_json
        ctr = self.container(ref)
        async with self.lock(ctr.id):
            if ctr.state not in ("created", "running"):
                raise FailedPrecondition(f"container {ctr.id[:13]} is {ctr.state}; only a created or running container can be updated")
            if self.cgroups is None or not ctr.cgroup_path:
                raise FailedPrecondition("this node has no cgroup manager; resources cannot be updated")
            await asyncio.to_thread(self.cgroups.update, ctr.cgroup_path, resources)
            merged = dict(ctr.resources)
            merged.update(to_json(resources))
            ctr.resources = merged
            await self.store.save(ctr)

    async def live_resources(self, ctr: ContainerRecord) -> Any:
        """What the container's cgroup holds now, or None."""
        if ctr.state != "running" or self.cgroups is None or not ctr.cgroup_path:
            return None
        try:
            if not await asyncio.to_thread(self.cgroups.exists, ctr.cgroup_path):
                return None
            return await asyncio.to_thread(self.cgroups.read_resources, ctr.cgroup_path)
        except OSError:
            return None

    async def reopen_log(self, ref: str) -> None:
        from runtime import container
        ctr = self.container(ref)
        container.require_running(ctr, "ReopenContainerLog")
        try:
            await self.runtime_for(ctr).reopen_log(ctr.bundle)
        except OSError as e:
            raise FailedPrecondition(f"conmon of container {ctr.id[:13]} is not listening: {e.strerror}") from None
        # conmon reopens asynchronously; kubelet (and critest) expect the
        # file to be back at its path when the call returns.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + REOPEN_WAIT
        delay = 0.001
        while not await asyncio.to_thread(os.path.exists, ctr.log_path):
            if loop.time() > deadline:
                raise Internal(f"conmon did not reopen {ctr.log_path} within {REOPEN_WAIT:.0f}s")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)

    async def container_usage(self, ctr: ContainerRecord) -> Any:
        from runtime import container_stats
        usage, sample = await asyncio.to_thread(container_stats.collect, self.cgroups, ctr,
                                                self.cpu_samples.get(ctr.id))
        if sample is not None and ctr.id in self.containers:
            self.cpu_samples[ctr.id] = sample
        return usage

    async def pod_usage(self, rec: SandboxRecord) -> Any:
        from runtime import container_stats
        key = "pod:" + rec.id
        usage, sample = await asyncio.to_thread(container_stats.collect_cgroup, self.cgroups,
                                                rec.cgroup_parent if rec.state == "ready" else "",
                                                self.cpu_samples.get(key))
        if sample is not None and rec.id in self.sandboxes:
            self.cpu_samples[key] = sample
        return usage

    async def pod_network_usage(self, rec: SandboxRecord) -> Any:
        """Interfaces of the pod's network namespace, read through any live
        process in it; None for host-network pods or when none runs."""
        from runtime import container_stats
        if rec.host_network or rec.state != "ready":
            return None
        pinned = sandbox.pinned_of(rec)
        pids = [pinned.infra_pid] if namespaces.infra_alive(pinned) else []
        pids += [c.pid for c in self.containers_of(rec.id) if c.state == "running" and c.pid]
        for pid in pids:
            usage = await asyncio.to_thread(container_stats.network_usage, pid)
            if usage is not None:
                return usage
        return None

    def image_users(self, image_id: str) -> list[str]:
        return [c.id for c in self.containers.values() if c.image_id == image_id]

    async def stop_container_record(self, ctr: ContainerRecord, timeout: float, skip_futile: bool = False) -> None:
        from runtime import container
        async with self.lock(ctr.id):
            await container.stop(self, ctr, timeout, skip_futile)

    async def remove_container_record(self, ctr: ContainerRecord) -> None:
        from runtime import container
        async with self.lock(ctr.id):
            if ctr.id in self.containers:
                await container.remove(self, ctr)
                del self.containers[ctr.id]
                self.cpu_samples.pop(ctr.id, None)
                self.release_name(("ctr", ctr.sandbox_id, ctr.name, ctr.attempt), ctr.id)
        self.forget_lock(ctr.id)


async def _uncancellable(coro: Awaitable[Any]) -> Any:
    """Runs a lifecycle step to its end even if the caller goes away (its
    deadline passed): a half-done stop or remove would leave state that
    neither the caller nor its retry could see. The lock is held by the
    step itself, so it stays held until the step is really over."""
    task = asyncio.ensure_future(coro)

    def _log(t: "asyncio.Future[Any]") -> None:
        if not t.cancelled() and t.exception() is not None:
            log.info("a lifecycle step finished with an error after its caller left",
                     extra={"fields": {"error": str(t.exception())}})
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        task.add_done_callback(_log)
        raise


def _open_cgroups(daemon: "Daemon") -> Any:
    from runtime.cgroups import open_layout
    return open_layout(driver=daemon.config.runtime.cgroup_driver, layout=daemon.cgroup_layout)
