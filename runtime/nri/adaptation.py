"""The runtime's side of NRI: every pod and container lifecycle step shown
to the connected plugins, in their order, and what they answer applied.

The pod and container services call one method per step (`Nri`); with NRI
disabled or no plugin connected each is a no-op that costs an attribute
read. The plugin server (runtime/nri/plugin_server.py) calls back here as
its PluginHost: to synchronize a plugin that has just registered, for a
plugin's unsolicited UpdateContainers, and when a plugin is gone.

Failure semantics, as containerd/nri's: a plugin that answers an error
fails the step that waits on plugins (RunPodSandbox, CreateContainer,
UpdateContainer, UpdatePodSandbox, StartContainer) and the service undoes
it; a plugin that is gone or timed out is dropped by the server and the
step goes on without it. Notifications (stops, removals, post-steps) never
fail their step: errors are logged.

A plugin learns of every object exactly once: Synchronize shows what
exists, holding back the events until it has answered (events wait on a
shared lock that Synchronize takes alone), and it includes objects whose
creation event was already delivered but which are not yet in the index.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from typing import Any, AsyncIterator, Awaitable, Callable, Protocol

from google.protobuf import json_format

from cri.proto import api_pb2 as pb
from runtime.cgroups import CgroupManager
from runtime.container_config import read_spec
from runtime.errors import FailedPrecondition, InvalidArgument
from runtime.index import RecordIndex
from runtime.nri.adjust import apply_adjustment
from runtime.nri.convert import container_message, pod_message, resources_from_cri, resources_to_cri
from runtime.nri.merge import Conflict, CreateResult, UpdateSet
from runtime.nri.plugin import PluginError, PluginGone, PluginSession
from runtime.nri.proto import api_pb2 as api
from runtime.states import ContainerState
from runtime.store import ContainerRecord, RecordStore, SandboxRecord

log = logging.getLogger("crispy.nri")

E = api.Event


class PluginRefused(FailedPrecondition):
    """A plugin answered an event with an error: the step fails with it."""


class _SharedLock:
    """Many events at once, or one Synchronize alone."""

    def __init__(self) -> None:
        self._cond = asyncio.Condition()
        self._readers = 0
        self._writing = False

    @contextlib.asynccontextmanager
    async def shared(self) -> AsyncIterator[None]:
        async with self._cond:
            await self._cond.wait_for(lambda: not self._writing)
            self._readers += 1
        try:
            yield
        finally:
            async with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextlib.asynccontextmanager
    async def alone(self) -> AsyncIterator[None]:
        async with self._cond:
            await self._cond.wait_for(lambda: not self._writing and self._readers == 0)
            self._writing = True
        try:
            yield
        finally:
            async with self._cond:
                self._writing = False
                self._cond.notify_all()


class ContainerStopper(Protocol):
    """What carries out a plugin's eviction: the container service."""

    async def stop_record(self, ctr: ContainerRecord, timeout: float, skip_futile: bool = False) -> None: ...


@dataclasses.dataclass
class NriStatus:
    enabled: bool
    socket: str
    plugins: list[dict[str, str]]


