"""The daemon's root object: owns the configuration, the node facts, every
long-lived part (image store, pods, network) and the gRPC server. Nothing
else in crispy holds mutable global state."""

from __future__ import annotations

import asyncio
import dataclasses
import fcntl
import ipaddress
import logging
import os
import shutil
import signal
import socket
import threading
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import grpc

from cri import config_reload, explain_on_demand, logsetup, rpc, sdnotify
from cri.config import Config
from cri.limits import MAX_MESSAGE_BYTES
from cri.prometheus import PrometheusMetrics
from cri.proto import api_pb2_grpc
from cri.servicers.image import ImageServicer
from cri.servicers.runtime import RuntimeServicer
from cri.streaming.daemon_backend import DaemonStreamBackend
from cri.streaming.server import ServerOptions, StreamingServer
from images.manager import ImageManager
from runtime import atomicfile, host, libc, private_dirs
from runtime.cgroups import open_layout
from runtime.cgroups.warmup import MigrationWarmup
from runtime.cni import CniNetwork, invoke
from runtime.container_service import ContainerService
from runtime.criu import Criu
from runtime.errors import CrispyError, InvalidArgument
from runtime.events import EventBus
from runtime.exits import ExitWatcher
from runtime.features import NodeFeatures
from runtime.handlers import RuntimeHandlers
from runtime.index import RecordIndex
from runtime.locks import ObjectLocks
from runtime.network import PodNetwork
from runtime.nri.adaptation import Nri, own_oom_score_adj
from runtime.nri.plugin_server import PluginServer
from runtime.oci.factory import RuntimeFactory
from runtime.pod_cgroups import PodCgroups
from runtime.pod_health import PodHealth
from runtime.pod_metrics import PodMetricsSampler
from runtime.pod_service import PodService
from runtime.recovery import StartupRecovery
from runtime.reservations import Reservations
from runtime.sandbox_orphans import OrphanSweep
from runtime.settings import LifecycleSettings
from runtime.store import RecordStore
from runtime.telemetry import NO_TELEMETRY, Telemetry
from runtime.usage import UsageSampler

log = logging.getLogger("crispy.daemon")

LOCK_NAME = "crispy.lock"

# Seconds that work still running after the shutdown grace (cancelled RPC
# work, its undo steps, threads) gets to stop before the daemon ends it as a
# crash would: what it left half done is recorded for the next start's sweep.
SHUTDOWN_WIND_DOWN_S = 3.0
# Past the grace and the wind-down, a watchdog ends the process whatever
# the event loop is stuck in.
SHUTDOWN_WATCHDOG_SLACK_S = 5.0


class StartupError(Exception):
    """The daemon cannot start; the message says why and what to do."""


def package_version() -> str:
    try:
        return metadata.version("crispy")
    except metadata.PackageNotFoundError:
        return "0.0.0+unknown"


