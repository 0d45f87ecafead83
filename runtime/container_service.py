"""Containers: CreateContainer to RemoveContainer, UpdateContainerResources,
ExecSync and ReopenContainerLog. The pod's OCI runtime (runtime/oci/)
creates each container under conmon, which supervises it; its exit is
recorded by runtime/exits.py.

Lifecycle calls on one container are serialised by its lock; CreateContainer
holds its pod's lock, so a pod is not removed under a create.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import shutil
import signal
import time
from pathlib import Path
from typing import Any, Protocol

from cri.proto import api_pb2 as pb
from runtime import exec_sync, image_volumes, isolated, kmount, procfs, rootfs, userns
from runtime.cgroups import CgroupManager
from runtime.cgroups.warmup import MigrationWarmup
from runtime.container_config import (
    IDMAPPED_VOLUMES,
    build_spec_for,
    read_spec,
    require_running,
    sandbox_view,
    save_spec,
    signal_is_futile,
    signal_number,
    stop_signal_of,
)
from runtime.container_config import log_path as _log_path
from runtime.container_config import write_spec as _write_spec
from runtime.crashpoints import crashpoint
from runtime.errors import FailedPrecondition, Internal, InvalidArgument, NotFound
from runtime.events import EventBus, EventKind
from runtime.exits import KILL_WAIT, ExitWatcher
from runtime.features import UNPROBED, NodeFeatures
from runtime.image_provider import ImageProvider
from runtime.index import RecordIndex
from runtime.locks import ObjectLocks, uncancellable
from runtime.nri.adaptation import Nri
from runtime.oci.factory import RuntimeFactory
from runtime.oci.interface import CreateParams, OciRuntime, PendingCreate
from runtime.oci_spec import ContainerSpecRequest, exec_process_spec, resolve_user
from runtime.pod_cgroups import PodCgroups
from runtime.pod_config import config_of, to_json
from runtime.pod_health import PodHealth
from runtime.pod_view import is_ready, pinned_of
from runtime.reservations import Reservations, container_key, container_key_of, request_digest
from runtime.settings import LifecycleSettings
from runtime.states import ContainerState
from runtime.store import ContainerRecord, RecordStore, SandboxRecord
from runtime.usage import UsageSampler

log = logging.getLogger("crispy.container")

# Seconds ReopenContainerLog waits for conmon to recreate the log file.
REOPEN_WAIT = 10.0


class RootfsMounts(Protocol):
    """Mounts a container's root (runtime/rootfs.py, the module itself, is the one the daemon uses)."""
    def mount(self, layers: list[str], target: str, scratch: Path,
              idmap: rootfs.RootIdmap | None = None) -> None: ...

    def unmount(self, target: str) -> None: ...


class VolumeMounts(Protocol):
    """Mounts image volumes (runtime/image_volumes.py is the one the daemon uses)."""
    def mount(self, layers: list[str], target: str, sub_path: str) -> str: ...

    def unmount(self, target: str) -> None: ...


def root_idmap(pod: SandboxRecord, pod_config: pb.PodSandboxConfig, bundle: Path) -> rootfs.RootIdmap | None:
    """How a container root of `pod` must be mapped: None unless the pod
    has a user namespace of its own."""
    pinned = pinned_of(pod)
    maps = userns.pod_userns(pod_config.linux.security_context.namespace_options)
    if not pinned.user or maps is None:
        return None
    return rootfs.RootIdmap(pinned.user, maps.uids.host_id, maps.gids.host_id,
                            view_dir=str(bundle / "layers-idmapped"))


