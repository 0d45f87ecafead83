"""Sandbox and container records: one crash-safe JSON file each under the
data root, written on every state change and read back when crispy starts.

Records live on persistent disk (not the state root, a tmpfs) so that after
a node reboot kubelet still sees its old containers, as exited, and can
remove them.

Each record says which version of this layout wrote it (`schema`). Records
from before the key existed (version 0: the same fields) load as they are,
keys this crispy does not know are ignored, and a record from a newer
schema is refused and left alone: read with today's field meanings it
could be misread, and acted on (a container swept, a pod torn down).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TypeVar

from runtime import atomicfile, private_dirs
from runtime.states import ContainerState, PodState, set_container_state, set_pod_state

log = logging.getLogger("crispy.store")

T = TypeVar("T")

# The version of the record layout this crispy writes and understands.
SCHEMA = 1

# Field metadata for a field added after schema 1: a record loaded without
# it is written back without it while it stays empty, so a record that
# never used the later feature stays what the crispy before it wrote (a
# downgrade reads it unchanged). Records made here are written whole.
OMIT_EMPTY = {"omit_empty": True}
# The attribute (not a field) naming such fields a loaded record lacked.
_UNWRITTEN = "_unwritten_fields"


@dataclass
class SandboxRecord:
    id: str
    name: str
    namespace: str
    uid: str
    attempt: int
    # The CRI PodSandboxConfig as proto JSON (field names as in the proto).
    config: dict[str, Any]
    runtime_handler: str
    oci_runtime: str  # path of the runtime binary for this pod's containers
    created_at: int  # ns since the epoch
    state: PodState = PodState.READY
    pod_dir: str = ""
    namespaces: dict[str, Any] = field(default_factory=dict)  # namespaces.PodNamespaces
    host_network: bool = False
    host_ipc: bool = False
    pid_mode: str = "container"  # "pod" | "container" | "node"
    network_status: dict[str, Any] | None = None  # network.PodNetworkStatus once set up
    hostname_path: str = ""
    hosts_path: str = ""
    resolv_conf_path: str = ""
    shm_path: str = ""
    cgroup_parent: str = ""
    cgroup_path: str = ""
    # Fingerprint of the request that made it, to tell a retry from a clash.
    request_digest: str = ""
    schema: int = SCHEMA

    def __post_init__(self) -> None:
        # Loaded records (and tests) hold the state as its string.
        self.state = PodState(self.state)


@dataclass
class ContainerRecord:
    id: str
    sandbox_id: str
    name: str
    attempt: int
    config: dict[str, Any]  # the CRI ContainerConfig as proto JSON
    created_at: int
    image: str = ""  # the image as the caller named it
    image_id: str = ""  # the store's image id (ImageStatus/ListImages report the same)
    image_ref: str = ""  # repo digest, or the id when the image has none
    state: ContainerState = ContainerState.CREATED
    started_at: int = 0
    finished_at: int = 0
    exit_code: int = 0
    reason: str = ""
    message: str = ""
    pid: int = 0
    conmon_pid: int = 0
    conmon_start_time: int = 0
    bundle: str = ""
    rootfs: str = ""
    container_dir: str = ""  # data-root dir: upper/work of the rootfs
    log_path: str = ""  # absolute CRI log path ("" when the pod keeps no logs)
    cgroup_path: str = ""
    oci_runtime: str = ""
    stop_signal: str = ""
    resources: dict[str, Any] = field(default_factory=dict)  # LinuxContainerResources as proto JSON
    user: dict[str, Any] = field(default_factory=dict)  # {"uid", "gid", "supplemental_groups"}
    mounts: list[dict[str, Any]] = field(default_factory=list)  # CRI Mounts as proto JSON
    # Image volumes (runtime/image_volumes.py record_entry): what to unmount
    # at remove and which images RemoveImage must keep.
    image_volumes: list[dict[str, Any]] = field(default_factory=list, metadata=OMIT_EMPTY)
    request_digest: str = ""
    schema: int = SCHEMA

    def __post_init__(self) -> None:
        self.state = ContainerState(self.state)


def _then_write(before: Callable[[], None], path: Path, data: bytes) -> None:
    before()
    atomicfile.write_bytes(path, data)


def encode(record: SandboxRecord | ContainerRecord) -> bytes:
    """The record as compact JSON, made on the caller's thread so that a
    concurrent change to the record cannot tear it. Not dataclasses.asdict
    (a deep copy, ~0.4 ms a container record) nor an indented dump (the
    pure-Python encoder, ~0.25 ms): the fields hold only JSON values, and
    this is ~0.07 ms, which every Create/Start/Stop pays."""
    unwritten = getattr(record, _UNWRITTEN, ())
    fields = {f.name: getattr(record, f.name) for f in dataclasses.fields(record)
              if not (f.name in unwritten and not getattr(record, f.name))}
    return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()


def from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Builds a record, ignoring keys a newer crispy may have written."""
    # T is unbound, but every record type passed here is a dataclass.
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    names = {f.name for f in fields}
    rec = cls(**{k: v for k, v in data.items() if k in names})
    unwritten = frozenset(f.name for f in fields if f.metadata.get("omit_empty") and f.name not in data)
    if unwritten:
        setattr(rec, _UNWRITTEN, unwritten)
    return rec


