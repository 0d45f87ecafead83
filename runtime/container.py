"""Containers: CreateContainer to RemoveContainer. conmon supervises each
one (runtime/conmon.py); crispy watches conmon's pid (a pidfd) to learn the
moment the container exits, then records exit code, time and reason.

Locking: the manager serialises lifecycle calls per container. The exit
watcher never takes that lock (StopContainer holds it while waiting for the
exit), it only fills in the exit fields and wakes the waiters.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import shutil
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cri.errors import FailedPrecondition, Internal, InvalidArgument
from cri.proto import api_pb2 as pb
from runtime import conmon, isolated, namespaces, rootfs, sandbox
from runtime.crashpoints import crashpoint
from runtime.oci.interface import CreateParams, OciRuntime, PendingCreate
from runtime.oci_spec import ContainerSpecRequest, SandboxView, build_spec, resolve_user
from runtime.store import ContainerRecord, SandboxRecord

if TYPE_CHECKING:
    from runtime.manager import PodManager

log = logging.getLogger("crispy.container")

# How long a killed container may take to be reaped before we give up.
KILL_WAIT = 30.0


# ---- paths -------------------------------------------------------------------------

def bundle_dir(mgr: "PodManager", container_id: str) -> Path:
    return mgr.state_root / "containers" / container_id


def scratch_dir(mgr: "PodManager", container_id: str) -> Path:
    return mgr.daemon.data_root / "rootfs" / container_id


def exit_file(ctr: ContainerRecord) -> Path:
    return Path(ctr.bundle) / "exit"


def runtime_of(mgr: "PodManager", ctr: ContainerRecord) -> OciRuntime:
    return mgr.runtime_for(ctr)


def sandbox_view(rec: SandboxRecord, config: pb.PodSandboxConfig | None = None) -> SandboxView:
    """`config`: the pod's config if the caller has it parsed already."""
    if config is None:
        config = sandbox.config_of(rec)
    return SandboxView(
        id=rec.id, config=config, hostname=config.hostname, namespaces=sandbox.pinned_of(rec).paths(),
        cgroup_parent=rec.cgroup_parent, etc_hosts=rec.hosts_path, resolv_conf=rec.resolv_conf_path,
        etc_hostname=rec.hostname_path, shm=rec.shm_path or None)


def stop_signal_of(config: pb.ContainerConfig, image_config: dict[str, Any]) -> str:
    """kubelet's choice, else the image's STOPSIGNAL, else SIGTERM."""
    if config.stop_signal:
        return pb.Signal.Name(config.stop_signal)
    return str(image_config.get("StopSignal") or "SIGTERM")


def signal_number(name: str) -> int:
    text = name.strip().upper()
    if text.isdigit():
        return int(text)
    if not text.startswith("SIG"):
        text = "SIG" + text
    try:
        return int(signal.Signals[text])
    except KeyError:
        if text.startswith("SIGRTMIN+") and text[9:].isdigit():
            return int(signal.SIGRTMIN) + int(text[9:])
        raise InvalidArgument(f"unknown stop signal {name!r}") from None


# ---- create ----------------------------------------------------------------------

