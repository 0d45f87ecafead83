"""The one interface crispy uses to run containers through an OCI runtime.

The lifecycle, ExecSync, streaming exec and attach only see `OciRuntime`:
runc and crun (runtime/oci/runc.py, crun.py) create through conmon, so
that conmon and not crispy is the container's parent; the test fake
(tests/fake_oci_runtime.py) keeps containers in memory.

A create has two halves on purpose: `begin_create` starts the creator,
which waits before forking anything, so that the caller can move it into
the pod's cgroup and finish the bundle (rootfs, spec) meanwhile; then
`PendingCreate.release` lets it create, or `abort` kills it.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from runtime.errors import Internal


class OciRuntimeError(Internal):
    """The runtime refused; the message carries its stderr."""

    def __init__(self, message: str, stderr: str = "") -> None:
        super().__init__(message)
        self.stderr = stderr


class RuntimeKind(enum.Enum):
    """What a runtime binary is, whatever its file is called."""
    RUNC = "runc"
    CRUN = "crun"
    # Speaks runc's command line (we hope); gets no fast path.
    OTHER = "other"


@dataclass(frozen=True)
class CreateParams:
    """What a create needs besides the runtime: where the bundle is, where
    the container's output, exit status and pid go."""
    conmon: str  # the conmon binary (the fake ignores it)
    container_id: str
    name: str
    bundle: str
    log_path: str
    exit_dir: str
    persist_dir: str
    container_pidfile: str
    conmon_pidfile: str
    socket_dir: str
    stdin: bool = False
    stdin_once: bool = False
    tty: bool = False
    systemd_cgroup: bool = False
    log_level: str = "error"


@dataclass
class Created:
    """What a finished create learns: the container's init, and its
    monitor (conmon's process that stays)."""
    pid: int
    monitor_pid: int
    monitor_start_time: int  # ticks since boot: tells a reused pid apart


# Runs once the monitor exists, while the runtime is still creating:
# (monitor pid, monitor start time).
OnMonitor = Callable[[int, int], Awaitable[None]]


class PendingCreate(abc.ABC):
    """A creator started and held before it forks anything."""

    @property
    @abc.abstractmethod
    def pid(self) -> int:
        """The process started, to move into a cgroup early."""

    @abc.abstractmethod
    async def release(self, on_monitor: OnMonitor | None = None, timeout: float = 120.0) -> Created:
        """Lets the create run and returns once it is done. Raises Internal
        with the runtime's message on failure."""

    @abc.abstractmethod
    async def abort(self) -> None:
        """Kills a creator that was never released; idempotent."""


class OciRuntime(abc.ABC):
    """A runtime binary and its state directory under crispy's state root."""

    # The binary on disk: what records and configuration name.
    path: str
    # The runtime's state directory (`--root`).
    root: str
    kind: RuntimeKind
    version: str

    @property
    def name(self) -> str:
        """For messages: what the binary is (runc, crun), else its file name."""
        return self.kind.value if self.kind is not RuntimeKind.OTHER else self.path.rsplit("/", 1)[-1]

    @abc.abstractmethod
    async def begin_create(self, params: CreateParams) -> PendingCreate: ...

    @abc.abstractmethod
    async def start(self, container_id: str) -> None: ...

    @abc.abstractmethod
    async def kill(self, container_id: str, signal: int | str, all_processes: bool = False) -> bool:
        """False if the container is already gone or stopped."""

    @abc.abstractmethod
    async def delete(self, container_id: str) -> None:
        """Idempotent: a container the runtime does not know is fine."""

    @abc.abstractmethod
    async def state(self, container_id: str) -> dict[str, Any] | None:
        """The runtime's state document, None if it does not know the container."""

    @abc.abstractmethod
    async def update(self, container_id: str, resources: dict[str, Any]) -> None:
        """Applies an OCI LinuxResources document."""

    @abc.abstractmethod
    def exec_argv(self, container_id: str, process_json: str, pid_file: str) -> list[str]:
        """The command ExecSync runs: the process in `process_json`, its host
        pid written to `pid_file`."""

    @abc.abstractmethod
    def exec_session_argv(self, process_json: str) -> list[str]:
        """The start of a streaming exec's command; the session adds its
        terminal options and the container id."""

    @abc.abstractmethod
    def attach_socket(self, bundle: str) -> str:
        """The SOCK_SEQPACKET socket that carries the container's stdio."""

    @abc.abstractmethod
    def control_fifo(self, bundle: str) -> str:
        """Where terminal resizes (and log reopens) are asked for."""

    @abc.abstractmethod
    async def reopen_log(self, bundle: str) -> None:
        """Asks the container's monitor to reopen the log at its path.
        Raises OSError if no monitor listens."""
