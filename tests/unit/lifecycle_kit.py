"""The lifecycle services (PodService, ContainerService, ExitWatcher,
StartupRecovery) assembled as cri/daemon.py assembles them, with stand-ins
for what needs root: the in-memory OCI runtime (tests/fake_oci_runtime.py)
plus a conmon stand-in per container, a pod network, pod namespaces, the
container's overlay root, and no cgroups. Records, pod directories and
bundles are real files under the test's tmp_path; nothing else on the node
is touched, so these tests run as any user.

A `Node` is what outlives a daemon (the runtime's containers and their
monitors, the roots on disk); a `Lifecycle` is one daemon's parts on it.
Two Lifecycles on one Node, one after the other, are a daemon restart.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from cri.proto import api_pb2 as pb
from runtime import namespaces, private_dirs
from runtime.container_service import ContainerService
from runtime.errors import Internal, NotFound
from runtime.events import EventBus
from runtime.exits import ExitWatcher
from runtime.handlers import RuntimeHandlers
from runtime.host import CgroupLayout
from runtime.index import RecordIndex
from runtime.locks import ObjectLocks
from runtime.network import PodNetworkRequest, PodNetworkStatus, Readiness
from runtime.oci.interface import (
    Created,
    CreateParams,
    OciRuntime,
    OnMonitor,
    PendingCreate,
)
from runtime.pod_cgroups import PodCgroups
from runtime.pod_health import PodHealth
from runtime.pod_service import PodService
from runtime.recovery import StartupRecovery
from runtime.reservations import Reservations
from runtime.sandbox_orphans import OrphanSweep
from runtime.settings import LifecycleSettings
from runtime.store import ContainerRecord, RecordStore
from runtime.usage import UsageSampler
from tests.fake_oci_runtime import FakeOciRuntime

IMAGE = "registry.test/app:1"
IMAGE_ID = "sha256:" + "ab" * 32


# ---- the OCI runtime and conmon --------------------------------------------


@dataclass
class FakeMonitor:
    """What conmon is to a container: ends when the container stops, after
    writing the exit code to `<persist_dir>/exit`."""
    container_id: str
    persist_dir: str
    gone: asyncio.Event = field(default_factory=asyncio.Event)


class SupervisedFakeRuntime(FakeOciRuntime):
    """The fake runtime plus a monitor per container, and the monitors'
    process view for ExitWatcher (runtime/exits.py `Monitors`)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root=str(root))
        self.monitors: dict[int, FakeMonitor] = {}
        self.begun: list[str] = []
        self.aborted: list[str] = []
        # While set and not yet released, creates wait before conmon starts.
        self.create_gate: asyncio.Event | None = None

    # The runtime ------------------------------------------------------

    async def begin_create(self, params: CreateParams) -> PendingCreate:
        self.begun.append(params.container_id)
        if self.create_gate is not None:
            await self.create_gate.wait()
        return _SupervisedPending(self, await super().begin_create(params), params)

    async def start(self, container_id: str) -> None:
        try:
            await super().start(container_id)
        finally:
            ctr = self.containers.get(container_id)
            if ctr is not None and ctr.status == "stopped":
                self._ended(container_id)

    async def kill(self, container_id: str, signal: int | str, all_processes: bool = False) -> bool:
        killed = await super().kill(container_id, signal, all_processes)
        if killed:
            self._ended(container_id)
        return killed

    # What the node does on its own -------------------------------------

    def exit(self, container_id: str, code: int) -> None:
        """The container's process ends by itself."""
        ctr = self.containers[container_id]
        ctr.status, ctr.exit_code = "stopped", code
        self._ended(container_id)

    def lose_monitor(self, container_id: str) -> None:
        """conmon dies (OOM killer, an operator) without writing an exit."""
        for m in self.monitors.values():
            if m.container_id == container_id:
                m.gone.set()

    def monitor_of(self, container_id: str) -> FakeMonitor | None:
        return next((m for m in self.monitors.values() if m.container_id == container_id), None)

    def _ended(self, container_id: str) -> None:
        ctr = self.containers[container_id]
        for m in self.monitors.values():
            if m.container_id == container_id and not m.gone.is_set():
                Path(m.persist_dir, "exit").write_text(str(ctr.exit_code))
                m.gone.set()

    # Monitors (runtime/exits.py) ---------------------------------------

    def alive(self, pid: int, start_time: int) -> bool:
        m = self.monitors.get(pid)
        return m is not None and not m.gone.is_set()

    async def wait_gone(self, pid: int, start_time: int) -> None:
        m = self.monitors.get(pid)
        if m is not None:
            await m.gone.wait()