class NewerSchema(ValueError):
    """A record written by a crispy newer than this one."""


def record_from(cls: type[T], data: dict[str, Any]) -> T:
    """A stored record as this crispy's dataclass; NewerSchema if it cannot
    know what the record's fields mean."""
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    version = data.get("schema", 0)
    if not isinstance(version, int) or version < 0:
        raise ValueError(f"schema {version!r} is not a version number")
    if version > SCHEMA:
        raise NewerSchema(f"written with record schema {version}; this crispy knows up to {SCHEMA}")
    # Version 0 has the same fields; it is written back as SCHEMA.
    return from_dict(cls, {**data, "schema": SCHEMA})


class RecordStore:
    """Blocking file I/O is pushed to a thread; callers serialise writes to
    one record themselves (per-object locks in the manager)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.pods_dir = root / "pods"
        self.containers_dir = root / "containers"
        # One writer per record at a time (the exit watcher and an RPC may
        # save the same container together); each write takes the record as
        # it is when the write starts, so the last write holds the latest.
        self._write_locks: dict[str, asyncio.Lock] = {}
        # Ids of records the last load refused (a newer schema): their pods
        # and containers must be left alone, not swept as leftovers.
        self.refused: set[str] = set()

    def prepare(self) -> None:
        # Records hold container configs, environment (secrets) included.
        for d in (self.pods_dir, self.containers_dir):
            private_dirs.ensure_private(d)

    def _lock(self, record_id: str) -> asyncio.Lock:
        lk = self._write_locks.get(record_id)
        if lk is None:
            lk = self._write_locks[record_id] = asyncio.Lock()
        return lk

    async def save(self, record: SandboxRecord | ContainerRecord, before: Callable[[], None] | None = None) -> None:
        """`before`: blocking work that must be on disk before the record is
        (its files), run first in the same thread hop."""
        directory = self.pods_dir if isinstance(record, SandboxRecord) else self.containers_dir
        async with self._lock(record.id):
            data = encode(record)
            path = directory / f"{record.id}.json"
            if before is None:
                await asyncio.to_thread(atomicfile.write_bytes, path, data)
            else:
                await asyncio.to_thread(_then_write, before, path, data)

    async def move_pod(self, rec: SandboxRecord, new: PodState) -> None:
        """A pod's change of state, checked (runtime/states.py), made and
        saved in one step."""
        set_pod_state(rec, new)
        await self.save(rec)

    async def move_container(self, ctr: ContainerRecord, new: ContainerState, *, at: int = 0,
                             exit_code: int | None = None, reason: str | None = None) -> None:
        """A container's change of state, checked, made (with the fields that
        go with it) and saved in one step."""
        set_container_state(ctr, new, at=at, exit_code=exit_code, reason=reason)
        await self.save(ctr)

    async def delete(self, record: SandboxRecord | ContainerRecord) -> None:
        directory = self.pods_dir if isinstance(record, SandboxRecord) else self.containers_dir
        async with self._lock(record.id):
            await asyncio.to_thread(lambda: (directory / f"{record.id}.json").unlink(missing_ok=True))
        self._write_locks.pop(record.id, None)

    def load(self) -> tuple[list[SandboxRecord], list[ContainerRecord]]:
        self.refused = set()
        return self._load(self.pods_dir, SandboxRecord), self._load(self.containers_dir, ContainerRecord)

    def _load(self, directory: Path, cls: type[T]) -> list[T]:
        out = []
        for entry in sorted(os.listdir(directory)) if directory.is_dir() else []:
            if not entry.endswith(".json") or entry.startswith("."):
                continue
            try:
                out.append(record_from(cls, atomicfile.read_json(directory / entry)))
            except NewerSchema as e:
                self.refused.add(entry[:-len(".json")])
                log.error("leaving alone a record this crispy is too old to read; upgrade crispy to manage it",
                          extra={"fields": {"path": str(directory / entry), "error": str(e)}})
            except (ValueError, TypeError, json.JSONDecodeError) as e:
                # One unreadable record must not keep the node from starting.
                log.error("skipping unreadable record",
                          extra={"fields": {"path": str(directory / entry), "error": str(e)}})
        return out