async def create(mgr: "PodManager", req: pb.CreateContainerRequest, digest: str) -> ContainerRecord:
    config = req.config
    if not config.metadata.name:
        raise InvalidArgument("ContainerConfig.metadata.name is empty")
    if not config.image.image:
        raise InvalidArgument("ContainerConfig.image.image is empty; name the image to run")
    pod = mgr.sandbox(req.pod_sandbox_id)
    await mgr.health.refresh(pod)
    if not sandbox.is_ready(pod):
        raise FailedPrecondition(f"pod sandbox {pod.id[:13]} is not ready; containers can only be created in a "
                                 f"ready pod (stop and remove it, then run a new sandbox)")
    image = await mgr.daemon.images.get(config.image.image)
    layers = mgr.daemon.images.layer_dirs(image)
    target_pid_ns = None
    nsopt = config.linux.security_context.namespace_options
    if nsopt.pid == pb.TARGET:
        target = mgr.container(nsopt.target_id)
        if target.state != "running" or not target.pid:
            raise FailedPrecondition(f"target container {nsopt.target_id!r} is not running")
        target_pid_ns = f"/proc/{target.pid}/ns/pid"

    if mgr.migration_warmup is not None:
        mgr.migration_warmup.kick()  # see runtime/cgroups/warmup.py
    container_id = secrets.token_hex(32)
    bundle = bundle_dir(mgr, container_id)
    scratch = scratch_dir(mgr, container_id)
    root = bundle / "rootfs"
    pod_config = sandbox.config_of(pod)
    log_path = _log_path(pod_config, config, bundle)
    ctr = ContainerRecord(
        id=container_id, sandbox_id=pod.id, name=config.metadata.name, attempt=config.metadata.attempt,
        config=sandbox.to_json(config), created_at=time.time_ns(), image=config.image.image, image_id=image.id,
        image_ref=image.repo_digests[0] if image.repo_digests else image.id, bundle=str(bundle), rootfs=str(root),
        container_dir=str(scratch), log_path=log_path, oci_runtime=pod.oci_runtime,
        stop_signal=stop_signal_of(config, image.config or {}),
        resources=sandbox.to_json(config.linux.resources) if config.linux.HasField("resources") else {},
        mounts=[sandbox.to_json(m) for m in config.mounts], request_digest=digest)
    signal_number(ctr.stop_signal)  # refuse an unknown one now, not at stop time
    runtime = runtime_of(mgr, ctr)
    params = CreateParams(
        conmon=_conmon_path(mgr), container_id=container_id, name=config.metadata.name,
        bundle=str(bundle), log_path=log_path, exit_dir=str(mgr.state_root / "exits"),
        persist_dir=str(bundle), container_pidfile=str(bundle / "pidfile"),
        conmon_pidfile=str(bundle / "conmon.pid"), socket_dir=str(mgr.state_root / "sock"),
        stdin=config.stdin, stdin_once=config.stdin_once, tty=config.tty,
        systemd_cgroup=mgr.daemon.config.runtime.cgroup_driver == "systemd")
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
        early_join = asyncio.ensure_future(mgr.join_pod_cgroup(pod, pending.pid, "conmon", gone_ok=True))
        try:
            spec_req = ContainerSpecRequest(
                id=container_id, config=config, sandbox=sandbox_view(pod, pod_config), image_config=image.config or {},
                rootfs=str(root), cgroup_version=mgr.daemon.cgroup_layout.version,
                cgroup_driver=mgr.daemon.config.runtime.cgroup_driver, target_pid_ns=target_pid_ns,
                pids_limit=mgr.daemon.config.runtime.pids_limit,
                seccomp_default=mgr.daemon.config.runtime.seccomp_default)
            await asyncio.to_thread(rootfs.mount, layers, str(root), scratch)
            # The image's /etc/passwd and /etc/group are read in a thread of
            # their own, with a deadline: whatever the image holds, this
            # request cannot take a thread of the shared pool for good, nor
            # keep the pod's lock.
            spec_req.user = await isolated.call(
                resolve_user, spec_req, what="reading the image's /etc/passwd and /etc/group",
                timeout=mgr.daemon.config.runtime.user_lookup_timeout)
            spec = await asyncio.to_thread(_write_spec, spec_req, bundle / "config.json")
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
                saving = asyncio.ensure_future(mgr.store.save(ctr))
                await asyncio.gather(mgr.join_pod_cgroup(pod, pid, "conmon", gone_ok=True), asyncio.shield(saving))
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
            if pending is not None:
                await pending.abort()
            await _discard(mgr, ctr)
            if saving is not None:
                await asyncio.wait([saving])
                await mgr.store.delete(ctr)
        await asyncio.shield(undo())
        raise
    return ctr


def _conmon_path(mgr: "PodManager") -> str:
    if not mgr.daemon.conmon_path:
        raise FailedPrecondition(f"{mgr.daemon.config.runtime.conmon} is not installed; install conmon")
    return mgr.daemon.conmon_path


def _log_path(pod_config: pb.PodSandboxConfig, config: pb.ContainerConfig, bundle: Path) -> str:
    if pod_config.log_directory and config.log_path:
        if not os.path.isabs(pod_config.log_directory):
            # A pod recorded before log directories were checked.
            raise InvalidArgument(f"the pod's log_directory {pod_config.log_directory!r} is not absolute; "
                                  f"recreate the pod with an absolute one")
        if os.path.isabs(config.log_path) or ".." in Path(config.log_path).parts:
            raise InvalidArgument(f"log_path {sandbox.shown(config.log_path)} must be relative to the pod's log_directory")
        if config.log_path.endswith("/") or not Path(config.log_path).parts:
            raise InvalidArgument(f"log_path {sandbox.shown(config.log_path)} must name a file under the pod's log_directory")
        return os.path.join(pod_config.log_directory, config.log_path)
    # No log asked for: conmon still needs somewhere to write.
    return str(bundle / "container.log")


