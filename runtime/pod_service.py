"""Pod sandboxes: the namespaces, files, /dev/shm and cgroup a pod's
containers share, from RunPodSandbox to RemovePodSandbox.

Every step of `run` registers its undo; a failure anywhere unwinds what was
done, so a failed RunPodSandbox leaves nothing behind. What a step's undo
needs is persisted before the step (runtime/pod_intent.py), so a crash
anywhere is undone by the next start's sweep. The `crashpoint`s name the
windows between steps for the crash tests (runtime/crashpoints.py).

Stopping or removing a pod stops or removes its containers through the
container service.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import secrets
import shutil
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

from cri.proto import api_pb2 as pb
from runtime import kmount, namespaces, pod_files, pod_intent, userns
from runtime.cgroups.warmup import MigrationWarmup
from runtime.cni import host_network_status
from runtime.container_service import ContainerService
from runtime.crashpoints import crashpoint
from runtime.errors import FailedPrecondition, InvalidArgument, NotFound
from runtime.events import EventBus, EventKind
from runtime.handlers import RuntimeHandlers
from runtime.index import RecordIndex
from runtime.locks import ObjectLocks, uncancellable
from runtime.network import PodNetwork, PodNetworkStatus
from runtime.nri.adaptation import Nri
from runtime.pod_cgroups import PodCgroups
from runtime.pod_config import PID_MODES, config_of, network_request, to_json, validate
from runtime.pod_health import PodHealth
from runtime.pod_view import pinned_of, pod_ips
from runtime.reservations import Reservations, pod_key, pod_key_of, request_digest
from runtime.settings import LifecycleSettings
from runtime.states import PodState, set_pod_state
from runtime.store import RecordStore, SandboxRecord
from runtime.usage import UsageSampler

log = logging.getLogger("crispy.sandbox")

SHM_SIZE = 64 * 1024 * 1024  # Docker's and containerd's default pod /dev/shm

# Makes and pins a pod's namespaces (runtime/namespaces.py `create` on a node).
NamespaceMaker = Callable[[Path, namespaces.NamespaceRequest], Awaitable[namespaces.PodNamespaces]]


class _Undo:
    def __init__(self) -> None:
        self._steps: list[tuple[str, Callable[[], Awaitable[None]]]] = []

    def push(self, what: str, fn: Callable[[], Awaitable[None]]) -> None:
        self._steps.append((what, fn))

    async def run(self) -> None:
        for what, fn in reversed(self._steps):
            try:
                await fn()
            except Exception as e:  # noqa: BLE001 - keep unwinding the rest
                log.error("cleanup after a failed RunPodSandbox failed",
                          extra={"fields": {"step": what, "error": str(e)}})


class PodService:
    def __init__(self, settings: LifecycleSettings, *, index: RecordIndex, store: RecordStore,
                 reservations: Reservations, locks: ObjectLocks, health: PodHealth, network: PodNetwork,
                 handlers: RuntimeHandlers, pod_cgroups: PodCgroups, warmup: MigrationWarmup | None,
                 containers: ContainerService, usage: UsageSampler,
                 make_namespaces: NamespaceMaker = namespaces.create, nri: Nri | None = None,
                 events: EventBus | None = None) -> None:
        self.settings = settings
        self.events = events if events is not None else EventBus(index)
        self.index = index
        self.store = store
        self.reservations = reservations
        self.locks = locks
        self.health = health
        self.network = network
        self.handlers = handlers
        self.pod_cgroups = pod_cgroups
        self.migration_warmup = warmup
        self.containers = containers
        self.usage = usage
        # NRI plugins see every step (runtime/nri/); without any, a no-op.
        self.nri = nri if nri is not None else Nri(enabled=False, index=index, store=store, cgroups=None)
        # Tests without root stand in for the kernel's namespaces here.
        self.make_namespaces = make_namespaces
        self.state_root = settings.state_root

    # ---- the RPCs ---------------------------------------------------------

    async def run(self, req: pb.RunPodSandboxRequest) -> str:
        md = req.config.metadata
        if not md.name or not md.namespace or not md.uid:
            raise InvalidArgument("PodSandboxConfig.metadata needs name, namespace and uid")
        digest = request_digest(req)

        async def work() -> str:
            rec = await self._run(req, digest)
            try:
                # Before the pod is visible: a plugin's error undoes it all.
                await self.nri.run_pod(rec)
            except BaseException:
                await asyncio.shield(self._remove(rec))
                raise
            self.index.sandboxes[rec.id] = rec
            self.nri.pod_indexed(rec)
            self.health.track(rec)
            self.events.pod(EventKind.CREATED, rec)
            self.events.pod(EventKind.STARTED, rec)
            return rec.id
        return await self.reservations.reserved(pod_key(md.name, md.namespace, md.uid, md.attempt), digest,
                                                f"pod sandbox name {md.name}_{md.namespace}_{md.uid}_{md.attempt}",
                                                work)

    async def stop(self, ref: str) -> None:
        try:
            rec = self.index.sandbox(ref)
        except NotFound:
            return  # already removed: nothing left to stop

        async def locked() -> None:
            async with self.locks.lock(rec.id):
                if rec.id in self.index.sandboxes:
                    self.health.untrack(rec.id)
                    was_ready = rec.state == PodState.READY
                    await self._stop(rec)
                    if was_ready:  # once per pod: a repeated stop, or one after it broke, is no news
                        self.events.pod(EventKind.STOPPED, rec)
        await uncancellable(locked())

    async def remove(self, ref: str) -> None:
        try:
            rec = self.index.sandbox(ref)
        except NotFound:
            return

        async def locked() -> None:
            async with self.locks.lock(rec.id):
                if rec.id not in self.index.sandboxes:
                    return
                self.health.untrack(rec.id)
                await self._remove(rec)
                del self.index.sandboxes[rec.id]
                self.usage.forget_pod(rec.id)
                self.reservations.release(pod_key_of(rec), rec.id)
                self.events.pod(EventKind.DELETED, rec)
            self.locks.forget(rec.id)
        await uncancellable(locked())

    async def update_resources(self, ref: str, overhead: pb.LinuxContainerResources | None,
                               resources: pb.LinuxContainerResources | None) -> None:
        """UpdatePodSandboxResources: kubelet tells the pod's new totals. The
        plugins see them (an error fails the call); a pod cgroup crispy made
        gets the limits (kubelet's own pod cgroups it manages itself)."""
        rec = self.index.sandbox(ref)
        async with self.locks.lock(rec.id):
            if rec.state != PodState.READY:
                raise FailedPrecondition(f"pod sandbox {rec.id[:13]} is not ready; only a ready pod can be updated")
            await self.nri.update_pod(rec, overhead, resources)
            cgroups = self.pod_cgroups.cgroups
            if resources is not None and rec.cgroup_path and cgroups is not None:
                await asyncio.to_thread(cgroups.update, rec.cgroup_path, resources)
            await self.nri.post_update_pod(rec)

    # ---- run --------------------------------------------------------------

    async def _run(self, req: pb.RunPodSandboxRequest, request_digest: str) -> SandboxRecord:
        config = req.config
        validate(config)
        runtime_path = self.handlers.resolve(req.runtime_handler)
        nsopt = config.linux.security_context.namespace_options
        md = config.metadata
        sandbox_id = secrets.token_hex(32)
        pod_dir = self.state_root / "pods" / sandbox_id
        rec = SandboxRecord(
            id=sandbox_id, name=md.name, namespace=md.namespace, uid=md.uid, attempt=md.attempt,
            config=to_json(config), runtime_handler=req.runtime_handler, oci_runtime=runtime_path,
            created_at=time.time_ns(), state=PodState.READY, pod_dir=str(pod_dir),
            host_network=nsopt.network == pb.NODE, host_ipc=nsopt.ipc == pb.NODE,
            pid_mode=PID_MODES[nsopt.pid],
            request_digest=request_digest)
        if rec.pid_mode == "pod" and self.migration_warmup is not None:
            # The infra process will be moved into the pod's cgroup: start the
            # kernel's wait for that now (runtime/cgroups/warmup.py).
            self.migration_warmup.kick()
        undo = _Undo()
        join: asyncio.Future[None] | None = None
        try:
            # One mkdir on the state root (a tmpfs): not worth a thread hop.
            pod_dir.mkdir(parents=True, mode=0o700)
            undo.push("pod dir", lambda: asyncio.to_thread(shutil.rmtree, pod_dir, True))
            crashpoint("pod.after_dir")
            # Before the cgroup exists: the sweep must know to remove it. A tiny
            # file on the tmpfs, written inline like the mkdir.
            intent = pod_intent.PodIntent(cgroup_path=self.pod_cgroups.path(sandbox_id, config.linux.cgroup_parent))
            pod_intent.write(pod_dir, intent)
            crashpoint("pod.after_intent")
            # Host network means the node's hostname too (UTS goes with it).
            ns_req = namespaces.NamespaceRequest(
                net=not rec.host_network, ipc=not rec.host_ipc, uts=not rec.host_network,
                pod_pid=rec.pid_mode == "pod", hostname=config.hostname, sysctls=dict(config.linux.sysctls),
                userns=userns.pod_userns(nsopt))
            dns = pod_files.DnsSettings(list(config.dns_config.servers), list(config.dns_config.searches),
                                        list(config.dns_config.options))
            owner = (ns_req.userns.uids.host_id, ns_req.userns.gids.host_id) if ns_req.userns else None
            # The namespaces, /dev/shm, the cgroup and the files that do not
            # depend on the pod's IPs are independent: made at once, the pod
            # waits for the slowest instead of their sum. Each that succeeded
            # registers its undo even when another failed.
            shm_path = "" if rec.host_ipc else str(pod_dir / "shm")
            ns_step = asyncio.ensure_future(self.make_namespaces(pod_dir, ns_req))
            cgroup_step = asyncio.ensure_future(self.pod_cgroups.create(rec, config.linux.cgroup_parent))
            # Moving a process between v1 cgroups waits for an RCU grace period
            # (often 10 ms); nothing else needs it, so it starts as soon as the
            # infra and the cgroup exist and runs alongside everything else.
            join = asyncio.ensure_future(self._join_infra(rec, ns_step, cgroup_step))
            steps = asyncio.gather(
                ns_step, cgroup_step,
                asyncio.to_thread(_prepare_files, pod_dir, shm_path, config.hostname, dns, owner),
                host_network_status() if rec.host_network else _nothing(),
                return_exceptions=True)
            cancelled: asyncio.CancelledError | None = None
            try:
                made = await asyncio.shield(steps)
            except asyncio.CancelledError as e:
                # Let every step finish so that what it made gets undone.
                made, cancelled = await steps, e
            ns_made, cgroup_made, files_made, host_status = made
            pinned = ns_made if isinstance(ns_made, namespaces.PodNamespaces) else namespaces.PodNamespaces()
            if not isinstance(ns_made, BaseException):
                rec.namespaces = dataclasses.asdict(pinned)
                undo.push("namespaces", lambda: _drop_namespaces(pinned))
            if shm_path and not isinstance(files_made, BaseException):
                rec.shm_path = shm_path
                undo.push("shm", lambda: asyncio.to_thread(kmount.umount_all, shm_path))
            if not isinstance(cgroup_made, BaseException):
                undo.push("cgroup", lambda: self._remove_cgroup(rec, pinned))
            for result in (cancelled, *made):
                if isinstance(result, BaseException):
                    raise result
            assert isinstance(files_made, pod_files.PodFiles)
            crashpoint("pod.after_namespaces")
            if not rec.host_network:
                net_req = network_request(rec, config)

                async def persist_network(state: dict[str, Any]) -> None:
                    pod_intent.write(pod_dir, pod_intent.with_network(intent, net_req, state))
                    crashpoint("pod.before_cni_add")
                status = await self.network.setup(net_req, before_add=persist_network)
                crashpoint("pod.after_cni_add")
                rec.network_status = dataclasses.asdict(status)
                undo.push("network", lambda: self.network.teardown(network_request(rec, config), status))
            else:
                # Host-network pods skip CNI and report the node's own address.
                assert isinstance(host_status, PodNetworkStatus)
                rec.network_status = dataclasses.asdict(host_status)
            rec.hostname_path, rec.hosts_path, rec.resolv_conf_path = (
                files_made.hostname, files_made.hosts, files_made.resolv_conf)
            # /etc/hosts goes in the same thread hop as the record, just before it.
            crashpoint("pod.before_record")
            await self.store.save(rec, before=lambda: pod_files.write_hosts(files_made, config.hostname, pod_ips(rec),
                                                                              owner))
            crashpoint("pod.after_record")
            # Done (it never raises) before the pod is handed out.
            await asyncio.wait([join])
        except BaseException:
            # ... or undone: the join must not race the undo's kill and rmdir.
            if join is not None:
                await asyncio.shield(asyncio.wait([join]))
            await asyncio.shield(undo.run())
            raise

        log.info("pod sandbox ready", extra={"fields": {"id": sandbox_id, "pod": f"{rec.namespace}/{rec.name}",
                                                         "infra_pid": pinned.infra_pid}})
        return rec

    async def _join_infra(self, rec: SandboxRecord, ns_step: "asyncio.Future[namespaces.PodNamespaces]",
                          cgroup_step: "asyncio.Future[None]") -> None:
        """The infra into the pod's cgroup once both exist. Never raises."""
        steps: list[asyncio.Future[Any]] = [ns_step, cgroup_step]
        await asyncio.wait(steps)
        if ns_step.cancelled() or cgroup_step.cancelled() or ns_step.exception() or cgroup_step.exception():
            return
        pid = ns_step.result().infra_pid
        if pid:
            try:
                await self.pod_cgroups.join(rec, pid, "infra")
            except Exception as e:  # noqa: BLE001 - best effort, as PodCgroups.join itself
                log.warning("could not move the infra into the pod's cgroup",
                            extra={"fields": {"pod": rec.id, "error": str(e)}})

    async def _remove_cgroup(self, rec: SandboxRecord, pinned: namespaces.PodNamespaces) -> None:
        # The infra process lives in the pod cgroup, which cannot be removed
        # while it does (a failed network setup used to leak the cgroup).
        await namespaces.kill_infra(pinned)
        await self.pod_cgroups.remove(rec)

    # ---- stop / remove ----------------------------------------------------

    async def _stop(self, rec: SandboxRecord) -> None:
        """Kills what runs in the pod and releases its network; the namespaces
        and files stay until RemovePodSandbox. Safe to repeat."""
        first_stop = rec.state == PodState.READY
        if first_stop:
            # NOT_READY from the first step on (the network may be gone before
            # the record is saved at the end), and after a crash in between too.
            _mark_stopping(rec)
            # Not saved yet: the `stopping` file is this step's mark on disk,
            # and the record is saved once, at the end of the stop.
            set_pod_state(rec, PodState.NOT_READY)
        # kubelet has normally stopped each container with its own grace period
        # already; stragglers get the stop signal and runtime.default_stop_timeout,
        # all at once, then SIGKILL.
        grace = float(self.settings.default_stop_timeout)
        results = await asyncio.gather(*(self.containers.stop_record(ctr, grace, skip_futile=True)
                                         for ctr in self.index.containers_of(rec.id)), return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                raise r
        crashpoint("pod.stop.after_containers")
        if first_stop:
            # Containers stopped, the sandbox still whole (and listed).
            await self.nri.stop_pod(rec)
        if rec.network_status is not None:
            status = PodNetworkStatus(**rec.network_status)
            await self.network.teardown(network_request(rec, config_of(rec)), status)
            crashpoint("pod.stop.after_cni_del")
            rec.network_status = None
        await namespaces.kill_infra(pinned_of(rec))
        crashpoint("pod.stop.before_record")
        await self.store.move_pod(rec, PodState.NOT_READY)

    async def _remove(self, rec: SandboxRecord) -> None:
        if rec.state == PodState.READY or rec.network_status is not None:
            await self._stop(rec)
        for ctr in self.index.containers_of(rec.id):
            await self.containers.remove_record(ctr)
        pinned = pinned_of(rec)
        await namespaces.kill_infra(pinned)
        await namespaces.unpin(pinned)
        crashpoint("pod.remove.after_unpin")
        if rec.shm_path:
            await asyncio.to_thread(kmount.umount_all, rec.shm_path)
        await self.pod_cgroups.remove(rec)
        crashpoint("pod.remove.after_cgroup")
        if rec.pod_dir:
            await asyncio.to_thread(_remove_pod_dir, Path(rec.pod_dir))
        crashpoint("pod.remove.before_record")
        await self.store.delete(rec)
        await self.nri.remove_pod(rec)
        log.info("pod sandbox removed", extra={"fields": {"id": rec.id}})


async def _nothing() -> None:
    return None


def _mount_shm(path: str, owner: pod_files.Owner) -> None:
    os.mkdir(path, 0o1777)
    ids = f",uid={owner[0]},gid={owner[1]}" if owner else ""
    kmount.mount("shm", path, "tmpfs", kmount.MS_NOSUID | kmount.MS_NODEV | kmount.MS_NOEXEC,
                 f"mode=1777,size={SHM_SIZE}{ids}")


def _prepare_files(pod_dir: Path, shm_path: str, hostname: str, dns: pod_files.DnsSettings,
                   owner: pod_files.Owner) -> pod_files.PodFiles:
    """/dev/shm (unless `shm_path` is "") and the static pod files, in one
    thread hop, owned by `owner`. On failure nothing of it is left mounted."""
    if shm_path:
        _mount_shm(shm_path, owner)
    try:
        return pod_files.write_static(pod_dir, hostname, dns, owner)
    except BaseException:
        if shm_path:
            kmount.umount_all(shm_path)
        raise


async def _drop_namespaces(pinned: namespaces.PodNamespaces) -> None:
    await namespaces.kill_infra(pinned)
    await namespaces.unpin(pinned)


def _mark_stopping(rec: SandboxRecord) -> None:
    # Inline: one empty file on the state root, cheaper than a thread hop.
    if not rec.pod_dir:
        return
    try:
        pod_intent.mark_stopping(Path(rec.pod_dir))
    except OSError as e:
        # The stop itself must go on; only a crash before its end would then
        # show the pod READY until kubelet's retried stop.
        log.warning("could not note the stop in the pod's intent file",
                    extra={"fields": {"id": rec.id, "error": str(e)}})


def _remove_pod_dir(pod_dir: Path) -> None:
    # Never recurse into something still mounted (a pinned namespace or
    # /dev/shm that failed to unmount): rmtree would fail or, worse, empty it.
    if pod_dir.exists() and kmount.mounts_under(str(pod_dir)):
        raise OSError(f"{pod_dir} still has mounts: {kmount.mounts_under(str(pod_dir))}")
    shutil.rmtree(pod_dir, ignore_errors=True)