class Nri:
    """The collaborator the lifecycle services call. Also the plugin
    server's PluginHost."""

    def __init__(self, *, enabled: bool, index: RecordIndex, store: RecordStore, cgroups: CgroupManager | None,
                 socket_path: str = "", min_oom_score_adj: Callable[[], int] = lambda: 0,
                 cdi_spec_dirs: tuple[str, ...] | list[str] | None = None) -> None:
        self.enabled = enabled
        self.socket_path = socket_path
        self._index = index
        self._store = store
        self._cgroups = cgroups
        self._min_oom = min_oom_score_adj
        self._cdi_dirs = cdi_spec_dirs
        self._plugins: list[PluginSession] = []  # synchronized, in order
        self._lock = _SharedLock()
        # Objects whose creation was shown to plugins but not yet indexed.
        self._pending_pods: dict[str, SandboxRecord] = {}
        self._pending_ctrs: dict[str, ContainerRecord] = {}
        # The NRI view of each container's spec (args, env, mounts...),
        # kept from its creation; read from the bundle when not known.
        self._specs: dict[str, dict[str, Any]] = {}
        # One StopContainer per container, whoever noticed the stop first.
        self._stops: dict[str, asyncio.Future[None]] = {}
        self._stopper: ContainerStopper | None = None
        self._evictions: set[asyncio.Future[Any]] = set()

    def evict_with(self, stopper: ContainerStopper) -> None:
        """The container service, which is built with this object and so
        cannot be given to its constructor; the daemon wires it right after."""
        self._stopper = stopper

    @property
    def active(self) -> bool:
        return bool(self._plugins) and bool(self._live())

    def _live(self) -> list[PluginSession]:
        live = [p for p in self._plugins if not p.closed]
        if len(live) != len(self._plugins):
            self._plugins = live
        return live

    def status(self) -> dict[str, Any]:
        return dataclasses.asdict(NriStatus(
            enabled=self.enabled, socket=self.socket_path if self.enabled else "",
            plugins=[{"name": p.name, "index": p.index} for p in self._live()]))

    # ---- PluginHost -------------------------------------------------------

    async def synchronize(self, session: PluginSession) -> None:
        """Shows a newly registered plugin every pod and container, then lets
        it see events. Raises what the plugin's Synchronize raised (the
        server then drops it)."""
        async with self._lock.alone():
            pods = {**self._index.sandboxes, **self._pending_pods}
            ctrs = {**self._index.containers, **self._pending_ctrs}
            pod_msgs = [pod_message(p) for p in pods.values()]
            ctr_msgs = [await self._container(c) for c in ctrs.values() if c.sandbox_id in pods]
            updates = await session.synchronize(pod_msgs, ctr_msgs)
            if updates:
                set_ = UpdateSet()
                set_.add(session.full_name, list(updates))
                await self._apply_updates(set_.updates())
            self._plugins.append(session)
            self._plugins.sort(key=lambda p: p.order_key)
        log.info("NRI plugin synchronized", extra={"fields": {
            "plugin": session.name, "index": session.index, "pods": len(pod_msgs), "containers": len(ctr_msgs)}})

    async def update_containers(self, session: PluginSession,
                                request: api.UpdateContainersRequest) -> api.UpdateContainersResponse:
        """A plugin's unsolicited updates: applied to the live cgroups; the
        ones that failed are answered back. Its evictions are carried out
        after the answer: stopping a container tells every plugin, this one
        too, which may not serve events while it waits for this call."""
        set_ = UpdateSet()
        try:
            set_.add(session.full_name, list(request.update))
        except Conflict as e:
            log.warning("NRI plugin update refused", extra={"fields": {"plugin": session.name, "error": e.message}})
            return api.UpdateContainersResponse(failed=list(request.update))
        # No lock: a plugin may ask from inside its own Synchronize or event.
        failed = await self._apply_updates(set_.updates())
        if request.evict:
            task = asyncio.ensure_future(self._evict(session.full_name, list(request.evict)))
            self._evictions.add(task)
            task.add_done_callback(self._evictions.discard)
        return api.UpdateContainersResponse(failed=failed)

    def plugin_gone(self, session: PluginSession, reason: str) -> None:
        if session in self._plugins:
            self._plugins.remove(session)
        log.warning("NRI plugin dropped", extra={"fields": {"plugin": session.name, "index": session.index,
                                                            "reason": reason}})

    # ---- pods ---------------------------------------------------------------

    async def run_pod(self, pod: SandboxRecord) -> None:
        """Before the pod is handed out; an error fails RunPodSandbox."""
        if not self._plugins:
            return
        async with self._lock.shared():
            self._pending_pods[pod.id] = pod
            try:
                msg = pod_message(pod)
                for p in self._subscribed(E.RUN_POD_SANDBOX):
                    await self._ask(p, "RunPodSandbox", p.run_pod_sandbox(msg), fatal=True)
            except BaseException:
                del self._pending_pods[pod.id]
                raise

    def pod_indexed(self, pod: SandboxRecord) -> None:
        self._pending_pods.pop(pod.id, None)

    async def undo_run_pod(self, pod: SandboxRecord) -> None:
        """The pod's run failed after its plugins saw it: they see it removed."""
        if self._pending_pods.pop(pod.id, None) is not None:
            await self.remove_pod(pod)

    async def update_pod(self, pod: SandboxRecord, overhead: pb.LinuxContainerResources | None,
                         resources: pb.LinuxContainerResources | None) -> None:
        if not self._plugins:
            return
        msg = pod_message(pod)
        nri_overhead = None if overhead is None else resources_from_cri(json_format.MessageToDict(
            overhead, preserving_proto_field_name=True))
        nri_resources = None if resources is None else resources_from_cri(json_format.MessageToDict(
            resources, preserving_proto_field_name=True))
        async with self._lock.shared():
            for p in self._subscribed(E.UPDATE_POD_SANDBOX):
                await self._ask(p, "UpdatePodSandbox", p.update_pod_sandbox(msg, nri_overhead, nri_resources),
                                fatal=True)

    async def post_update_pod(self, pod: SandboxRecord) -> None:
        await self._event(E.POST_UPDATE_POD_SANDBOX, pod, None)

    async def stop_pod(self, pod: SandboxRecord) -> None:
        await self._event(E.STOP_POD_SANDBOX, pod, None)

    async def remove_pod(self, pod: SandboxRecord) -> None:
        await self._event(E.REMOVE_POD_SANDBOX, pod, None)

    # ---- containers -------------------------------------------------------------

    async def create_container(self, pod: SandboxRecord, ctr: ContainerRecord, spec: dict[str, Any]) -> None:
        """Before the spec is written: the plugins' merged adjustment is
        applied to `spec` in place, their updates to other containers to the
        live cgroups. An error (a plugin's, a conflict, a validator's
        refusal, an adjustment crispy cannot make) fails CreateContainer;
        the service's undo then calls undo_create_container, so plugins that
        accepted the container see it stop and go."""
        if not self._plugins:
            return
        async with self._lock.shared():
            self._pending_ctrs[ctr.id] = ctr
            await self._create(pod, ctr, spec)

    async def _create(self, pod: SandboxRecord, ctr: ContainerRecord, spec: dict[str, Any]) -> None:
        pod_msg = pod_message(pod)
        original = ctr_msg = container_message(ctr, spec)
        result = CreateResult(ctr.id)
        evictions: list[tuple[str, api.ContainerEviction]] = []
        plugins = self._subscribed(E.CREATE_CONTAINER)
        for p in plugins:
            reply = await self._ask(p, "CreateContainer", p.create_container(pod_msg, ctr_msg), fatal=True)
            if reply is None:
                continue
            if any(u.container_id == ctr.id for u in reply.update):
                raise PluginRefused(f"NRI plugin {p.full_name} asked to update container {ctr.name!r} while it is "
                                    "being created; it may only adjust it")
            _refuse_self_eviction(p, reply.evict, ctr, "created")
            result.add(p.full_name, reply)  # refuses a field another plugin owns
            evictions += [(p.full_name, e) for e in reply.evict]
            if reply.adjust.ByteSize():
                # Applied now: the next plugin is shown the container as adjusted so far.
                apply_adjustment(spec, reply.adjust, min_oom_score_adj=self._min_oom(),
                                 **({"cdi_spec_dirs": self._cdi_dirs} if self._cdi_dirs is not None else {}))
                ctr_msg = container_message(ctr, spec)
        validators = self._subscribed(E.VALIDATE_CONTAINER_ADJUSTMENT)
        if validators:
            vreq = api.ValidateContainerAdjustmentRequest(
                pod=pod_msg, container=original, adjust=result.adjust, update=result.updates.updates(),
                owners=result.owners.message(),
                plugins=[api.PluginInstance(name=p.name, index=p.index) for p in plugins])
            answers = await asyncio.gather(*(self._ask(v, "ValidateContainerAdjustment",
                                                       v.validate_container_adjustment(vreq), fatal=True)
                                             for v in validators), return_exceptions=True)
            for v, answer in zip(validators, answers, strict=True):
                if isinstance(answer, BaseException):
                    raise answer
                if answer is not None and answer.reject:
                    raise PluginRefused(f"NRI plugin {v.full_name} rejected the adjustments of container "
                                        f"{ctr.name!r}: {answer.reason or 'no reason given'}")
        self._specs[ctr.id] = _spec_view(spec)
        others = result.updates.updates()
        if others:
            failed = await self._apply_updates(others)
            if any(not u.ignore_failure for u in failed):
                raise FailedPrecondition(f"NRI plugins' updates of other containers failed: "
                                         f"{', '.join(u.container_id[:13] for u in failed)}")
        # As containerd: the new container is made even when an eviction
        # the plugin asked for with it failed (that is logged).
        for plugin, e in evictions:
            await self._evict(plugin, [e])

    async def post_create_container(self, pod: SandboxRecord, ctr: ContainerRecord) -> None:
        self._pending_ctrs.pop(ctr.id, None)
        await self._event(E.POST_CREATE_CONTAINER, pod, ctr)

    async def undo_create_container(self, pod: SandboxRecord, ctr: ContainerRecord) -> None:
        """The create failed after plugins saw it: they see it stop and go."""
        if self._pending_ctrs.pop(ctr.id, None) is None:
            return
        await self.stop_container(pod, ctr)
        await self.remove_container(pod, ctr)

    async def start_container(self, pod: SandboxRecord | None, ctr: ContainerRecord) -> None:
        """Before the process is let go; an error fails StartContainer."""
        if not self._plugins or pod is None:
            return
        async with self._lock.shared():
            pod_msg, ctr_msg = pod_message(pod), await self._container(ctr)
            for p in self._subscribed(E.START_CONTAINER):
                await self._ask(p, "StartContainer", p.start_container(pod_msg, ctr_msg), fatal=True)

    async def post_start_container(self, pod: SandboxRecord | None, ctr: ContainerRecord) -> None:
        await self._event(E.POST_START_CONTAINER, pod, ctr)

    async def update_container(self, pod: SandboxRecord | None, ctr: ContainerRecord,
                               resources: pb.LinuxContainerResources) -> pb.LinuxContainerResources:
        """kubelet's UpdateContainerResources through the plugins: what they
        change of this container's resources is returned, their updates of
        other containers applied."""
        if not self._plugins or pod is None:
            return resources
        requested = resources_from_cri(json_format.MessageToDict(resources, preserving_proto_field_name=True))
        pod_msg, ctr_msg = pod_message(pod), await self._container(ctr)
        set_ = UpdateSet()
        evictions: list[tuple[str, api.ContainerEviction]] = []
        async with self._lock.shared():
            for p in self._subscribed(E.UPDATE_CONTAINER):
                reply = await self._ask(p, "UpdateContainer", p.update_container(pod_msg, ctr_msg, requested),
                                        fatal=True)
                if reply is not None:
                    _refuse_self_eviction(p, reply.evict, ctr, "updated")
                    set_.add(p.full_name, list(reply.update))
                    evictions += [(p.full_name, e) for e in reply.evict]
            own = set_.by_id.pop(ctr.id, None)
            failed = await self._apply_updates(set_.updates())
            # As containerd: an eviction that fails fails the update.
            not_evicted = []
            for plugin, e in evictions:
                not_evicted += await self._evict(plugin, [e])
        if any(not u.ignore_failure for u in failed):
            raise FailedPrecondition("NRI plugins' updates of other containers failed: "
                                     f"{', '.join(u.container_id[:13] for u in failed)}")
        if not_evicted:
            raise FailedPrecondition("NRI plugins' evictions of other containers failed: "
                                     f"{', '.join(e.container_id[:13] for e in not_evicted)}")
        if own is None:
            return resources
        merged = pb.LinuxContainerResources()
        merged.CopyFrom(resources)
        json_format.ParseDict(resources_to_cri(own.linux.resources), merged)
        return merged

    async def post_update_container(self, pod: SandboxRecord | None, ctr: ContainerRecord) -> None:
        await self._event(E.POST_UPDATE_CONTAINER, pod, ctr)

    async def stop_container(self, pod: SandboxRecord | None, ctr: ContainerRecord) -> None:
        """Once per container, whether StopContainer, its pod's stop or its
        own exit noticed it first; later callers wait for that one."""
        if not self._plugins or pod is None:
            return
        running = self._stops.get(ctr.id)
        if running is None:
            running = self._stops[ctr.id] = asyncio.ensure_future(self._stop(pod, ctr))
        try:
            await asyncio.shield(running)
        except Exception as e:  # noqa: BLE001 - a notification never fails the stop
            log.error("telling NRI plugins of a container stop failed",
                      extra={"fields": {"container": ctr.id, "error": str(e)}})

    async def _stop(self, pod: SandboxRecord, ctr: ContainerRecord) -> None:
        pod_msg, ctr_msg = pod_message(pod), await self._container(ctr)
        set_ = UpdateSet()
        async with self._lock.shared():
            for p in self._subscribed(E.STOP_CONTAINER):
                reply = await self._ask(p, "StopContainer", p.stop_container(pod_msg, ctr_msg), fatal=False)
                if reply is not None:
                    try:
                        set_.add(p.full_name, [u for u in reply.update if u.container_id != ctr.id])
                    except Conflict as e:
                        log.warning("NRI plugin update refused", extra={"fields": {"plugin": p.full_name,
                                                                                  "error": e.message}})
            await self._apply_updates(set_.updates())

    def container_exited(self, ctr: ContainerRecord) -> None:
        """From the exit watcher: a container that ended on its own is
        stopped as far as plugins are concerned."""
        if not self._plugins or ctr.id not in self._index.containers:
            return
        pod = self._index.sandboxes.get(ctr.sandbox_id)
        task = asyncio.ensure_future(self.stop_container(pod, ctr))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def remove_container(self, pod: SandboxRecord | None, ctr: ContainerRecord) -> None:
        if pod is not None and self._plugins:
            await self.stop_container(pod, ctr)
            await self._event(E.REMOVE_CONTAINER, pod, ctr)
        self._stops.pop(ctr.id, None)
        self._specs.pop(ctr.id, None)

    # ---- fan-out ------------------------------------------------------------------

    def _subscribed(self, event: api.Event) -> list[PluginSession]:
        return [p for p in self._plugins if not p.closed and p.subscribes(event)]

    async def _event(self, event: api.Event, pod: SandboxRecord | None, ctr: ContainerRecord | None) -> None:
        """A notification: errors are logged, never raised."""
        if not self._plugins or pod is None:
            return
        plugins = self._subscribed(event)
        if not plugins:
            return
        async with self._lock.shared():
            pod_msg = pod_message(pod)
            ctr_msg = await self._container(ctr) if ctr is not None else None
            for p in plugins:
                await self._ask(p, E.Name(event), _notification(p, event, pod_msg, ctr_msg), fatal=False)

    async def _ask(self, p: PluginSession, what: str, call: Awaitable[Any], fatal: bool) -> Any:
        """One plugin's answer, or None when it is gone (the server drops
        it). Its error is raised when `fatal`, else logged."""
        started = time.monotonic()
        try:
            return await call
        except PluginGone as e:
            log.warning("NRI plugin gone during an event", extra={"fields": {
                "plugin": p.full_name, "event": what, "error": str(e)}})
            return None
        except PluginError as e:
            if not fatal:
                log.warning("NRI plugin failed an event", extra={"fields": {"plugin": p.full_name, "event": what,
                                                                           "error": str(e)}})
                return None
            raise PluginRefused(f"{what} refused: {e}") from None
        finally:
            elapsed = time.monotonic() - started
            if elapsed > 1.0:
                log.info("slow NRI plugin", extra={"fields": {"plugin": p.full_name, "event": what,
                                                              "seconds": round(elapsed, 3)}})

    async def _container(self, ctr: ContainerRecord) -> api.Container:
        spec = self._specs.get(ctr.id)
        if spec is None and ctr.bundle:
            try:
                spec = _spec_view(await asyncio.to_thread(read_spec, ctr))
            except (OSError, ValueError):
                spec = None
            if spec is not None and ctr.id in self._index.containers:
                self._specs[ctr.id] = spec
        return container_message(ctr, spec)

    # ---- evictions -----------------------------------------------------------------

    async def _evict(self, plugin: str, evictions: list[api.ContainerEviction]) -> list[api.ContainerEviction]:
        """Each container stopped at once (timeout 0), as containerd and
        CRI-O evict; kubelet then sees it exited and applies the pod's
        restart policy. Those that could not be stopped are returned; one
        that is already gone is not an error."""
        failed = []
        for e in evictions:
            ctr = self._index.containers.get(e.container_id)
            if ctr is None:
                log.info("NRI plugin asked to evict a container that is not there", extra={"fields": {
                    "plugin": plugin, "container": e.container_id}})
                continue
            log.warning("NRI plugin evicts a container", extra={"fields": {
                "plugin": plugin, "container": ctr.id, "reason": e.reason}})
            try:
                if self._stopper is None:
                    raise FailedPrecondition("nothing to stop containers with")
                await self._stopper.stop_record(ctr, 0)
            except Exception as exc:  # noqa: BLE001 - reported back, per eviction
                log.warning("NRI eviction failed", extra={"fields": {
                    "plugin": plugin, "container": ctr.id, "error": str(exc)}})
                failed.append(e)
        return failed

    # ---- updates to live containers -----------------------------------------

    async def _apply_updates(self, updates: list[api.ContainerUpdate]) -> list[api.ContainerUpdate]:
        """Each update written to its container's cgroup and record; those
        that could not be are returned."""
        failed = []
        for u in updates:
            ctr = self._index.containers.get(u.container_id)
            try:
                if ctr is None:
                    raise InvalidArgument(f"container {u.container_id[:13]} not found")
                await self._update_cgroup(ctr, u.linux.resources)
            except Exception as e:  # noqa: BLE001 - reported back, per update
                log.warning("NRI container update failed", extra={"fields": {
                    "container": u.container_id, "error": str(e), "ignored": u.ignore_failure}})
                failed.append(u)
        return failed

    async def _update_cgroup(self, ctr: ContainerRecord, resources: api.LinuxResources) -> None:
        if ctr.state not in (ContainerState.CREATED, ContainerState.RUNNING):
            raise FailedPrecondition(f"container {ctr.id[:13]} is {ctr.state}")
        if self._cgroups is None or not ctr.cgroup_path:
            raise FailedPrecondition("no cgroup manager on this node")
        wanted = resources_to_cri(resources)
        if not wanted:
            return
        message = json_format.ParseDict(wanted, pb.LinuxContainerResources())
        await asyncio.to_thread(self._cgroups.update, ctr.cgroup_path, message)
        merged = dict(ctr.resources)
        merged.update(wanted)
        ctr.resources = merged
        await self._store.save(ctr)