def _write_spec(spec_req: ContainerSpecRequest, spec_path: Path) -> dict[str, Any]:
    """Blocking: the spec built and written."""
    spec = build_spec(spec_req)
    spec_path.write_text(json.dumps(spec))
    return spec


async def _discard(mgr: "PodManager", ctr: ContainerRecord) -> None:
    """Undoes a partial create; every step tolerates what was never done."""
    try:
        await runtime_of(mgr, ctr).delete(ctr.id)
    except Exception as e:  # noqa: BLE001 - keep cleaning
        log.error("runtime delete after a failed create", extra={"fields": {"id": ctr.id, "error": str(e)}})
    await _remove_files(mgr, ctr)


async def _remove_files(mgr: "PodManager", ctr: ContainerRecord) -> None:
    def _rm() -> None:
        rootfs.unmount(ctr.rootfs)
        if os.path.exists(ctr.bundle):
            from runtime import kmount
            if kmount.mounts_under(ctr.bundle):
                raise OSError(f"{ctr.bundle} still has mounts")
            shutil.rmtree(ctr.bundle, ignore_errors=True)
        shutil.rmtree(ctr.container_dir, ignore_errors=True)
        (mgr.state_root / "exits" / ctr.id).unlink(missing_ok=True)
        try:
            os.unlink(mgr.state_root / "sock" / ctr.id)
        except (FileNotFoundError, IsADirectoryError):
            pass
    await asyncio.to_thread(_rm)


# ---- start / exit ----------------------------------------------------------------

async def start(mgr: "PodManager", ctr: ContainerRecord) -> None:
    if ctr.state != "created":
        raise FailedPrecondition(f"container {ctr.id[:13]} is {ctr.state}, not created; only a created container can be started")
    pod = mgr.sandboxes.get(ctr.sandbox_id)
    if pod is not None:
        await mgr.health.refresh(pod)
    if pod is None or not sandbox.is_ready(pod):
        raise FailedPrecondition(f"pod sandbox of container {ctr.id[:13]} is not ready (stop and remove it, "
                                 f"then run a new sandbox)")
    # Taken before the process is let go: it may have exited (and its exit
    # been recorded) by the time `start` returns.
    started = time.time_ns()
    crashpoint("ctr.start.before_runtime_start")
    try:
        await runtime_of(mgr, ctr).start(ctr.id)
    except Internal as e:
        # The process could not be started (bad command, missing binary):
        # it exits, and the container is reported exited with the reason.
        await _wait_exit(mgr, ctr, 5.0)
        ctr.reason, ctr.message = "StartError", e.message
        if ctr.state != "exited":
            ctr.state, ctr.exit_code, ctr.finished_at = "exited", 128, time.time_ns()
        await mgr.store.save(ctr)
        raise
    crashpoint("ctr.start.after_runtime_start")
    ctr.started_at = started
    if ctr.state == "created":
        ctr.state = "running"
    elif ctr.finished_at < started:
        ctr.finished_at = started
    await mgr.store.save(ctr)
    crashpoint("ctr.start.after_record_save")


def watch(mgr: "PodManager", ctr: ContainerRecord) -> None:
    """Starts the exit watcher of a container not yet known to have exited.
    Idempotent; with conmon already gone, the watcher deals with the lost
    monitor at once."""
    if ctr.id in mgr.watchers or ctr.state == "exited":
        return
    mgr.exit_events.setdefault(ctr.id, asyncio.Event())
    task = asyncio.create_task(_watch(mgr, ctr), name=f"watch-{ctr.id[:12]}")
    mgr.watchers[ctr.id] = task

    def _done(t: "asyncio.Task[None]") -> None:
        if mgr.watchers.get(ctr.id) is t:
            del mgr.watchers[ctr.id]
        if not t.cancelled() and t.exception() is not None:
            log.error("container exit watcher failed", extra={"fields": {"id": ctr.id, "error": str(t.exception())}})
    task.add_done_callback(_done)