class Daemon:
    def __init__(self, config: Config, reload: Callable[[], Config] | None = None,
                 notifier: sdnotify.Notifier | None = None) -> None:
        self.config = config
        # Reads the configuration again (files and the command line) on SIGHUP.
        self._reload = reload
        self.notifier = notifier or sdnotify.Notifier()
        # Called with the new config on every SIGHUP that applies one: a part
        # that can take its table over live (NRI plugins) adds itself here
        # and its table's prefix to config_reload.LIVE.
        self.reload_hooks: list[Callable[[Config], None]] = []
        self.version = package_version()
        self.data_root = Path(config.data_root)
        self.state_root = Path(config.state_root)
        self.cgroup_layout = host.detect_cgroup_layout()
        # The runtime of pods whose RuntimeClass handler is "" (its `path`).
        self.default_runtime = host.choose_oci_runtime(config.runtime.oci_runtime, self.cgroup_layout)
        conmon = config.runtime.conmon
        self.conmon_path = shutil.which(conmon) if not os.path.isabs(conmon) else conmon
        self.pod_cidr: str = ""
        # The Prometheus endpoint's recorder, only when it is on.
        self.prometheus = PrometheusMetrics() if config.metrics.address else None
        self.telemetry: Telemetry = self.prometheus or NO_TELEMETRY
        self.network: PodNetwork = CniNetwork.from_config(config.cni, self.telemetry)
        self._lock_fds: list[int] = []
        self._server: grpc.aio.Server | None = None
        self._stopping = asyncio.Event()
        self._build_parts()

    def _build_parts(self) -> None:
        """Every long-lived part, each given exactly what it uses. Nothing
        here touches the roots: start() opens and recovers, under the lock."""
        rc = self.config.runtime
        settings = LifecycleSettings(
            state_root=self.state_root, data_root=self.data_root, cgroup_layout=self.cgroup_layout,
            cgroup_driver=rc.cgroup_driver, default_cgroup_parent=rc.default_cgroup_parent,
            default_stop_timeout=float(rc.default_stop_timeout), pids_limit=rc.pids_limit,
            seccomp_default=rc.seccomp_default, user_lookup_timeout=rc.user_lookup_timeout, conmon=rc.conmon,
            conmon_path=self.conmon_path, handlers=dict(rc.handlers),
            default_runtime_path=self.default_runtime.path if self.default_runtime is not None else None)
        self.records = RecordStore(self.data_root)
        self.index = RecordIndex()
        reservations = Reservations()
        locks = ObjectLocks()
        cgroups = open_layout(driver=rc.cgroup_driver, layout=self.cgroup_layout)
        warmup = MigrationWarmup(self.cgroup_layout)
        pod_cgroups = PodCgroups(cgroups, settings)
        self.runtimes = RuntimeFactory(self.state_root, self.telemetry)
        handlers = RuntimeHandlers(settings, self.runtimes)
        self.features = NodeFeatures(handlers.by_name)
        self.images = ImageManager(self.config, self.data_root, self.index.image_users, self.telemetry)
        self.events = EventBus(self.index)
        self.health = PodHealth(self.index, self.records, events=self.events)
        nc = self.config.nri
        # NRI plugins see every pod and container step; a no-op without any.
        self.nri = Nri(enabled=nc.enable, index=self.index, store=self.records, cgroups=cgroups,
                       socket_path=nc.socket_path, min_oom_score_adj=own_oom_score_adj)
        self.nri_server = PluginServer(nc, "crispy", self.version, self.nri)
        exits = ExitWatcher(self.index, self.records, self.runtimes, cgroups, reservations, events=self.events,
                            on_exit=self.nri.container_exited)
        self.usage = UsageSampler(self.index, cgroups)
        self.pod_metrics = PodMetricsSampler(self.index, cgroups)
        self.criu = Criu()
        self.explain = explain_on_demand.explainer(self.index, self.images, self.cgroup_layout, rc.cgroup_driver)
        self.containers = ContainerService(
            settings, index=self.index, store=self.records, reservations=reservations, locks=locks,
            health=self.health, images=self.images, runtimes=self.runtimes, pod_cgroups=pod_cgroups,
            cgroups=cgroups, warmup=warmup, exits=exits, usage=self.usage, features=self.features, nri=self.nri,
            events=self.events)
        self.pods = PodService(
            settings, index=self.index, store=self.records, reservations=reservations, locks=locks,
            health=self.health, network=self.network, handlers=handlers, pod_cgroups=pod_cgroups, warmup=warmup,
            containers=self.containers, usage=self.usage, nri=self.nri, events=self.events)
        self.nri.evict_with(self.containers)
        sweep = OrphanSweep(self.state_root, self.data_root, index=self.index, network=self.network,
                            pod_cgroups=pod_cgroups, runtimes=self.runtimes, handlers=handlers)
        self.recovery = StartupRecovery(
            settings, store=self.records, index=self.index, reservations=reservations, health=self.health,
            exits=exits, runtimes=self.runtimes, containers=self.containers, sweep=sweep, handlers=handlers)
        sc = self.config.streaming
        self.streaming = StreamingServer(ServerOptions(sc.address, sc.port, sc.creation_timeout, sc.idle_timeout),
                                         DaemonStreamBackend(self.index, self.runtimes, self.state_root / "exec"))
        if self.prometheus is not None:
            self.prometheus.watch(self.index, self.events, self.streaming)

    # ---- lifecycle -------------------------------------------------------

    def _lock_roots(self) -> None:
        for root in (self.data_root, self.state_root):
            private_dirs.ensure_root(root)
            fd = os.open(root / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                holder = (root / LOCK_NAME).read_text().strip() or "another process"
                raise StartupError(
                    f"another crispy daemon (pid {holder}) is using {root}; stop it first or give this one "
                    f"its own --data-root and --state-root") from None
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            self._lock_fds.append(fd)

    def _prepare_socket(self) -> str:
        path = Path(self.config.socket)
        path.parent.mkdir(parents=True, exist_ok=True)
        # The operator's group may reach the socket, others may not. Unless
        # the directory is above the state root: user-namespaced container
        # roots are mounted beside the state root, and a container's root
        # (an unprivileged host ID) must search every directory above them.
        above_state = path.parent.resolve() in Path(self.config.state_root).resolve().parents
        os.chmod(path.parent, 0o751 if above_state else 0o750)
        if path.exists() or path.is_symlink():
            # A socket someone still answers on is not stale, even if the
            # roots differ: refuse rather than steal it.
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(str(path))
            except OSError:
                path.unlink()
                log.info("removed stale socket", extra={"fields": {"path": str(path)}})
            else:
                raise StartupError(f"{path} is in use by another server; stop it or choose --socket")
            finally:
                probe.close()
        return str(path)

    async def start(self) -> None:
        # Whatever shell or unit started us: what crispy, conmon, the OCI
        # runtime and CNI plugins create without an explicit mode (a pod's
        # log directory, a log file) must not come out group- or
        # world-writable.
        os.umask(0o022)
        # Large replies (ExecSync output, big lists) must not leave their
        # memory with the daemon once sent (runtime/libc.py says why).
        libc.pin_mmap_threshold(libc.MMAP_THRESHOLD)
        self._lock_roots()
        self._load_state()
        await self._open_parts()
        self.events.serving()
        sock = self._prepare_socket()
        interceptors = [self.prometheus.interceptor()] if self.prometheus is not None else None
        server = grpc.aio.server(interceptors=interceptors,
                                 options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                                          ("grpc.max_send_message_length", MAX_MESSAGE_BYTES)])
        api_pb2_grpc.add_RuntimeServiceServicer_to_server(rpc.bind(RuntimeServicer(self), "RuntimeService"), server)
        api_pb2_grpc.add_ImageServiceServicer_to_server(rpc.bind(ImageServicer(self), "ImageService"), server)
        # The socket must never be reachable with wider permissions than 0660.
        old_umask = os.umask(0o117)
        try:
            server.add_insecure_port(f"unix://{sock}")
            await server.start()
        finally:
            os.umask(old_umask)
        os.chmod(sock, 0o660)
        self._server = server
        log.info("crispy serving", extra={"fields": {
            "socket": sock, "version": self.version,
            "oci_runtime": self.default_runtime.name if self.default_runtime else "none",
            "cgroups": self.cgroup_layout.mode, "cgroup_driver": self.config.runtime.cgroup_driver}})

    async def serve_until_signalled(self) -> None:
        await self.start()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopping.set)
        loop.add_signal_handler(signal.SIGHUP, self.reload_config)
        self.notifier.send(READY=1, STATUS=f"serving on {self.config.socket}", MAINPID=os.getpid())
        pinger = asyncio.create_task(self._watchdog()) if self.notifier.watchdog else None
        await self._stopping.wait()
        self.notifier.send(STOPPING=1, STATUS="shutting down")
        if pinger is not None:
            pinger.cancel()
        grace = max(0.0, float(self.config.shutdown_grace))
        log.info("shutting down; containers keep running", extra={"fields": {"grace_s": grace}})
        watchdog = threading.Timer(grace + SHUTDOWN_WIND_DOWN_S + SHUTDOWN_WATCHDOG_SLACK_S, _exit_now,
                                   args=("the shutdown itself is stuck",))
        watchdog.daemon = True
        watchdog.start()
        if not await self.stop():
            _exit_now("work did not stop within the shutdown grace and wind-down")
        # The watchdog stays armed: what follows (asyncio.run joining the
        # thread pool, interpreter teardown) could still hang, and the root
        # locks are only dropped when this process is gone.

    async def stop(self) -> bool:
        """Stops serving, then ends the daemon's own work. False if some work
        would not stop: the caller then ends the process.

        The root locks are never released here: the kernel drops them when
        the process exits, after everything it ran (a release by hand left a
        window, the interpreter's own teardown, in which a new crispy could
        start beside this one)."""
        # Event streams never end by themselves: ended first, so that they do
        # not hold the grace period.
        self.events.close()
        if self._server is not None:
            # Stops accepting at once; in-flight calls get the grace period.
            await self._server.stop(self.config.shutdown_grace)
            self._server = None
        await self.streaming.stop()
        await self.nri_server.stop()
        if self.prometheus is not None:
            await self.prometheus.stop()
        Path(self.config.socket).unlink(missing_ok=True)
        stopped = await _wind_down(SHUTDOWN_WIND_DOWN_S)
        self.health.close()
        self.runtimes.close()
        return stopped

    async def _open_parts(self) -> None:
        """Loads the stores and recovers pods, containers and networks, before
        the socket accepts a single call. One line per part."""
        await self.images.open()
        await self.recovery.run()
        # After recovery asked each runtime what it is: its features now.
        await asyncio.to_thread(self.features.probe)
        sc = self.config.streaming
        try:
            await self.streaming.start()
        except OSError as exc:
            raise StartupError(f"cannot listen for exec/attach/port-forward streams on {sc.address}:{sc.port}: "
                               f"{exc.strerror}; choose another [streaming] address or port") from None
        # After recovery: plugins that (re)connect are shown the recovered pods.
        nc = self.config.nri
        if nc.enable and not nc.disable_connections and _answers(nc.socket_path):
            raise StartupError(f"{nc.socket_path} is in use by another runtime's NRI; stop it, choose another "
                               "[nri] socket_path or set [nri] enable = false")
        try:
            await self.nri_server.start()
        except OSError as exc:
            raise StartupError(f"cannot listen for NRI plugins on {self.config.nri.socket_path}: {exc}; choose "
                               "another [nri] socket_path or set [nri] enable = false") from None
        if self.prometheus is not None:
            try:
                await self.prometheus.serve(self.config.metrics.address)
            except OSError as exc:
                raise StartupError(f"cannot serve metrics on {self.config.metrics.address}: {exc.strerror}; "
                                   "choose another [metrics] address") from None

    async def _watchdog(self) -> None:
        # Pinged from the event loop: a loop stuck for longer than the
        # unit's WatchdogSec gets the daemon restarted by systemd.
        assert self.notifier.watchdog is not None
        while True:
            self.notifier.send(WATCHDOG=1)
            await asyncio.sleep(self.notifier.watchdog)

    # ---- SIGHUP -----------------------------------------------------------

    def reload_config(self) -> config_reload.Plan | None:
        """Reads the configuration again and applies what can change live;
        what needs a restart is only logged. A bad new configuration is
        refused whole and the old one stays."""
        if self._reload is None:
            log.warning("SIGHUP ignored: this daemon was not started from config files")
            return None
        try:
            new = self._reload()
        except CrispyError as e:
            log.error("config reload refused; keeping the running config", extra={"fields": {"error": e.message}})
            return None
        plan = config_reload.plan(self.config.to_dict(), new.to_dict())
        if not plan.changed:
            log.info("config reloaded: nothing changed")
            return plan
        # systemd 253+ wants the monotonic time of the reload with RELOADING.
        self.notifier.send(RELOADING=1, MONOTONIC_USEC=time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000)
        self._apply_live(new)
        log.info("config reloaded", extra={"fields": {"applied": ",".join(plan.live) or "none",
                                                      "needs_restart": ",".join(plan.restart) or "none"}})
        self.notifier.send(READY=1)
        return plan

    def _apply_live(self, new: Config) -> None:
        """Takes over the keys of config_reload.LIVE. The image store and the
        puller read self.config's tables on each pull, so replacing them is
        enough; then each of reload_hooks."""
        if new.log_level != self.config.log_level:
            logsetup.set_level(new.log_level)
            self.config.log_level = new.log_level
        self.config.registries = new.registries
        self.config.registry = new.registry
        if new.images.pinned_images != self.config.images.pinned_images:
            self.config.images.pinned_images = list(new.images.pinned_images)
            self.images.set_pinned(self.config.images.pinned_images)
        for hook in self.reload_hooks:
            try:
                hook(new)
            except Exception:  # noqa: BLE001 - one part's failure must not stop the others' reload
                log.exception("a part failed to take the reloaded config", extra={"fields": {"hook": repr(hook)}})

    # ---- persisted node settings ----------------------------------------

    @property
    def _runtime_config_path(self) -> Path:
        return self.data_root / "runtime-config.json"

    def _load_state(self) -> None:
        saved = atomicfile.read_json(self._runtime_config_path, {}) or {}
        self.pod_cidr = saved.get("pod_cidr", "")

    async def set_pod_cidr(self, cidr: str) -> None:
        for part in cidr.split(","):
            try:
                ipaddress.ip_network(part.strip(), strict=False)
            except ValueError:
                raise InvalidArgument(f"pod CIDR {part.strip()!r} is not a valid network "
                                      "(want e.g. 10.244.1.0/24)") from None
        if cidr != self.pod_cidr:
            self.pod_cidr = cidr
            await asyncio.to_thread(atomicfile.write_json, self._runtime_config_path, {"pod_cidr": cidr})
            log.info("pod CIDR updated", extra={"fields": {"pod_cidr": cidr}})
        if isinstance(self.network, CniNetwork):
            # Moves crispy's own default network onto the pod CIDR (never an operator's config).
            await self.network.pod_cidr_changed(cidr)

    # ---- readiness -------------------------------------------------------

    def runtime_readiness(self) -> dict[str, Any]:
        if self.default_runtime is None:
            wanted = self.config.runtime.oci_runtime
            return {"status": False, "reason": "OCIRuntimeNotFound",
                    "message": f"no usable OCI runtime ({'crun or runc' if wanted == 'auto' else wanted}); "
                               "install crun or runc"}
        if not self.conmon_path:
            return {"status": False, "reason": "ConmonNotFound",
                    "message": f"{self.config.runtime.conmon} not found; install conmon"}
        return {"status": True, "reason": "", "message": ""}

    def network_readiness(self) -> dict[str, Any]:
        r = self.network.readiness()
        return {"status": r.ready, "reason": r.reason, "message": r.message}

    def status_info(self) -> dict[str, Any]:
        rt = self.default_runtime
        return {
            "config": self.config.to_dict(),
            "version": self.version,
            "ociRuntime": dataclasses.asdict(rt) if rt else None,
            "conmon": self.conmon_path,
            "cgroup": {"mode": self.cgroup_layout.mode, "version": self.cgroup_layout.version,
                       "driver": self.config.runtime.cgroup_driver},
            "podCIDR": self.pod_cidr,
            "cniconfig": self.network.info() if isinstance(self.network, CniNetwork) else None,
            # Why a handler lacks a feature, which Status' booleans cannot say.
            "events": self.events.info(),
            "metrics": {"address": self.prometheus.address if self.prometheus else ""},
            "runtimeHandlerFeatures": {name: dataclasses.asdict(f) for name, f in self.features.handlers().items()},
            "nri": self.nri.status(),
        }

    def check_usable(self) -> None:
        if self.config.runtime.cgroup_driver == "systemd" and not Path("/run/systemd/system").is_dir():
            raise StartupError("runtime.cgroup_driver is 'systemd' but systemd is not running on this host; "
                               "use 'cgroupfs'")


