"""Pod sandboxes: the namespaces, files, /dev/shm and cgroup a pod's
containers share, from RunPodSandbox to RemovePodSandbox.

Every step of `run` registers its undo; a failure anywhere unwinds what was
done, so a failed RunPodSandbox leaves nothing behind. What a step's undo
needs is persisted before the step (runtime/pod_intent.py), so a crash
anywhere is undone by the next start's sweep. The `crashpoint`s name the
windows between steps for the crash tests (runtime/crashpoints.py).
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
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from google.protobuf import json_format

from runtime.errors import InvalidArgument, Unimplemented
from cri.proto import api_pb2 as pb
from runtime import kmount, namespaces, pod_files, pod_intent
from runtime.cni import host_network_status
from runtime.crashpoints import crashpoint
from runtime.network import PodNetworkRequest, PodNetworkStatus, PortMapping
from runtime.store import SandboxRecord, from_dict

if TYPE_CHECKING:
    from runtime.manager import PodManager

log = logging.getLogger("crispy.sandbox")

SHM_SIZE = 64 * 1024 * 1024  # Docker's and containerd's default pod /dev/shm
_PROTOCOLS = {pb.TCP: "tcp", pb.UDP: "udp", pb.SCTP: "sctp"}
_PID_MODES = {pb.POD: "pod", pb.CONTAINER: "container", pb.NODE: "node", pb.TARGET: "target"}


def to_json(message: Any) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def config_of(rec: SandboxRecord) -> pb.PodSandboxConfig:
    return json_format.ParseDict(rec.config, pb.PodSandboxConfig(), ignore_unknown_fields=True)


def validate(config: pb.PodSandboxConfig) -> None:
    md = config.metadata
    if not md.name or not md.namespace or not md.uid:
        raise InvalidArgument("PodSandboxConfig.metadata needs name, namespace and uid")
    ns = config.linux.security_context.namespace_options
    if ns.network == pb.TARGET or ns.ipc == pb.TARGET:
        raise InvalidArgument("namespace mode TARGET is only valid for the PID namespace of a container")
    if ns.pid == pb.TARGET:
        raise InvalidArgument("a pod sandbox cannot target another container's PID namespace; use POD, CONTAINER or NODE")
    if ns.HasField("userns_options") and ns.userns_options.mode == pb.POD:
        raise Unimplemented("user namespaces for pods are not supported by crispy yet; use the NODE user namespace")
    for pm in config.port_mappings:
        if pm.protocol not in _PROTOCOLS:
            raise InvalidArgument(f"port mapping protocol {pm.protocol} is unknown; use TCP, UDP or SCTP")
    _validate_hostname(config.hostname)
    if config.log_directory:
        _validate_log_directory(config.log_directory)
    if ".." in config.linux.cgroup_parent.split("/"):
        raise InvalidArgument(f"cgroup_parent {shown(config.linux.cgroup_parent)} must not contain '..'; "
                              f"name the cgroup by its path from the hierarchy's root")


def shown(text: str, limit: int = 256) -> str:
    """`text` quoted for an error message, cut short: the caller sent it and
    may have sent megabytes."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + f"... ({len(text)} characters)"


# The kernel's limit (HOST_NAME_MAX) for sethostname.
MAX_HOSTNAME = 64


def _validate_hostname(hostname: str) -> None:
    if len(hostname.encode()) > MAX_HOSTNAME:
        raise InvalidArgument(f"hostname {shown(hostname, MAX_HOSTNAME)} is {len(hostname.encode())} bytes; "
                              f"the kernel allows at most {MAX_HOSTNAME}")
    # It goes into /etc/hosts and /etc/hostname as a line of its own.
    if any(ch.isspace() or not ch.isprintable() for ch in hostname):
        raise InvalidArgument(f"hostname {hostname!r} must not contain whitespace or control characters")