async def _watch(mgr: "PodManager", ctr: ContainerRecord) -> None:
    try:
        fd = os.pidfd_open(ctr.conmon_pid) if ctr.conmon_pid else -1
    except (ProcessLookupError, OSError):
        fd = -1
    try:
        # Checked after opening the pidfd: a pid reused since then would not
        # be the process the pidfd refers to.
        if fd >= 0 and namespaces.process_start_time(ctr.conmon_pid) == ctr.conmon_start_time:
            await _readable(fd)
    finally:
        if fd >= 0:
            os.close(fd)
    await record_exit(mgr, ctr)


async def _readable(fd: int, timeout: float | None = None) -> bool:
    """Waits for a pidfd to turn readable (its process exited); False on timeout."""
    loop = asyncio.get_running_loop()
    gone = loop.create_future()
    loop.add_reader(fd, lambda: gone.done() or gone.set_result(None))
    try:
        async with asyncio.timeout(timeout):
            await gone
        return True
    except TimeoutError:
        return False
    finally:
        loop.remove_reader(fd)


async def record_exit(mgr: "PodManager", ctr: ContainerRecord) -> None:
    """conmon is gone: fill in how the container ended."""
    if ctr.state == "exited":
        mgr.exit_event(ctr.id).set()
        return
    code, finished = await asyncio.to_thread(_read_exit, exit_file(ctr))
    lost = code is None
    never_started = False
    if lost:
        code, finished, ctr.message, status = await _monitor_lost(mgr, ctr)
        never_started = ctr.state == "created" and status == "created"
        # conmon may have written the exit file just before it died, after
        # the first look.
        late, late_finished = await asyncio.to_thread(_read_exit, exit_file(ctr))
        if late is not None:
            lost, code, finished, ctr.message = False, late, late_finished, ""
    oom = await asyncio.to_thread(_oom_killed, mgr, ctr)
    # The exit file's mtime comes from the kernel's coarse clock, which can
    # trail the start time taken just before.
    if ctr.started_at and finished < ctr.started_at:
        finished = ctr.started_at
    ctr.state, ctr.exit_code, ctr.finished_at = "exited", code, finished
    if lost:
        ctr.reason = MONITOR_LOST
    elif ctr.reason != "StartError":
        ctr.reason = "OOMKilled" if oom else ("Completed" if code == 0 else "Error")
    if ctr.id in mgr.containers:
        await mgr.store.save(ctr)
        if never_started:
            # Most likely a create that crispy's crash cut short (conmon dies
            # when it cannot report the pid): a retried CreateContainer must
            # make a fresh container, not get this dead one back.
            mgr.release_name(("ctr", ctr.sandbox_id, ctr.name, ctr.attempt), ctr.id)
    mgr.exit_event(ctr.id).set()
    log.info("container exited", extra={"fields": {"id": ctr.id, "exit_code": code, "reason": ctr.reason}})


# Reason of a container whose conmon died before it: its output and exit
# status could no longer be collected, so crispy killed it.
MONITOR_LOST = "MonitorLost"
_KILLED_CODE = 128 + int(signal.SIGKILL)


async def _monitor_lost(mgr: "PodManager", ctr: ContainerRecord) -> tuple[int, int, str, str]:
    """conmon died without recording an exit (OOM killer, an operator, or
    its sync pipe broken by a crispy crash during the create).

    conmon cannot adopt a process that already runs, and nothing else holds
    the container's stdio or would collect its exit status, so the
    container is killed and reported exited, as containerd does when a
    shim dies (SIGKILL, exit 137); kubelet then restarts it by its restart
    policy, under a new monitor. The wait is on the container's own init
    (a pidfd, else the runtime's state), never on conmon.

    Returns exit code, time, message and the runtime's status when found."""
    runtime = runtime_of(mgr, ctr)
    pid = ctr.pid or await asyncio.to_thread(_read_container_pid, ctr)
    fd = -1
    if pid:
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            fd = -1
    try:
        try:
            state = await runtime.state(ctr.id)
        except Internal:
            state = None
        status = state.get("status") if state else None
        if status not in ("running", "created", "paused"):
            return (255, time.time_ns(),
                    "conmon, the container's monitor, exited without recording the container's exit status",
                    status or "")
        # The runtime checks the init's start time: the same pid, alive
        # after the pidfd was opened, means the pidfd is the container's.
        if fd >= 0 and int(state.get("pid") or 0) != pid:
            os.close(fd)
            fd = -1
        log.error("conmon is gone but the container still runs; killing it", extra={"fields": {
            "id": ctr.id, "status": status}})
        try:
            await runtime.kill(ctr.id, int(signal.SIGKILL), all_processes=True)
        except Internal as e:
            log.error("killing a container whose monitor is gone failed",
                      extra={"fields": {"id": ctr.id, "error": e.message}})
        if fd >= 0:
            dead = await _readable(fd, KILL_WAIT)
        else:
            dead = await _wait_stopped(runtime, ctr.id, KILL_WAIT)
        if not dead:
            log.error("container whose monitor is gone did not die after SIGKILL", extra={"fields": {"id": ctr.id}})
        return (_KILLED_CODE, time.time_ns(),
                "conmon, the container's monitor, exited while the container ran; crispy killed the container "
                "because its output and exit status could no longer be collected", status)
    finally:
        if fd >= 0:
            os.close(fd)