def _refuse_self_eviction(p: PluginSession, evict: Any, ctr: ContainerRecord, being: str) -> None:
    if any(e.container_id == ctr.id for e in evict):
        raise PluginRefused(f"NRI plugin {p.full_name} asked to evict container {ctr.name!r} while it is being "
                            f"{being}; fail the event instead")


def own_oom_score_adj() -> int:
    """crispy's own score: what nothing it starts may go below."""
    try:
        with open("/proc/self/oom_score_adj") as f:
            return int(f.read().strip() or 0)
    except (OSError, ValueError):
        return 0


def _spec_view(spec: dict[str, Any]) -> dict[str, Any]:
    """What container messages read of a spec: it is kept per container."""
    process = spec.get("process", {})
    linux = spec.get("linux", {})
    keep_process = {k: process[k] for k in ("args", "env", "user", "rlimits", "oomScoreAdj", "ioPriority")
                    if k in process}
    keep_linux = {k: linux[k] for k in ("cgroupsPath", "namespaces", "devices", "resources", "sysctl") if k in linux}
    return {"process": keep_process, "linux": keep_linux, "mounts": spec.get("mounts", []),
            "hooks": spec.get("hooks", {}), "annotations": spec.get("annotations", {})}


def _notification(p: PluginSession, event: api.Event, pod: api.PodSandbox,
                  ctr: api.Container | None) -> Awaitable[Any]:
    if ctr is None:
        calls: dict[int, Callable[[], Awaitable[Any]]] = {
            E.STOP_POD_SANDBOX: lambda: p.stop_pod_sandbox(pod),
            E.REMOVE_POD_SANDBOX: lambda: p.remove_pod_sandbox(pod),
            E.POST_UPDATE_POD_SANDBOX: lambda: p.post_update_pod_sandbox(pod),
        }
    else:
        calls = {
            E.POST_CREATE_CONTAINER: lambda: p.post_create_container(pod, ctr),
            E.POST_START_CONTAINER: lambda: p.post_start_container(pod, ctr),
            E.POST_UPDATE_CONTAINER: lambda: p.post_update_container(pod, ctr),
            E.REMOVE_CONTAINER: lambda: p.remove_container(pod, ctr),
        }
    return calls[event]()