def _validate_log_directory(path: str) -> None:
    # A relative one would land under crispy's working directory; '..'
    # would let container log paths name files outside the pod's logs.
    if not path.startswith("/"):
        raise InvalidArgument(f"log_directory {shown(path)} must be an absolute path (kubelet uses /var/log/pods/...)")
    if any(part in (".", "..") for part in path.split("/")):
        raise InvalidArgument(f"log_directory {shown(path)} must not contain '.' or '..' components")


def network_request(rec: SandboxRecord, config: pb.PodSandboxConfig) -> PodNetworkRequest:
    return PodNetworkRequest(
        sandbox_id=rec.id, netns_path=rec.namespaces.get("net", ""), pod_name=rec.name,
        pod_namespace=rec.namespace, pod_uid=rec.uid,
        port_mappings=[PortMapping(_PROTOCOLS[p.protocol], p.container_port, p.host_port, p.host_ip)
                       for p in config.port_mappings if p.host_port],
        cgroup_parent=rec.cgroup_parent)


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
                log.error("cleanup after a failed RunPodSandbox failed", extra={"fields": {"step": what, "error": str(e)}})


async def run(mgr: "PodManager", req: pb.RunPodSandboxRequest, request_digest: str) -> SandboxRecord:
    config = req.config
    validate(config)
    runtime_path = mgr.runtime_for_handler(req.runtime_handler)
    nsopt = config.linux.security_context.namespace_options
    md = config.metadata
    sandbox_id = secrets.token_hex(32)
    pod_dir = mgr.state_root / "pods" / sandbox_id
    rec = SandboxRecord(
        id=sandbox_id, name=md.name, namespace=md.namespace, uid=md.uid, attempt=md.attempt,
        config=to_json(config), runtime_handler=req.runtime_handler, oci_runtime=runtime_path,
        created_at=time.time_ns(), state="ready", pod_dir=str(pod_dir),
        host_network=nsopt.network == pb.NODE, host_ipc=nsopt.ipc == pb.NODE,
        pid_mode=_PID_MODES[nsopt.pid],
        request_digest=request_digest)
    if rec.pid_mode == "pod" and mgr.migration_warmup is not None:
        # The infra process will be moved into the pod's cgroup: start the
        # kernel's wait for that now (runtime/cgroups/warmup.py).
        mgr.migration_warmup.kick()
    undo = _Undo()
    join: asyncio.Future[None] | None = None
    try:
        # One mkdir on the state root (a tmpfs): not worth a thread hop.
        pod_dir.mkdir(parents=True, mode=0o700)
        undo.push("pod dir", lambda: asyncio.to_thread(shutil.rmtree, pod_dir, True))
        crashpoint("pod.after_dir")
        # Before the cgroup exists: the sweep must know to remove it. A tiny
        # file on the tmpfs, written inline like the mkdir.
        intent = pod_intent.PodIntent(cgroup_path=mgr.pod_cgroup_path(sandbox_id, config.linux.cgroup_parent))
        pod_intent.write(pod_dir, intent)
        crashpoint("pod.after_intent")
        # Host network means the node's hostname too (UTS goes with it).
        ns_req = namespaces.NamespaceRequest(
            net=not rec.host_network, ipc=not rec.host_ipc, uts=not rec.host_network,
            pod_pid=rec.pid_mode == "pod", hostname=config.hostname, sysctls=dict(config.linux.sysctls))
        dns = pod_files.DnsSettings(list(config.dns_config.servers), list(config.dns_config.searches),
                                    list(config.dns_config.options))
        # The namespaces, /dev/shm, the cgroup and the files that do not
        # depend on the pod's IPs are independent: made at once, the pod
        # waits for the slowest instead of their sum. Each that succeeded
        # registers its undo even when another failed.
        shm_path = "" if rec.host_ipc else str(pod_dir / "shm")
        ns_step = asyncio.ensure_future(namespaces.create(pod_dir, ns_req))
        cgroup_step = asyncio.ensure_future(mgr.cgroups_create_pod(rec, config.linux.cgroup_parent))
        # Moving a process between v1 cgroups waits for an RCU grace period
        # (often 10 ms); nothing else needs it, so it starts as soon as the
        # infra and the cgroup exist and runs alongside everything else.
        join = asyncio.ensure_future(_join_infra(mgr, rec, ns_step, cgroup_step))
        steps = asyncio.gather(
            ns_step, cgroup_step,
            asyncio.to_thread(_prepare_files, pod_dir, shm_path, config.hostname, dns),
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
            undo.push("cgroup", lambda: _remove_cgroup(mgr, rec, pinned))
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
            status = await mgr.daemon.network.setup(net_req, before_add=persist_network)
            crashpoint("pod.after_cni_add")
            rec.network_status = dataclasses.asdict(status)
            undo.push("network", lambda: mgr.daemon.network.teardown(network_request(rec, config), status))
        else:
            # Host-network pods skip CNI and report the node's own address.
            assert isinstance(host_status, PodNetworkStatus)
            rec.network_status = dataclasses.asdict(host_status)
        rec.hostname_path, rec.hosts_path, rec.resolv_conf_path = (
            files_made.hostname, files_made.hosts, files_made.resolv_conf)
        # /etc/hosts goes in the same thread hop as the record, just before it.
        crashpoint("pod.before_record")
        await mgr.store.save(rec, before=lambda: pod_files.write_hosts(files_made, config.hostname, pod_ips(rec)))
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


async def _nothing() -> None:
    return None


def _mount_shm(path: str) -> None:
    os.mkdir(path, 0o1777)
    kmount.mount("shm", path, "tmpfs", kmount.MS_NOSUID | kmount.MS_NODEV | kmount.MS_NOEXEC,
                 f"mode=1777,size={SHM_SIZE}")


def _prepare_files(pod_dir: Path, shm_path: str, hostname: str, dns: pod_files.DnsSettings) -> pod_files.PodFiles:
    """/dev/shm (unless `shm_path` is "") and the static pod files, in one
    thread hop. On failure nothing of it is left mounted."""
    if shm_path:
        _mount_shm(shm_path)
    try:
        return pod_files.write_static(pod_dir, hostname, dns)
    except BaseException:
        if shm_path:
            kmount.umount_all(shm_path)
        raise


async def _join_infra(mgr: "PodManager", rec: SandboxRecord, ns_step: "asyncio.Future[namespaces.PodNamespaces]",
                      cgroup_step: "asyncio.Future[None]") -> None:
    """The infra into the pod's cgroup once both exist. Never raises."""
    await asyncio.wait([ns_step, cgroup_step])
    if ns_step.cancelled() or cgroup_step.cancelled() or ns_step.exception() or cgroup_step.exception():
        return
    pid = ns_step.result().infra_pid
    if pid:
        try:
            await mgr.join_pod_cgroup(rec, pid, "infra")
        except Exception as e:  # noqa: BLE001 - best effort, as join_pod_cgroup itself
            log.warning("could not move the infra into the pod's cgroup", extra={"fields": {"pod": rec.id, "error": str(e)}})


async def _remove_cgroup(mgr: "PodManager", rec: SandboxRecord, pinned: namespaces.PodNamespaces) -> None:
    # The infra process lives in the pod cgroup, which cannot be removed
    # while it does (a failed network setup used to leak the cgroup).
    await namespaces.kill_infra(pinned)
    await mgr.cgroups_remove_pod(rec)


async def _drop_namespaces(pinned: namespaces.PodNamespaces) -> None:
    await namespaces.kill_infra(pinned)
    await namespaces.unpin(pinned)


def pinned_of(rec: SandboxRecord) -> namespaces.PodNamespaces:
    return from_dict(namespaces.PodNamespaces, rec.namespaces or {})


def pod_ips(rec: SandboxRecord) -> list[str]:
    st = rec.network_status or {}
    return [ip for ip in [st.get("ip", ""), *st.get("additional_ips", [])] if ip]


async def stop(mgr: "PodManager", rec: SandboxRecord) -> None:
    """Kills what runs in the pod and releases its network; the namespaces
    and files stay until RemovePodSandbox. Safe to repeat."""
    if rec.state == "ready":
        # NOT_READY from the first step on (the network may be gone before
        # the record is saved at the end), and after a crash in between too.
        _mark_stopping(rec)
        rec.state = "notready"
    # kubelet has normally stopped each container with its own grace period
    # already; stragglers get the stop signal and runtime.default_stop_timeout,
    # all at once, then SIGKILL.
    grace = float(mgr.daemon.config.runtime.default_stop_timeout)
    results = await asyncio.gather(*(mgr.stop_container_record(ctr, grace, skip_futile=True)
                                     for ctr in mgr.containers_of(rec.id)), return_exceptions=True)
    for r in results:
        if isinstance(r, BaseException):
            raise r
    crashpoint("pod.stop.after_containers")
    if rec.network_status is not None:
        status = PodNetworkStatus(**rec.network_status)
        await mgr.daemon.network.teardown(network_request(rec, config_of(rec)), status)
        crashpoint("pod.stop.after_cni_del")
        rec.network_status = None
    await namespaces.kill_infra(pinned_of(rec))
    rec.state = "notready"
    crashpoint("pod.stop.before_record")
    await mgr.store.save(rec)


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


async def remove(mgr: "PodManager", rec: SandboxRecord) -> None:
    if rec.state == "ready" or rec.network_status is not None:
        await stop(mgr, rec)
    for ctr in mgr.containers_of(rec.id):
        await mgr.remove_container_record(ctr)
    pinned = pinned_of(rec)
    await namespaces.kill_infra(pinned)
    await namespaces.unpin(pinned)
    crashpoint("pod.remove.after_unpin")
    if rec.shm_path:
        await asyncio.to_thread(kmount.umount_all, rec.shm_path)
    await mgr.cgroups_remove_pod(rec)
    crashpoint("pod.remove.after_cgroup")
    if rec.pod_dir:
        await asyncio.to_thread(_remove_pod_dir, Path(rec.pod_dir))
    crashpoint("pod.remove.before_record")
    await mgr.store.delete(rec)
    log.info("pod sandbox removed", extra={"fields": {"id": rec.id}})


def _remove_pod_dir(pod_dir: Path) -> None:
    # Never recurse into something still mounted (a pinned namespace or
    # /dev/shm that failed to unmount): rmtree would fail or, worse, empty it.
    if pod_dir.exists() and kmount.mounts_under(str(pod_dir)):
        raise OSError(f"{pod_dir} still has mounts: {kmount.mounts_under(str(pod_dir))}")
    shutil.rmtree(pod_dir, ignore_errors=True)


def is_ready(rec: SandboxRecord) -> bool:
    return rec.state == "ready"


def verbose_info(mgr: "PodManager", rec: SandboxRecord) -> dict[str, Any]:
    pinned = pinned_of(rec)
    infra = pinned.infra_pid if namespaces.infra_alive(pinned) else 0
    ctr_pids = {c.id: c.pid for c in mgr.containers_of(rec.id) if c.state == "running"}
    return {
        "id": rec.id,
        "pid": infra,
        # Every live process crispy started for the pod: infra, then containers.
        "pids": ([infra] if infra else []) + list(ctr_pids.values()),
        "containerPids": ctr_pids,
        "infraAlive": namespaces.infra_alive(pinned),
        "namespaces": pinned.paths(),
        "pidMode": rec.pid_mode,
        "cgroupParent": rec.cgroup_parent,
        "cgroupPath": rec.cgroup_path,
        "shm": rec.shm_path,
        "podDir": rec.pod_dir,
        "runtimeHandler": rec.runtime_handler,
        "ociRuntime": rec.oci_runtime,
        "network": rec.network_status,
        "files": {"hostname": rec.hostname_path, "hosts": rec.hosts_path, "resolv.conf": rec.resolv_conf_path},
    }