async def _wait_stopped(runtime: OciRuntime, container_id: str, timeout: float) -> bool:
    """Polls the runtime's state (no pid to wait on): True once not running."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    delay = 0.005
    while True:
        try:
            state = await runtime.state(container_id)
        except Internal:
            state = None
        if state is None or state.get("status") not in ("running", "created", "paused"):
            return True
        if loop.time() > deadline:
            return False
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.2)


def _read_container_pid(ctr: ContainerRecord) -> int:
    """Blocking: the container's pid from the runtime's pid file, 0 if none."""
    try:
        return conmon.read_pidfile(str(Path(ctr.bundle) / "pidfile"))
    except (OSError, ValueError):
        return 0


def _read_exit(path: Path) -> tuple[int | None, int]:
    try:
        text = path.read_text().strip()
        finished = path.stat().st_mtime_ns
    except FileNotFoundError:
        return None, 0
    try:
        return int(text), finished
    except ValueError:
        return None, 0


def _oom_killed(mgr: "PodManager", ctr: ContainerRecord) -> bool:
    """conmon's oom file, else the cgroup's own count; read before the
    runtime deletes the cgroup (RemoveContainer)."""
    if (Path(ctr.bundle) / "oom").exists():
        return True
    cg = mgr.cgroups
    if cg is not None and ctr.cgroup_path:
        try:
            return bool(cg.oom_killed(ctr.cgroup_path))
        except (OSError, ValueError):
            return False
    return False


async def _wait_exit(mgr: "PodManager", ctr: ContainerRecord, timeout: float) -> bool:
    if ctr.state == "exited":
        return True
    try:
        async with asyncio.timeout(timeout):
            await mgr.exit_event(ctr.id).wait()
        return True
    except TimeoutError:
        return False


# ---- stop / remove ---------------------------------------------------------------

def signal_is_futile(pid: int, signum: int) -> bool:
    """True if `pid` is the init of its own PID namespace and does not catch
    `signum`: the kernel then drops the signal, so waiting for it to work
    only delays the pod's teardown."""
    try:
        with open(f"/proc/{pid}/status") as f:
            fields = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
    except OSError:
        return False
    nspid = fields.get("NSpid", "").split()
    caught = int(fields.get("SigCgt", "0"), 16)
    return bool(nspid) and nspid[-1] == "1" and not caught & (1 << (signum - 1))


async def stop(mgr: "PodManager", ctr: ContainerRecord, timeout: float, skip_futile: bool = False) -> None:
    """The stop signal, then SIGKILL to every process of the container after
    `timeout` seconds. Idempotent. With `skip_futile` (a pod being torn
    down), a signal the container's init would never see is not waited on."""
    if ctr.state not in ("created", "running"):
        return
    # The exit is recorded by the watcher: from conmon's exit file, or, with
    # conmon gone, after it has killed the container and waited on the
    # container's own init. Started here if it somehow is not running.
    watch(mgr, ctr)
    runtime = runtime_of(mgr, ctr)
    signum = signal_number(ctr.stop_signal)
    if skip_futile and ctr.pid and signal_is_futile(ctr.pid, signum):
        timeout = 0
    if timeout > 0 and ctr.state == "running":
        if await runtime.kill(ctr.id, signum) and await _wait_exit(mgr, ctr, timeout):
            return
    await runtime.kill(ctr.id, int(signal.SIGKILL), all_processes=True)
    if not await _wait_exit(mgr, ctr, KILL_WAIT):
        raise Internal(f"container {ctr.id[:13]} did not exit {KILL_WAIT:.0f}s after SIGKILL")