async def _wind_down(budget: float) -> bool:
    """Cancels every other task (RPC work the grace did not cover, watchers)
    and waits for them and for the thread pool's jobs, `budget` seconds in
    all. True when everything stopped."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + budget
    me = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks() if t is not me and not t.done()]
    for t in tasks:
        t.cancel()
    if tasks:
        _, pending = await asyncio.wait(tasks, timeout=budget)
        if pending:
            log.warning("work still running after the shutdown grace",
                        extra={"fields": {"tasks": len(pending), "plugins": invoke.running()}})
            return False
    try:
        # A cancelled task's thread (an unpack, a mount) runs on to its end.
        await asyncio.wait_for(loop.shutdown_default_executor(), max(0.0, deadline - loop.time()))
    except TimeoutError:
        log.warning("threads still busy after the shutdown grace")
        return False
    return True


def _answers(path: str) -> bool:
    """Whether something listens on the unix socket at `path` (a stale file does not)."""
    if not os.path.exists(path):
        return False
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        return False
    finally:
        probe.close()
    return True


def _exit_now(why: str) -> None:
    """Ends the process as a crash would, minus what would outlive it: the
    CNI plugins it started. Releasing the root locks is left to the kernel,
    at the very end. From any thread."""
    killed = invoke.kill_running()
    log.error("exiting without finishing in-flight work; the next start cleans up after it",
              extra={"fields": {"why": why, "plugins_killed": killed}})
    for handler in logging.getLogger().handlers:
        try:
            handler.flush()
        except Exception:  # noqa: BLE001 - exiting anyway
            pass
    os._exit(0)
