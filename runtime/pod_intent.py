"""What RunPodSandbox is about to do to the node, written down before it
does it.

The pod's record is saved last, so a crash in the middle of RunPodSandbox
leaves a pod directory with no record. Mounts and processes can be found
from that directory alone, but an IP reservation, NAT rules or a cgroup
cannot: undoing them needs the network config, the attachment (netns,
interface, port mappings) and the cgroup path. Each is persisted here
before the step that makes it, so the start-up sweep
(runtime/sandbox_orphans.py) can undo every step that may have happened.

The file lives in the pod's state directory and goes with it; once the
record exists it is no longer read.

StopPodSandbox's intent is an empty file of its own next to it, made before
anything is torn down: the record (NOT_READY) is saved only at the stop's
end, and a crispy restarted in between learns from the file that the pod
may have lost its network or processes and reports it NOT_READY
(runtime/recovery.py). A file of its own because making an empty file costs
~20 us, while rewriting intent.json (a rename over the old one) makes ext4
flush it, ~0.3-0.7 ms here, on every StopPodSandbox.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime import atomicfile
from runtime.network import PodNetworkRequest, PortMapping

log = logging.getLogger("crispy.sandbox")

FILE_NAME = "intent.json"
STOPPING_NAME = "stopping"


@dataclass
class PodIntent:
    # A cgroup crispy makes for the pod (and so must remove); "" when the
    # pod lives in a cgroup kubelet owns.
    cgroup_path: str = ""
    # PodNetworkRequest fields for DEL: the attachment (netns, ports, names).
    network_request: dict[str, Any] = field(default_factory=dict)
    # The provider's teardown state (PodNetworkStatus.state): for CNI, the
    # exact config ADD is about to use.
    network_state: dict[str, Any] = field(default_factory=dict)

    def request(self) -> PodNetworkRequest | None:
        if not self.network_request:
            return None
        fields = dict(self.network_request)
        fields["port_mappings"] = [PortMapping(**p) for p in fields.get("port_mappings", [])]
        return PodNetworkRequest(**fields)


def path_of(pod_dir: Path) -> Path:
    return pod_dir / FILE_NAME


def write(pod_dir: Path, intent: PodIntent) -> None:
    """Blocking, but small. Written to a temp name and renamed, so a crash
    mid-write leaves the previous intent, never a torn one. Not fsynced
    (about 1 ms a write on a disk): the state root is meant to be a tmpfs,
    whose content a crash of crispy keeps and a reboot loses anyway."""
    path = path_of(pod_dir)
    tmp = path.with_name(f".{FILE_NAME}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, json.dumps(dataclasses.asdict(intent)).encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)


def with_network(intent: PodIntent, req: PodNetworkRequest, state: dict[str, Any]) -> PodIntent:
    return dataclasses.replace(intent, network_request=dataclasses.asdict(req), network_state=dict(state))


def mark_stopping(pod_dir: Path) -> None:
    """Blocking, small. Raises FileNotFoundError if the pod's directory is gone."""
    os.close(os.open(pod_dir / STOPPING_NAME, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))


def stopping(pod_dir: Path) -> bool:
    return os.path.lexists(pod_dir / STOPPING_NAME)


def read(pod_dir: Path) -> PodIntent | None:
    """None when there is none; an unreadable one is logged and treated as
    empty (its steps are then undone as far as the directory shows)."""
    try:
        raw = atomicfile.read_json(path_of(pod_dir))
    except (OSError, ValueError) as e:
        log.error("unreadable pod intent file", extra={"fields": {"path": str(path_of(pod_dir)), "error": str(e)}})
        return PodIntent()
    if raw is None:
        return None
    if not isinstance(raw, dict):
        return PodIntent()
    known = {f.name for f in dataclasses.fields(PodIntent)}
    try:
        return PodIntent(**{k: v for k, v in raw.items() if k in known})
    except TypeError:
        return PodIntent()