async def remove(mgr: "PodManager", ctr: ContainerRecord) -> None:
    if ctr.state in ("created", "running"):
        await stop(mgr, ctr, 0)
    task = mgr.watchers.pop(ctr.id, None)
    if task is not None:
        task.cancel()
    await runtime_of(mgr, ctr).delete(ctr.id)
    await _remove_files(mgr, ctr)
    await mgr.store.delete(ctr)
    mgr.exit_events.pop(ctr.id, None)


# ---- recovery ---------------------------------------------------------------------

async def recover(mgr: "PodManager", ctr: ContainerRecord) -> bool:
    """False if the container was discarded: the caller forgets it."""
    if ctr.state == "exited":
        return True
    if not ctr.pid:
        # Recorded during the create, before the runtime wrote its pid file.
        ctr.pid = await asyncio.to_thread(_read_container_pid, ctr)
    if ctr.conmon_pid and namespaces.process_start_time(ctr.conmon_pid) == ctr.conmon_start_time:
        if ctr.state == "created":
            await _catch_up_start(mgr, ctr)
        watch(mgr, ctr)
        return True
    if ctr.state == "created" and not await _exit_recorded(ctr) and not await _runtime_started(mgr, ctr):
        # Created, never started, and nothing supervises it: a create that
        # crispy's crash cut short (conmon exits when it cannot report the
        # container's pid). kubelet never got its id or retries the create;
        # the retry must make a fresh, supervised container.
        log.warning("discarding a created container whose monitor is gone", extra={"fields": {"id": ctr.id}})
        await _discard(mgr, ctr)
        await mgr.store.delete(ctr)
        mgr.exit_events.pop(ctr.id, None)
        return False
    await record_exit(mgr, ctr)
    return True


async def _exit_recorded(ctr: ContainerRecord) -> bool:
    code, _ = await asyncio.to_thread(_read_exit, exit_file(ctr))
    return code is not None


async def _runtime_started(mgr: "PodManager", ctr: ContainerRecord) -> bool:
    try:
        state = await runtime_of(mgr, ctr).state(ctr.id)
    except Internal:
        return False
    return state is not None and state.get("status") in ("running", "paused")


async def _catch_up_start(mgr: "PodManager", ctr: ContainerRecord) -> None:
    """crispy stopped after the runtime started the container but before the
    record said so. Left as "created", the container would be reported not
    running and a retried StartContainer would fail on a running process.
    The moment it started is lost; the time it is found running stands in."""
    try:
        state = await runtime_of(mgr, ctr).state(ctr.id)
    except Internal:
        return
    if state is not None and state.get("status") == "running":
        ctr.state, ctr.started_at = "running", time.time_ns()
        await mgr.store.save(ctr)
        log.warning("container was started just before crispy stopped; recorded as running now",
                    extra={"fields": {"id": ctr.id}})


# ---- status ------------------------------------------------------------------------

def verbose_info(mgr: "PodManager", ctr: ContainerRecord) -> dict[str, Any]:
    return {
        "id": ctr.id,
        "sandboxID": ctr.sandbox_id,
        "pid": ctr.pid if ctr.state == "running" else 0,
        "conmonPid": ctr.conmon_pid,
        "runtimeSpec": str(Path(ctr.bundle) / "config.json"),
        "bundle": ctr.bundle,
        "rootfs": ctr.rootfs,
        "cgroupPath": ctr.cgroup_path,
        "ociRuntime": ctr.oci_runtime,
        "logPath": ctr.log_path,
        "stopSignal": ctr.stop_signal,
    }


def read_spec(ctr: ContainerRecord) -> dict[str, Any]:
    """Blocking."""
    with open(Path(ctr.bundle) / "config.json") as f:
        return json.load(f)


def config_of(ctr: ContainerRecord) -> pb.ContainerConfig:
    from google.protobuf import json_format
    return json_format.ParseDict(ctr.config, pb.ContainerConfig(), ignore_unknown_fields=True)


def require_running(ctr: ContainerRecord, what: str) -> None:
    if ctr.state != "running":
        raise FailedPrecondition(f"container {ctr.id[:13]} is {ctr.state}; {what} needs a running container")

