"""An in-memory OCI runtime for tests that run without root: the whole
`runtime.oci.interface.OciRuntime`, no conmon, no processes for
containers. tests/integration/test_oci_contract.py holds it to the contract runc
keeps where callers depend on it (states, kill's answer, idempotent delete).

Failures to inject, set on the instance:
  fail_create = "message"   the create fails (release raises OciRuntimeError)
  fail_start = "message"    start fails, the container exits with 128
  kill_hangs = True         kill never returns (until cancelled)

ExecSync and streaming exec run the process's args on the host (not in any
container), with its pid in the pid file, as the runtime's exec would.
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import os
import signal as signals
import sys
from dataclasses import dataclass, field
from typing import Any

from runtime.oci.interface import (
    Created,
    CreateParams,
    OciRuntime,
    OciRuntimeError,
    OnMonitor,
    PendingCreate,
    RuntimeKind,
)

# Reads the OCI process JSON, writes its pid where asked, becomes the process.
_EXEC = """
import json, os, sys
process = json.load(open(sys.argv[1]))
if sys.argv[2]:
    open(sys.argv[2], "w").write(str(os.getpid()))
if process.get("cwd"):
    os.chdir(process["cwd"])
os.execvp(process["args"][0], process["args"])
"""

_pids = itertools.count(4_000_000)  # past pid_max: never a live process's pid


@dataclass
class FakeContainer:
    id: str
    bundle: str
    pid: int
    status: str = "created"  # created, running, stopped (runc's words)
    exit_code: int | None = None
    resources: dict[str, Any] = field(default_factory=dict)


class _FakePending(PendingCreate):
    def __init__(self, runtime: FakeOciRuntime, params: CreateParams) -> None:
        self._runtime = runtime
        self._params = params
        self._pid = next(_pids)
        self.aborted = False
        self.released = False

    @property
    def pid(self) -> int:
        return self._pid

    async def release(self, on_monitor: OnMonitor | None = None, timeout: float = 120.0) -> Created:
        if self.aborted or self.released:
            raise OciRuntimeError("the create was already released or aborted")
        self.released = True
        rt = self._runtime
        if rt.fail_create is not None:
            raise OciRuntimeError(f"creating the container failed: {rt.fail_create}")
        if self._params.container_id in rt.containers:
            raise OciRuntimeError(f"container {self._params.container_id!r} already exists")
        monitor = next(_pids)
        if on_monitor is not None:
            await on_monitor(monitor, 1)
        ctr = FakeContainer(self._params.container_id, self._params.bundle, next(_pids))
        rt.containers[ctr.id] = ctr
        return Created(ctr.pid, monitor, 1)

    async def abort(self) -> None:
        self.aborted = True


class FakeOciRuntime(OciRuntime):
    kind = RuntimeKind.OTHER

    def __init__(self, path: str = "/fake/oci-runtime", root: str = "/fake/root") -> None:
        self.path = path
        self.root = root
        self.version = "fake"
        self.containers: dict[str, FakeContainer] = {}
        self.fail_create: str | None = None
        self.fail_start: str | None = None
        self.kill_hangs = False
        self.reopened: list[str] = []

    @property
    def exe(self) -> str:
        return sys.executable

    async def begin_create(self, params: CreateParams) -> PendingCreate:
        return _FakePending(self, params)

    def _get(self, container_id: str, what: str) -> FakeContainer:
        ctr = self.containers.get(container_id)
        if ctr is None:
            raise OciRuntimeError(f"fake {what} failed: container {container_id!r} does not exist")
        return ctr

    async def start(self, container_id: str) -> None:
        ctr = self._get(container_id, "start")
        if ctr.status != "created":
            raise OciRuntimeError(f"fake start failed: container {container_id!r} is {ctr.status}, not created")
        if self.fail_start is not None:
            ctr.status, ctr.exit_code = "stopped", 128
            raise OciRuntimeError(f"fake start failed: {self.fail_start}")
        ctr.status = "running"

    async def kill(self, container_id: str, signal: int | str, all_processes: bool = False) -> bool:
        ctr = self.containers.get(container_id)
        if ctr is None or ctr.status == "stopped":
            return False
        if self.kill_hangs:
            await asyncio.Event().wait()
        signum = int(signal) if str(signal).isdigit() else int(signals.Signals[str(signal)])
        ctr.status, ctr.exit_code = "stopped", 128 + signum
        return True

    async def delete(self, container_id: str) -> None:
        self.containers.pop(container_id, None)

    async def state(self, container_id: str) -> dict[str, Any] | None:
        ctr = self.containers.get(container_id)
        if ctr is None:
            return None
        return {"ociVersion": "1.0.2", "id": ctr.id, "status": ctr.status,
                "pid": ctr.pid if ctr.status != "stopped" else 0, "bundle": ctr.bundle}

    async def update(self, container_id: str, resources: dict[str, Any]) -> None:
        ctr = self._get(container_id, "update")
        if ctr.status == "stopped":
            raise OciRuntimeError(f"fake update failed: container {container_id!r} is not running")
        ctr.resources = dict(resources)

    def exec_argv(self, container_id: str, process_json: str, pid_file: str) -> list[str]:
        self._get(container_id, "exec")
        return [self.exe, "-c", _EXEC, process_json, pid_file]

    def exec_session_argv(self, process_json: str) -> list[str]:
        # The session appends the container id (and terminal options, which
        # this fake does not offer): the script ignores what follows.
        return [self.exe, "-c", _EXEC, process_json, ""]

    def attach_socket(self, bundle: str) -> str:
        return os.path.join(bundle, "attach")

    def control_fifo(self, bundle: str) -> str:
        return os.path.join(bundle, "ctl")

    async def reopen_log(self, bundle: str) -> None:
        if not any(c.bundle == bundle and c.status != "stopped" for c in self.containers.values()):
            raise OSError(errno.ENXIO, "no monitor listens on the control FIFO")
        self.reopened.append(bundle)