class _SupervisedPending(PendingCreate):
    def __init__(self, runtime: SupervisedFakeRuntime, inner: PendingCreate, params: CreateParams) -> None:
        self._runtime, self._inner, self._params = runtime, inner, params

    @property
    def pid(self) -> int:
        return self._inner.pid

    async def release(self, on_monitor: OnMonitor | None = None, timeout: float = 120.0) -> Created:
        rt, params = self._runtime, self._params

        async def monitor_up(pid: int, start_time: int) -> None:
            # conmon exists from here on, as it does for a real create.
            rt.monitors[pid] = FakeMonitor(params.container_id, params.persist_dir)
            if on_monitor is not None:
                await on_monitor(pid, start_time)
        return await self._inner.release(monitor_up, timeout)

    async def abort(self) -> None:
        self._runtime.aborted.append(self._params.container_id)
        await self._inner.abort()


class FakeRuntimes:
    """Stands in for runtime/oci/factory.py RuntimeFactory: every path is
    the one fake runtime."""

    def __init__(self, runtime: OciRuntime) -> None:
        self.runtime = runtime

    def for_path(self, path: str) -> OciRuntime:
        return self.runtime

    def for_record(self, rec: Any) -> OciRuntime:
        return self.runtime

    def close(self) -> None:
        pass


# ---- network, namespaces, rootfs, images ----------------------------------


class FakeNetwork:
    """A PodNetwork that hands out addresses; `fail_setup` makes the next
    setups fail after `before_add` ran, as a failing CNI ADD does."""

    def __init__(self) -> None:
        self.setups: list[str] = []
        self.teardowns: list[str] = []
        self.fail_setup: str | None = None
        # While set and not yet released, setups wait after `before_add`.
        self.gate: asyncio.Event | None = None
        self.attached: set[str] = set()
        self._ips = itertools.count(2)

    async def setup(self, req: PodNetworkRequest,
                    before_add: Callable[[dict[str, Any]], Awaitable[None]] | None = None) -> PodNetworkStatus:
        self.setups.append(req.sandbox_id)
        state = {"network": "fake", "sandbox": req.sandbox_id}
        if before_add is not None:
            await before_add(state)
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_setup is not None:
            raise Internal(f"fake network: {self.fail_setup}")
        self.attached.add(req.sandbox_id)
        return PodNetworkStatus(ip=f"10.88.0.{next(self._ips)}", state=state)

    async def teardown(self, req: PodNetworkRequest, status: PodNetworkStatus) -> None:
        self.teardowns.append(req.sandbox_id)
        self.attached.discard(req.sandbox_id)

    def readiness(self) -> Readiness:
        return Readiness(True)


class FakeNamespaces:
    """Pod namespaces without unshare(2): the request is checked as the real
    one checks it, and nothing is pinned (no mounts to undo)."""

    def __init__(self) -> None:
        self.requests: list[namespaces.NamespaceRequest] = []
        self.fail: str | None = None

    async def __call__(self, pin_dir: Path, req: namespaces.NamespaceRequest) -> namespaces.PodNamespaces:
        namespaces.check_sysctls(req.sysctls, req)
        self.requests.append(req)
        if self.fail is not None:
            raise Internal(f"creating pod namespaces failed: {self.fail}")
        return namespaces.PodNamespaces()