class ContainerService:
    def __init__(self, settings: LifecycleSettings, *, index: RecordIndex, store: RecordStore,
                 reservations: Reservations, locks: ObjectLocks, health: PodHealth, images: ImageProvider,
                 runtimes: RuntimeFactory, pod_cgroups: PodCgroups, cgroups: CgroupManager | None,
                 warmup: MigrationWarmup | None, exits: ExitWatcher, usage: UsageSampler,
                 rootfs_mounts: RootfsMounts = rootfs, volume_mounts: VolumeMounts = image_volumes,
                 features: NodeFeatures | None = None, nri: Nri | None = None,
                 events: EventBus | None = None) -> None:
        self.settings = settings
        self.events = events if events is not None else EventBus(index)
        self.index = index
        self.store = store
        self.reservations = reservations
        self.locks = locks
        self.health = health
        self.images = images
        self.runtimes = runtimes
        self.pod_cgroups = pod_cgroups
        self.cgroups = cgroups
        # None without cgroups: then no process is ever moved.
        self.migration_warmup = warmup
        self.exits = exits
        self.usage = usage
        # runtime/rootfs.py on a node; tests without root stand in for overlayfs.
        self.rootfs_mounts = rootfs_mounts
        # What each runtime binary supports (recursive read-only mounts);
        # None in tests that assemble a service without a node.
        self.features = features
        self.volume_mounts = volume_mounts
        # NRI plugins see every step (runtime/nri/); without any, a no-op.
        self.nri = nri if nri is not None else Nri(enabled=False, index=index, store=store, cgroups=None)
        self.state_root = settings.state_root

    def _rro_missing(self, pod: SandboxRecord) -> str | None:
        """Why the pod's runtime handler cannot make recursive read-only
        mounts, or None when it can."""
        found = self.features.for_path(pod.oci_runtime) if self.features is not None else UNPROBED
        if found.recursive_read_only_mounts:
            return None
        return f"runtime handler {pod.runtime_handler!r} ({pod.oci_runtime}) cannot: {found.rro_missing}"

    def runtime_of(self, ctr: ContainerRecord) -> OciRuntime:
        return self.runtimes.for_record(ctr)

    def bundle_dir(self, container_id: str) -> Path:
        return self.state_root / "containers" / container_id

    def scratch_dir(self, container_id: str) -> Path:
        return self.settings.data_root / "rootfs" / container_id

    # ---- the RPCs ---------------------------------------------------------

    async def create(self, req: pb.CreateContainerRequest) -> str:
        md = req.config.metadata
        if not req.pod_sandbox_id:
            raise InvalidArgument("CreateContainer needs pod_sandbox_id")
        pod = self.index.sandbox(req.pod_sandbox_id)
        digest = request_digest(pod.id, req.config)

        async def work() -> str:
            async with self.locks.lock(pod.id):
                if pod.id not in self.index.sandboxes:
                    raise NotFound(f"pod sandbox {pod.id[:13]} was removed")
                ctr = await self._create(req, digest)
                self.index.containers[ctr.id] = ctr
                self.exits.watch(ctr)
                await self.nri.post_create_container(pod, ctr)
                self.events.container(EventKind.CREATED, ctr)
                return ctr.id
        return await self.reservations.reserved(container_key(pod.id, md.name, md.attempt), digest,
                                                f"container name {md.name} (attempt {md.attempt}) in pod {pod.id[:13]}",
                                                work)

    async def start(self, ref: str) -> None:
        ctr = self.index.container(ref)

        async def locked() -> None:
            async with self.locks.lock(ctr.id):
                with self.events.starting(ctr):
                    await self._start(ctr)
                    self.events.container(EventKind.STARTED, ctr)
        await uncancellable(locked())

    async def stop(self, ref: str, timeout: float) -> None:
        try:
            ctr = self.index.container(ref)
        except NotFound:
            return  # idempotent: a container that is gone is stopped
        await uncancellable(self.stop_record(ctr, timeout))

    async def remove(self, ref: str) -> None:
        try:
            ctr = self.index.container(ref)
        except NotFound:
            return  # idempotent
        await uncancellable(self.remove_record(ctr))

    async def exec_sync(self, ref: str, cmd: list[str], timeout: float) -> exec_sync.ExecResult:
        """Not under the container's lock: probes run alongside lifecycle calls."""
        ctr = self.index.container(ref)
        require_running(ctr, "ExecSync")
        spec = await asyncio.to_thread(read_spec, ctr)
        process = exec_process_spec(spec, list(cmd), False)
        return await exec_sync.exec_sync(self.runtime_of(ctr), ctr.id, process, Path(ctr.bundle), timeout)

    async def update_resources(self, ref: str, resources: pb.LinuxContainerResources) -> None:
        """Applied to the live cgroup, then recorded: ContainerStatus reports
        what the cgroup holds."""
        ctr = self.index.container(ref)
        async with self.locks.lock(ctr.id):
            if ctr.state not in (ContainerState.CREATED, ContainerState.RUNNING):
                raise FailedPrecondition(f"container {ctr.id[:13]} is {ctr.state}; "
                                         "only a created or running container can be updated")
            if self.cgroups is None or not ctr.cgroup_path:
                raise FailedPrecondition("this node has no cgroup manager; resources cannot be updated")
            pod = self.index.sandboxes.get(ctr.sandbox_id)
            resources = await self.nri.update_container(pod, ctr, resources)
            await asyncio.to_thread(self.cgroups.update, ctr.cgroup_path, resources)
            merged = dict(ctr.resources)
            merged.update(to_json(resources))
            ctr.resources = merged
            await self.store.save(ctr)
            await self.nri.post_update_container(pod, ctr)

    async def live_resources(self, ctr: ContainerRecord) -> Any:
        """What the container's cgroup holds now, or None."""
        if ctr.state != ContainerState.RUNNING or self.cgroups is None or not ctr.cgroup_path:
            return None
        try:
            if not await asyncio.to_thread(self.cgroups.exists, ctr.cgroup_path):
                return None
            return await asyncio.to_thread(self.cgroups.read_resources, ctr.cgroup_path)
        except OSError:
            return None

    async def live_user(self, ctr: ContainerRecord) -> procfs.ProcessIds | None:
        """Who the container's init process runs as now (the kernel's
        answer, groups and all), or None when it is not running."""
        if ctr.state != ContainerState.RUNNING or ctr.pid <= 0:
            return None
        return await asyncio.to_thread(procfs.ids, ctr.pid)

    async def reopen_log(self, ref: str) -> None:
        ctr = self.index.container(ref)
        require_running(ctr, "ReopenContainerLog")
        try:
            await self.runtime_of(ctr).reopen_log(ctr.bundle)
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

    # ---- by record (the pod service stops and removes its containers) ----

    async def stop_record(self, ctr: ContainerRecord, timeout: float, skip_futile: bool = False) -> None:
        async with self.locks.lock(ctr.id):
            await self._stop(ctr, timeout, skip_futile)
            await self.nri.stop_container(self.index.sandboxes.get(ctr.sandbox_id), ctr)

    async def remove_record(self, ctr: ContainerRecord) -> None:
        async with self.locks.lock(ctr.id):
            if ctr.id in self.index.containers:
                await self._remove(ctr)
                del self.index.containers[ctr.id]
                self.usage.forget_container(ctr.id)
                self.reservations.release(container_key_of(ctr), ctr.id)
                self.events.container(EventKind.DELETED, ctr)
        self.locks.forget(ctr.id)

    # ---- create -------------------------------------------------------------

    async def _create(self, req: pb.CreateContainerRequest, digest: str) -> ContainerRecord:
        config = req.config
        if not config.metadata.name:
            raise InvalidArgument("ContainerConfig.metadata.name is empty")
        if not config.image.image:
            raise InvalidArgument("ContainerConfig.image.image is empty; name the image to run")
        pod = self.index.sandbox(req.pod_sandbox_id)
        await self.health.refresh(pod)
        if not is_ready(pod):
            raise FailedPrecondition(f"pod sandbox {pod.id[:13]} is not ready; containers can only be created in a "
                                     f"ready pod (stop and remove it, then run a new sandbox)")
        volume_requests = image_volumes.requests(config)
        image = await self.images.get(config.image.image)
        layers = self.images.layer_dirs(image)
        volume_images = [await self._volume_image(v) for v in volume_requests]
        target_pid_ns = None
        nsopt = config.linux.security_context.namespace_options
        if nsopt.pid == pb.TARGET:
            target = self.index.container(nsopt.target_id)
            if target.state != ContainerState.RUNNING or not target.pid:
                raise FailedPrecondition(f"target container {nsopt.target_id!r} is not running")
            target_pid_ns = f"/proc/{target.pid}/ns/pid"

        if self.migration_warmup is not None:
            self.migration_warmup.kick()  # see runtime/cgroups/warmup.py
        container_id = secrets.token_hex(32)
        bundle = self.bundle_dir(container_id)
        scratch = self.scratch_dir(container_id)
        pod_config = config_of(pod)
        idmap = root_idmap(pod, pod_config, bundle)
        # A user-namespaced root must be reachable from inside its namespace
        # (runtime/rootfs.py).
        root = bundle / "rootfs" if idmap is None else rootfs.userns_roots(self.state_root) / container_id
        log_path = _log_path(pod_config, config, bundle)
        volumes = [image_volumes.record_entry(v, img.id, image_volumes.target_of(str(bundle), i))
                   for i, (v, img) in enumerate(zip(volume_requests, volume_images, strict=True))]
        ctr = ContainerRecord(
            id=container_id, sandbox_id=pod.id, name=config.metadata.name, attempt=config.metadata.attempt,
            config=to_json(config), created_at=time.time_ns(), image=config.image.image, image_id=image.id,
            image_ref=image.repo_digests[0] if image.repo_digests else image.id, bundle=str(bundle), rootfs=str(root),
            container_dir=str(scratch), log_path=log_path, oci_runtime=pod.oci_runtime,
            stop_signal=stop_signal_of(config, image.config or {}),
            resources=to_json(config.linux.resources) if config.linux.HasField("resources") else {},
            mounts=_mounts_json(config.mounts, volume_images), request_digest=digest,
            image_volumes=volumes)
        signal_number(ctr.stop_signal)  # refuse an unknown one now, not at stop time
        runtime = self.runtime_of(ctr)
        params = CreateParams(
            conmon=self._conmon_path(), container_id=container_id, name=config.metadata.name,
            bundle=str(bundle), log_path=log_path, exit_dir=str(self.state_root / "exits"),
            persist_dir=str(bundle), container_pidfile=str(bundle / "pidfile"),
            conmon_pidfile=str(bundle / "conmon.pid"), socket_dir=str(self.state_root / "sock"),
            stdin=config.stdin, stdin_once=config.stdin_once, tty=config.tty,
            systemd_cgroup=self.settings.cgroup_driver == "systemd")
        pending: PendingCreate | None = None
        saving: asyncio.Future[None] | None = None
        try:
            # conmon starts first (it waits on its start pipe) so that its exec,
            # and its move below, overlap with mounting the rootfs and writing
            # the spec. It needs its working directory (the bundle) and opens
            # the log at once: two mkdirs of directories on crispy's roots (the
            # pod's log directory mostly exists), not worth a thread hop ahead
            # of everything else.
            bundle.mkdir(parents=True, mode=0o700)
            Path(log_path).parent.mkdir(parents=True, exist_ok=True)
            pending = await runtime.begin_create(params)
            crashpoint("ctr.create.after_conmon_spawn")
            # conmon belongs in the pod's cgroup. Moving a process between
            # cgroups waits for an RCU grace period (the kernel's cgroup
            # threadgroup lock; ~10 ms here) unless another move happened just
            # before; the OCI runtime's move of the container's process into its
            # cgroup waits the same way (v1). So the move starts now, overlapping
            # that wait with the bundle's preparation; conmon is not held back
            # for it, and its monitor (forked when released, maybe before this
            # move lands) is moved once it exists, quickly then.
            early_join = asyncio.ensure_future(self.pod_cgroups.join(pod, pending.pid, "conmon", gone_ok=True))
            try:
                spec_req = ContainerSpecRequest(
                    id=container_id, config=config, sandbox=sandbox_view(pod, pod_config),
                    image_config=image.config or {},
                    rootfs=str(root), cgroup_version=self.settings.cgroup_layout.version,
                    cgroup_driver=self.settings.cgroup_driver, target_pid_ns=target_pid_ns,
                    pids_limit=self.settings.pids_limit,
                    seccomp_default=self.settings.seccomp_default,
                    rro_missing=self._rro_missing(pod))
                # Image volumes are mounted alongside the root and the user
                # lookup (another thread, another core); the undo waits for
                # them, so no mount lands after it has unmounted.
                mounting = (asyncio.ensure_future(asyncio.to_thread(self._mount_volumes, volumes, volume_images))
                            if volumes else None)
                try:
                    if idmap is None:
                        await asyncio.to_thread(self.rootfs_mounts.mount, layers, str(root), scratch)
                    else:
                        await asyncio.to_thread(rootfs.userns_root_of, self.state_root, container_id)
                        await asyncio.to_thread(self.rootfs_mounts.mount, layers, str(root), scratch, idmap)
                    # The image's /etc/passwd and /etc/group are read in a thread of
                    # their own, with a deadline: whatever the image holds, this
                    # request cannot take a thread of the shared pool for good, nor
                    # keep the pod's lock.
                    spec_req.user = await isolated.call(
                        resolve_user, spec_req, what="reading the image's /etc/passwd and /etc/group",
                        timeout=self.settings.user_lookup_timeout)
                    if mounting is not None:
                        spec_req.image_volumes = await mounting
                        crashpoint("ctr.create.after_image_volumes")
                finally:
                    if mounting is not None:
                        await asyncio.wait([mounting])
                        if not mounting.cancelled():
                            mounting.exception()  # retrieved: the first failure is what is raised
                userns_path = idmap.userns_path if idmap else ""
                if self.nri.active:
                    # Plugins adjust the spec before it is written.
                    spec = await asyncio.to_thread(build_spec_for, spec_req, bundle / "config.json", userns_path)
                    await self.nri.create_container(pod, ctr, spec)
                    await asyncio.to_thread(save_spec, spec, bundle / "config.json")
                else:
                    spec = await asyncio.to_thread(_write_spec, spec_req, bundle / "config.json", userns_path)
                ctr.cgroup_path = spec["linux"].get("cgroupsPath", "")
                user = spec["process"].get("user", {})
                ctr.user = {"uid": user.get("uid", 0), "gid": user.get("gid", 0),
                            "supplemental_groups": user.get("additionalGids", [])}

                async def monitor_up(pid: int, start_time: int) -> None:
                    # The record is written while the runtime creates the
                    # container, off the way to the reply: conmon's monitor is
                    # all a restarted crispy needs to find the container again
                    # (the container's pid it reads from the runtime's pid file).
                    # The monitor is gone only if the create failed, which
                    # release reports.
                    nonlocal saving
                    ctr.conmon_pid, ctr.conmon_start_time = pid, start_time
                    crashpoint("ctr.create.before_record_save")
                    # Not cancelled half-way: an undo deletes the record after it.
                    saving = asyncio.ensure_future(self.store.save(ctr))
                    await asyncio.gather(self.pod_cgroups.join(pod, pid, "conmon", gone_ok=True),
                                         asyncio.shield(saving))
                    crashpoint("ctr.create.after_record_save")
                created = await pending.release(on_monitor=monitor_up)
            finally:
                await asyncio.wait([early_join])  # never raises
            if saving is None:  # cannot be: release saw the monitor; the reply needs the record
                raise Internal(f"container {container_id[:13]} was created but not recorded")
            await saving
            ctr.pid = created.pid
            crashpoint("ctr.create.after_runtime_create")
        except BaseException:
            async def undo() -> None:
                await self.nri.undo_create_container(pod, ctr)
                if pending is not None:
                    await pending.abort()
                await self.discard(ctr)
                if saving is not None:
                    await asyncio.wait([saving])
                    await self.store.delete(ctr)
            await asyncio.shield(undo())
            raise
        return ctr

    def _mount_volumes(self, volumes: list[dict[str, Any]], volume_images: list[Any]) -> dict[str, str]:
        """Blocking: container path -> the host directory to bind there."""
        return {vol["container_path"]: self.volume_mounts.mount(self.images.layer_dirs(img), vol["target"],
                                                                vol["sub_path"])
                for vol, img in zip(volumes, volume_images, strict=True)}

    async def _volume_image(self, vol: image_volumes.VolumeRequest) -> Any:
        try:
            return await self.images.get(vol.image)
        except NotFound:
            # kubelet pulls an image volume's image before it creates the
            # container, as it does the container's own image.
            raise NotFound(f"image {vol.image!r} for the image volume at {vol.container_path} is not present; "
                           "pull it first") from None

    def _conmon_path(self) -> str:
        if not self.settings.conmon_path:
            raise FailedPrecondition(f"{self.settings.conmon} is not installed; install conmon")
        return self.settings.conmon_path

    async def discard(self, ctr: ContainerRecord) -> None:
        """Undoes a partial create; every step tolerates what was never done."""
        try:
            await self.runtime_of(ctr).delete(ctr.id)
        except Exception as e:  # noqa: BLE001 - keep cleaning
            log.error("runtime delete after a failed create", extra={"fields": {"id": ctr.id, "error": str(e)}})
        await self._remove_files(ctr)

    async def _remove_files(self, ctr: ContainerRecord) -> None:
        state_root = self.state_root
        unmount = self.rootfs_mounts.unmount
        unmount_volume = self.volume_mounts.unmount

        def _rm() -> None:
            unmount(ctr.rootfs)
            for vol in ctr.image_volumes:
                unmount_volume(vol["target"])
            if ctr.rootfs and Path(ctr.rootfs).parent == rootfs.userns_roots(state_root):
                rootfs.remove_userns_root(ctr.rootfs)
            views = os.path.join(ctr.bundle, IDMAPPED_VOLUMES)
            for point in kmount.mounts_under(views):
                kmount.umount_all(point)
            if os.path.exists(ctr.bundle):
                if kmount.mounts_under(ctr.bundle):
                    raise OSError(f"{ctr.bundle} still has mounts")
                shutil.rmtree(ctr.bundle, ignore_errors=True)
            shutil.rmtree(ctr.container_dir, ignore_errors=True)
            (state_root / "exits" / ctr.id).unlink(missing_ok=True)
            try:
                os.unlink(state_root / "sock" / ctr.id)
            except (FileNotFoundError, IsADirectoryError):
                pass
        await asyncio.to_thread(_rm)

    # ---- start ----------------------------------------------------------------

    async def _start(self, ctr: ContainerRecord) -> None:
        if ctr.state != ContainerState.CREATED:
            raise FailedPrecondition(f"container {ctr.id[:13]} is {ctr.state}, not created; "
                                     "only a created container can be started")
        pod = self.index.sandboxes.get(ctr.sandbox_id)
        if pod is not None:
            await self.health.refresh(pod)
        if pod is None or not is_ready(pod):
            raise FailedPrecondition(f"pod sandbox of container {ctr.id[:13]} is not ready (stop and remove it, "
                                     f"then run a new sandbox)")
        await self.nri.start_container(pod, ctr)
        # Taken before the process is let go: it may have exited (and its exit
        # been recorded) by the time `start` returns.
        started = time.time_ns()
        crashpoint("ctr.start.before_runtime_start")
        try:
            await self.runtime_of(ctr).start(ctr.id)
        except Internal as e:
            # The process could not be started (bad command, missing binary):
            # it exits, and the container is reported exited with the reason.
            await self.exits.wait(ctr, 5.0)
            ctr.reason, ctr.message = "StartError", e.message
            if ctr.state != ContainerState.EXITED:
                await self.store.move_container(ctr, ContainerState.EXITED, at=time.time_ns(), exit_code=128)
            else:
                await self.store.save(ctr)
            raise
        crashpoint("ctr.start.after_runtime_start")
        if ctr.state == ContainerState.CREATED:
            await self.store.move_container(ctr, ContainerState.RUNNING, at=started)
        else:
            # Its exit was recorded first: only the start time is news.
            ctr.started_at = started
            if ctr.finished_at < started:
                ctr.finished_at = started
            await self.store.save(ctr)
        crashpoint("ctr.start.after_record_save")
        await self.nri.post_start_container(pod, ctr)

    # ---- stop / remove ----------------------------------------------------------

    async def _stop(self, ctr: ContainerRecord, timeout: float, skip_futile: bool = False) -> None:
        """The stop signal, then SIGKILL to every process of the container after
        `timeout` seconds. Idempotent. With `skip_futile` (a pod being torn
        down), a signal the container's init would never see is not waited on."""
        if ctr.state not in (ContainerState.CREATED, ContainerState.RUNNING):
            return
        # The exit is recorded by the watcher: from conmon's exit file, or, with
        # conmon gone, after it has killed the container and waited on the
        # container's own init. Started here if it somehow is not running.
        self.exits.watch(ctr)
        runtime = self.runtime_of(ctr)
        signum = signal_number(ctr.stop_signal)
        if skip_futile and ctr.pid and signal_is_futile(ctr.pid, signum):
            timeout = 0
        if timeout > 0 and ctr.state == ContainerState.RUNNING:
            if await runtime.kill(ctr.id, signum) and await self.exits.wait(ctr, timeout):
                return
        await runtime.kill(ctr.id, int(signal.SIGKILL), all_processes=True)
        if not await self.exits.wait(ctr, KILL_WAIT):
            raise Internal(f"container {ctr.id[:13]} did not exit {KILL_WAIT:.0f}s after SIGKILL")

    async def _remove(self, ctr: ContainerRecord) -> None:
        if ctr.state in (ContainerState.CREATED, ContainerState.RUNNING):
            await self._stop(ctr, 0)
        self.exits.stop_watching(ctr.id)
        await self.runtime_of(ctr).delete(ctr.id)
        await self._remove_files(ctr)
        await self.store.delete(ctr)
        self.exits.forget(ctr.id)
        await self.nri.remove_container(self.index.sandboxes.get(ctr.sandbox_id), ctr)


def _mounts_json(mounts: Any, volume_images: list[Any]) -> list[dict[str, Any]]:
    """The mounts as recorded (and reported by ContainerStatus): an image
    volume's ImageSpec carries the id of the image mounted, what PullImage
    returned for it. `volume_images` are in the order of the image mounts."""
    images = iter(volume_images)
    out = []
    for m in mounts:
        entry = to_json(m)
        if image_volumes.is_image_mount(m):
            entry["image"]["image_ref"] = next(images).id
        out.append(entry)
    return out
