"""Start-up: the records loaded into the index, each pod and container
checked against what survived on the node while crispy was down, then the
sweep of what crashes left half-made (runtime/sandbox_orphans.py)."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from runtime import pod_intent, private_dirs
from runtime.container_service import ContainerService
from runtime.errors import Internal
from runtime.exits import ExitWatcher, exit_file, read_container_pid, read_exit
from runtime.handlers import RuntimeHandlers
from runtime.index import RecordIndex
from runtime.oci.factory import RuntimeFactory
from runtime.pod_health import PodHealth
from runtime.recovery_decisions import Recovery, decide, needs_runtime_status
from runtime.reservations import Reservations, container_key_of, pod_key_of
from runtime.sandbox_orphans import OrphanSweep
from runtime.settings import LifecycleSettings
from runtime.states import ContainerState, PodState
from runtime.store import ContainerRecord, RecordStore

log = logging.getLogger("crispy.pods")


class StartupRecovery:
    def __init__(self, settings: LifecycleSettings, *, store: RecordStore, index: RecordIndex,
                 reservations: Reservations, health: PodHealth, exits: ExitWatcher, runtimes: RuntimeFactory,
                 containers: ContainerService, sweep: OrphanSweep, handlers: RuntimeHandlers) -> None:
        self._settings = settings
        self._store = store
        self._index = index
        self._reservations = reservations
        self._health = health
        self._exits = exits
        self._runtimes = runtimes
        self._containers = containers
        self._sweep = sweep
        self._handlers = handlers

    async def run(self) -> None:
        await asyncio.to_thread(self._prepare_dirs)
        # Each installed runtime is asked what it is and copied now, rather
        # than at the first RunPodSandbox or CreateContainer.
        await asyncio.to_thread(lambda: [self._runtimes.for_path(p) for p in self._handlers.installed_paths()])
        pods, ctrs = await asyncio.to_thread(self._store.load)
        for rec in pods:
            self._index.sandboxes[rec.id] = rec
            self._reservations.reserve_done(pod_key_of(rec), rec.request_digest, rec.id)
        for ctr in ctrs:
            if ctr.sandbox_id not in self._index.sandboxes:
                log.warning("container record without its pod", extra={"fields": {"id": ctr.id, "pod": ctr.sandbox_id}})
            self._index.containers[ctr.id] = ctr
            self._reservations.reserve_done(container_key_of(ctr), ctr.request_digest, ctr.id)
        await self._recover_pods()
        for ctr in list(self._index.containers.values()):
            await self._recover_container(ctr)
        await self._sweep.sweep(keep=self._store.refused)
        self._health.open()
        for rec in self._index.sandboxes.values():
            self._health.track(rec)
        log.info("pods loaded", extra={"fields": {"pods": len(self._index.sandboxes),
                                                  "containers": len(self._index.containers)}})

    def _prepare_dirs(self) -> None:
        state_root, data_root = self._settings.state_root, self._settings.data_root
        self._store.prepare()
        # Pod dirs hold each pod's /dev/shm (1777), bundles each container's
        # mounted root, rootfs/ each writable layer: see runtime/private_dirs.py.
        for d in (state_root / "pods", state_root / "containers", state_root / "exits",
                  state_root / "sock", state_root / "oci", state_root / "exec", data_root / "rootfs"):
            private_dirs.ensure_private(d)
        for d in (state_root / "pods", state_root / "containers", data_root / "rootfs"):
            private_dirs.tighten_children(d)

    async def _recover_pods(self) -> None:
        ready = [r for r in self._index.sandboxes.values() if r.state == PodState.READY and r.pod_dir]
        stopping = await asyncio.to_thread(lambda: [r for r in ready if pod_intent.stopping(Path(r.pod_dir))])
        for rec in stopping:
            await self._health.mark_not_ready(rec, "crispy stopped while StopPodSandbox was tearing it down")
        for rec in list(self._index.sandboxes.values()):
            # The pod's init died while we were away (or the node rebooted):
            # its PID namespace cannot take new members; or a pin is gone.
            await self._health.refresh(rec)

    async def _recover_container(self, ctr: ContainerRecord) -> None:
        state = ContainerState(ctr.state)
        if state == ContainerState.EXITED:
            return
        if not ctr.pid:
            # Recorded during the create, before the runtime wrote its pid file.
            ctr.pid = await asyncio.to_thread(read_container_pid, ctr)
        alive = self._exits.monitor_alive(ctr)
        exit_recorded = False
        if not alive:
            exit_recorded = (await asyncio.to_thread(read_exit, exit_file(ctr)))[0] is not None
        status = None
        if needs_runtime_status(state, alive, exit_recorded):
            status = await self._runtime_status(ctr)
        decision = decide(state, alive, exit_recorded, status)
        if decision is Recovery.RECORD_RUNNING:
            # crispy stopped after the runtime started the container but before
            # the record said so. Left as created, the container would be
            # reported not running and a retried StartContainer would fail on a
            # running process. The moment it started is lost; the time it is
            # found running stands in.
            await self._store.move_container(ctr, ContainerState.RUNNING, at=time.time_ns())
            log.warning("container was started just before crispy stopped; recorded as running now",
                        extra={"fields": {"id": ctr.id}})
            self._exits.watch(ctr)
        elif decision is Recovery.WATCH:
            self._exits.watch(ctr)
        elif decision is Recovery.DISCARD:
            # kubelet never got its id or retries the create; the retry must
            # make a fresh, supervised container.
            log.warning("discarding a created container whose monitor is gone", extra={"fields": {"id": ctr.id}})
            await self._containers.discard(ctr)
            await self._store.delete(ctr)
            self._exits.forget(ctr.id)
            del self._index.containers[ctr.id]
            self._reservations.release(container_key_of(ctr), ctr.id)
        elif decision is Recovery.RECORD_EXIT:
            await self._exits.record_exit(ctr)

    async def _runtime_status(self, ctr: ContainerRecord) -> str | None:
        try:
            state = await self._runtimes.for_record(ctr).state(ctr.id)
        except Internal:
            return None
        return state.get("status") if state is not None else None