class FakeRootfs:
    """The container's root as a plain directory instead of an overlay
    mount; `mounted` is what a real node would still have mounted."""

    def __init__(self, passwd: str = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n") -> None:
        self.passwd = passwd
        self.mounted: set[str] = set()
        self.fail: str | None = None

    def mount(self, layers: list[str], target: str, scratch: Path) -> None:
        if self.fail is not None:
            raise OSError(f"mount overlay on {target}: {self.fail}")
        os.makedirs(target, exist_ok=True)
        (scratch / "upper").mkdir(parents=True, exist_ok=True)
        Path(target, "etc").mkdir(exist_ok=True)
        Path(target, "etc", "passwd").write_text(self.passwd)
        self.mounted.add(target)

    def unmount(self, target: str) -> None:
        self.mounted.discard(target)


class FakeImages:
    def __init__(self, layer_dir: Path) -> None:
        self.layer_dir = layer_dir
        self.images: dict[str, SimpleNamespace] = {
            IMAGE: SimpleNamespace(id=IMAGE_ID, repo_digests=["registry.test/app@sha256:" + "cd" * 32],
                                   config={"Cmd": ["/app"], "Env": ["PATH=/bin"]})}

    async def get(self, ref_or_id: str) -> Any:
        for ref, image in self.images.items():
            if ref_or_id in (ref, image.id):
                return image
        raise NotFound(f"image {ref_or_id!r} not found")

    def layer_dirs(self, record: Any) -> list[str]:
        return [str(self.layer_dir)]


# ---- assembly ----------------------------------------------------------------


class Node:
    """What survives a daemon restart: the roots, the runtime's containers
    and their monitors, the network's attachments."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.state_root = base / "state"
        self.data_root = base / "data"
        # The daemon makes its roots before it recovers (cri/daemon.py _lock_roots).
        for root in (self.state_root, self.data_root):
            private_dirs.ensure_root(root)
        (base / "layer").mkdir(parents=True, exist_ok=True)
        (base / "oci-root").mkdir(exist_ok=True)
        self.runtime = SupervisedFakeRuntime(base / "oci-root")
        self.network = FakeNetwork()
        self.namespaces = FakeNamespaces()
        self.rootfs = FakeRootfs()
        self.images = FakeImages(base / "layer")
        self.current: Lifecycle | None = None


class Lifecycle:
    """One daemon's lifecycle parts, wired as cri/daemon.py `_build_parts`."""

    def __init__(self, node: Node, default_stop_timeout: float = 2.0) -> None:
        self.node = node
        self.settings = LifecycleSettings(
            state_root=node.state_root, data_root=node.data_root,
            cgroup_layout=CgroupLayout("v2", "/sys/fs/cgroup"), default_stop_timeout=default_stop_timeout,
            conmon_path="/fake/conmon", default_runtime_path=node.runtime.path)
        runtimes: Any = FakeRuntimes(node.runtime)
        self.store = RecordStore(node.data_root)
        self.index = RecordIndex()
        self.reservations = Reservations()
        locks = ObjectLocks()
        pod_cgroups = PodCgroups(None, self.settings)
        handlers = RuntimeHandlers(self.settings, runtimes)
        self.events = EventBus(self.index)
        self.health = PodHealth(self.index, self.store, events=self.events)
        self.exits = ExitWatcher(self.index, self.store, runtimes, None, self.reservations, monitors=node.runtime,
                                 events=self.events)
        usage = UsageSampler(self.index, None)
        self.containers = ContainerService(
            self.settings, index=self.index, store=self.store, reservations=self.reservations, locks=locks,
            health=self.health, images=node.images, runtimes=runtimes, pod_cgroups=pod_cgroups, cgroups=None,
            warmup=None, exits=self.exits, usage=usage, rootfs_mounts=node.rootfs, events=self.events)
        self.pods = PodService(
            self.settings, index=self.index, store=self.store, reservations=self.reservations, locks=locks,
            health=self.health, network=node.network, handlers=handlers, pod_cgroups=pod_cgroups, warmup=None,
            containers=self.containers, usage=usage, make_namespaces=node.namespaces, events=self.events)
        sweep = OrphanSweep(node.state_root, node.data_root, index=self.index, network=node.network,
                            pod_cgroups=pod_cgroups, runtimes=runtimes, handlers=handlers)
        self.recovery = StartupRecovery(
            self.settings, store=self.store, index=self.index, reservations=self.reservations, health=self.health,
            exits=self.exits, runtimes=runtimes, containers=self.containers, sweep=sweep, handlers=handlers)

    async def start(self) -> Lifecycle:
        """What the daemon does before it serves: load and recover."""
        self.node.current = self
        await self.recovery.run()
        self.events.serving()
        return self

    async def restart(self) -> Lifecycle:
        """This daemon goes away and a new one starts on the same node."""
        self.shut_down()
        return await Lifecycle(self.node).start()

    def shut_down(self) -> None:
        """The daemon goes away; containers and their monitors stay."""
        for ctr_id in list(self.index.containers):
            self.exits.stop_watching(ctr_id)
        self.health.close()

    # ---- requests as kubelet sends them ----------------------------------

    async def run_pod(self, name: str = "web", attempt: int = 0, **kw: Any) -> str:
        return await self.pods.run(pod_request(name, attempt, **kw))

    async def create(self, pod_id: str, name: str = "app", attempt: int = 0, **kw: Any) -> str:
        return await self.containers.create(container_request(pod_id, name, attempt, **kw))

    def ctr(self, ctr_id: str) -> ContainerRecord:
        return self.index.containers[ctr_id]

    def on_disk(self) -> dict[str, set[str]]:
        """Every record, pod dir, bundle and writable layer left on the roots."""
        def names(d: Path) -> set[str]:
            return set(os.listdir(d)) if d.is_dir() else set()
        return {
            "pod records": {n.removesuffix(".json") for n in names(self.node.data_root / "pods")},
            "container records": {n.removesuffix(".json") for n in names(self.node.data_root / "containers")},
            "pod dirs": names(self.node.state_root / "pods"),
            "bundles": names(self.node.state_root / "containers"),
            "layers": names(self.node.data_root / "rootfs"),
        }


def pod_request(name: str = "web", attempt: int = 0, uid: str = "uid-1", namespace: str = "default",
                hostname: str = "", sysctls: dict[str, str] | None = None) -> pb.RunPodSandboxRequest:
    config = pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name=name, namespace=namespace, uid=uid, attempt=attempt),
        hostname=hostname or name)
    nsopt = config.linux.security_context.namespace_options
    # The pod's own network namespace (so CNI runs), the node's IPC (no
    # /dev/shm tmpfs to mount), one PID namespace per container (no infra).
    nsopt.network, nsopt.ipc, nsopt.pid = pb.POD, pb.NODE, pb.CONTAINER
    for k, v in (sysctls or {}).items():
        config.linux.sysctls[k] = v
    return pb.RunPodSandboxRequest(config=config)


def container_request(pod_id: str, name: str = "app", attempt: int = 0, image: str = IMAGE,
                      command: list[str] | None = None, user: str = "") -> pb.CreateContainerRequest:
    config = pb.ContainerConfig(metadata=pb.ContainerMetadata(name=name, attempt=attempt),
                                image=pb.ImageSpec(image=image), command=command or ["/app", "serve"])
    if user:
        config.linux.security_context.run_as_username = user
    return pb.CreateContainerRequest(pod_sandbox_id=pod_id, config=config,
                                     sandbox_config=pod_request().config)


def run(base: Path, body: Callable[[Node, Lifecycle], Awaitable[None]]) -> None:
    """Runs `body` against a started Lifecycle on a fresh Node, then shuts
    the daemon down."""
    async def main() -> None:
        node = Node(base)
        life = await Lifecycle(node).start()
        try:
            await body(node, life)
        finally:
            assert node.current is not None
            node.current.shut_down()
    asyncio.run(main())
