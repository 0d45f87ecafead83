"""A container's ContainerConfig turned into what the lifecycle needs: its
stop signal, its log path, the pod it sees, its OCI spec on disk, and the
verbose status."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

from cri.proto import api_pb2 as pb
from runtime import idmapped
from runtime.errors import FailedPrecondition, InvalidArgument
from runtime.oci_spec import ContainerSpecRequest, SandboxView, build_spec
from runtime.pod_config import config_of, shown
from runtime.pod_view import pinned_of
from runtime.states import ContainerState
from runtime.store import ContainerRecord, SandboxRecord


def sandbox_view(rec: SandboxRecord, config: pb.PodSandboxConfig | None = None) -> SandboxView:
    """`config`: the pod's config if the caller has it parsed already."""
    if config is None:
        config = config_of(rec)
    return SandboxView(
        id=rec.id, config=config, hostname=config.hostname, namespaces=pinned_of(rec).paths(),
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


def log_path(pod_config: pb.PodSandboxConfig, config: pb.ContainerConfig, bundle: Path) -> str:
    if pod_config.log_directory and config.log_path:
        if not os.path.isabs(pod_config.log_directory):
            # A pod recorded before log directories were checked.
            raise InvalidArgument(f"the pod's log_directory {pod_config.log_directory!r} is not absolute; "
                                  f"recreate the pod with an absolute one")
        if os.path.isabs(config.log_path) or ".." in Path(config.log_path).parts:
            raise InvalidArgument(f"log_path {shown(config.log_path)} must be relative to the pod's log_directory")
        if config.log_path.endswith("/") or not Path(config.log_path).parts:
            raise InvalidArgument(f"log_path {shown(config.log_path)} must name a file under the pod's log_directory")
        return os.path.join(pod_config.log_directory, config.log_path)
    # No log asked for: conmon still needs somewhere to write.
    return str(bundle / "container.log")


# Under the bundle: ID-mapped views of a user-namespaced container's volumes.
IDMAPPED_VOLUMES = "volumes-idmapped"


def write_spec(spec_req: ContainerSpecRequest, spec_path: Path, userns_path: str = "") -> dict[str, Any]:
    """Blocking: the spec built and written. `userns_path`: the pod's user
    namespace, through which the container's volumes are then mapped."""
    spec = build_spec_for(spec_req, spec_path, userns_path)
    save_spec(spec, spec_path)
    return spec


def build_spec_for(spec_req: ContainerSpecRequest, spec_path: Path, userns_path: str = "") -> dict[str, Any]:
    """Blocking: write_spec without the write (NRI plugins adjust it first)."""
    spec = build_spec(spec_req)
    if userns_path:
        idmap_volumes(spec, spec_req.config, spec_path.parent / IDMAPPED_VOLUMES, userns_path)
    return spec


def save_spec(spec: dict[str, Any], spec_path: Path) -> None:
    """Blocking."""
    spec_path.write_text(json.dumps(spec))


def idmap_volumes(spec: dict[str, Any], config: pb.ContainerConfig, view_dir: Path, userns_path: str) -> None:
    """Points each private-propagation volume (kubelet's emptyDir, hostPath,
    configMap...) at an ID-mapped view of it, so a file owned by host ID n
    shows as n inside the pod's user namespace (fsGroup ownership that
    kubelet set included) and what the container writes lands with those
    IDs on the node. runc before 1.2 cannot map mounts itself. A volume with
    host propagation keeps its plain bind: a view of it would be a private
    copy that no longer receives the host's new mounts. The views are
    unmounted with the bundle (ContainerService._remove_files)."""
    private = {m.container_path for m in config.mounts if m.propagation == pb.PROPAGATION_PRIVATE}
    for i, mount in enumerate(m for m in spec["mounts"] if m.get("type") == "bind"):
        if mount["destination"] not in private:
            continue
        view = view_dir / str(i)
        view_dir.mkdir(mode=0o700, exist_ok=True)
        if os.path.isdir(mount["source"]):
            view.mkdir(mode=0o700)
        else:
            os.close(os.open(view, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
        idmapped.bind(mount["source"], str(view), userns_path)
        mount["source"] = str(view)


def read_spec(ctr: ContainerRecord) -> dict[str, Any]:
    """Blocking."""
    with open(Path(ctr.bundle) / "config.json") as f:
        return json.load(f)


def require_running(ctr: ContainerRecord, what: str) -> None:
    if ctr.state != ContainerState.RUNNING:
        raise FailedPrecondition(f"container {ctr.id[:13]} is {ctr.state}; {what} needs a running container")


def verbose_info(ctr: ContainerRecord) -> dict[str, Any]:
    return {
        "id": ctr.id,
        "sandboxID": ctr.sandbox_id,
        "pid": ctr.pid if ctr.state == ContainerState.RUNNING else 0,
        "conmonPid": ctr.conmon_pid,
        "runtimeSpec": str(Path(ctr.bundle) / "config.json"),
        "bundle": ctr.bundle,
        "rootfs": ctr.rootfs,
        "cgroupPath": ctr.cgroup_path,
        "ociRuntime": ctr.oci_runtime,
        "logPath": ctr.log_path,
        "stopSignal": ctr.stop_signal,
    }
