"""The command line runc and crun share (and any runtime that copies it):
start, kill, delete, state, exec and update, with all runtime state under
crispy's state root (`--root`), never the runtime's default /run/runc or
/run/crun. `create` runs under conmon, so that conmon is the parent of the
container process (runtime/oci/conmon.py); the bundle's `attach` socket and
`ctl` FIFO are conmon's too.

`CliRuntime` is what an unknown binary gets; runc.py and crun.py add what
each one allows beyond it.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

from runtime.oci import conmon
from runtime.oci.interface import (
    Created,
    CreateParams,
    OciRuntime,
    OciRuntimeError,
    OnMonitor,
    PendingCreate,
    RuntimeKind,
)
from runtime.oci.sealed_binary import SealedBinaries
from runtime.telemetry import NO_TELEMETRY, Telemetry


def _not_found(stderr: str) -> bool:
    s = stderr.lower()
    return "does not exist" in s or "not found" in s or "no such file" in s


def _already_exited(stderr: str) -> bool:
    # runc says "not running"/"process already finished"; crun 1.8 fails to
    # open a pidfd for the exited init with ESRCH ("No such process").
    s = stderr.lower()
    return "not running" in s or "process already finished" in s or "no such process" in s


def root_for(path: str, state_root: Path) -> str:
    """One state directory per runtime binary, so runc and crun never read
    each other's state. By file name: containers already running keep
    their state where earlier crispy versions put it."""
    return str(state_root / "oci" / os.path.basename(path))


class _ConmonPending(PendingCreate):
    def __init__(self, pending: conmon.PendingConmon, conmon_pidfile: str) -> None:
        self._pending = pending
        self._pidfile = conmon_pidfile

    @property
    def pid(self) -> int:
        return self._pending.pid

    async def release(self, on_monitor: OnMonitor | None = None, timeout: float = 120.0) -> Created:
        return await conmon.release(self._pending, self._pidfile, timeout=timeout, on_monitor=on_monitor)

    async def abort(self) -> None:
        await conmon.abort(self._pending)


class CliRuntime(OciRuntime):
    kind = RuntimeKind.OTHER
    # The factory gives each runtime the daemon's (runtime/telemetry.py).
    telemetry: Telemetry = NO_TELEMETRY

    def __init__(self, path: str, root: str, sealed: SealedBinaries | None = None, version: str = "unknown") -> None:
        self.path = path
        self.root = root
        self.version = version
        # Where `exe` comes from: a sealed copy of `path`, else `path`.
        self._sealed = sealed

    @classmethod
    def under(cls, path: str, state_root: Path, sealed: SealedBinaries | None = None,
              version: str = "unknown") -> CliRuntime:
        return cls(path, root_for(path, state_root), sealed, version)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(path={self.path!r}, root={self.root!r})"

    @property
    def exe(self) -> str:
        """What is executed: the sealed copy of `path` when there is one
        (looked up each time, so an upgraded binary is copied again)."""
        return self._sealed.exe(self.path) if self._sealed is not None else self.path

    def global_args(self) -> list[str]:
        return [self.exe, "--root", self.root]

    async def _run(self, *args: str, stdin: bytes | None = None, timeout: float = 60.0) -> tuple[int, str, str]:
        started = time.perf_counter()
        rc = -1
        try:
            rc, out, err = await self._exec(*args, stdin=stdin, timeout=timeout)
        finally:
            self.telemetry.oci_call(self.name, args[0] if args else "", rc == 0, time.perf_counter() - started)
        return rc, out, err

    async def _exec(self, *args: str, stdin: bytes | None = None, timeout: float = 60.0) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            *self.global_args(), *args,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            async with asyncio.timeout(timeout):
                out, err = await proc.communicate(stdin)
        except BaseException:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            raise
        return proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace").strip()

    async def _check(self, *args: str, stdin: bytes | None = None, timeout: float = 60.0) -> str:
        rc, out, err = await self._run(*args, stdin=stdin, timeout=timeout)
        if rc != 0:
            raise OciRuntimeError(f"{self.name} {args[0]} failed: {_clean(err) or f'exit status {rc}'}", err)
        return out

    # ---- create, through conmon ----------------------------------------------

    def conmon_argv(self, p: CreateParams) -> list[str]:
        return conmon.create_argv(conmon.ConmonCreate(
            conmon=p.conmon, runtime=self, container_id=p.container_id, name=p.name, bundle=p.bundle,
            log_path=p.log_path, exit_dir=p.exit_dir, persist_dir=p.persist_dir,
            container_pidfile=p.container_pidfile, conmon_pidfile=p.conmon_pidfile, socket_dir=p.socket_dir,
            stdin=p.stdin, stdin_once=p.stdin_once, tty=p.tty, systemd_cgroup=p.systemd_cgroup,
            log_level=p.log_level))

    async def begin_create(self, params: CreateParams) -> PendingCreate:
        # conmon works in the bundle: it drops files (an `oom` marker) there.
        try:
            pending = await conmon.spawn(self.conmon_argv(params), params.bundle)
        except BaseException:
            self.telemetry.conmon_spawn(False)
            raise
        self.telemetry.conmon_spawn(True)
        return _ConmonPending(pending, params.conmon_pidfile)

    # ---- the rest of the lifecycle --------------------------------------------

    async def start(self, container_id: str) -> None:
        await self._check("start", container_id)

    async def kill(self, container_id: str, signal: int | str, all_processes: bool = False) -> bool:
        args = ["kill", *(["--all"] if all_processes else []), container_id, str(signal)]
        rc, _, err = await self._run(*args)
        if rc == 0:
            return True
        if _not_found(err) or _already_exited(err):
            return False
        raise OciRuntimeError(f"{self.name} kill failed: {_clean(err)}", err)

    async def delete(self, container_id: str) -> None:
        rc, _, err = await self._run("delete", "--force", container_id)
        if rc != 0 and not _not_found(err):
            raise OciRuntimeError(f"{self.name} delete failed: {_clean(err)}", err)

    async def state(self, container_id: str) -> dict[str, Any] | None:
        rc, out, err = await self._run("state", container_id)
        if rc != 0:
            if _not_found(err):
                return None
            raise OciRuntimeError(f"{self.name} state failed: {_clean(err)}", err)
        return json.loads(out)

    async def update(self, container_id: str, resources: dict[str, Any]) -> None:
        # `update --resources -` takes an OCI LinuxResources document on stdin.
        await self._check("update", "--resources", "-", container_id, stdin=json.dumps(resources).encode())

    def exec_argv(self, container_id: str, process_json: str, pid_file: str) -> list[str]:
        return [*self.global_args(), "exec", "--process", process_json, "--pid-file", pid_file, container_id]

    def exec_session_argv(self, process_json: str) -> list[str]:
        return [*self.global_args(), "exec", "--process", process_json]

    # ---- conmon's endpoints in the bundle ----------------------------------------

    def attach_socket(self, bundle: str) -> str:
        return os.path.join(bundle, "attach")

    def control_fifo(self, bundle: str) -> str:
        return os.path.join(bundle, "ctl")

    async def reopen_log(self, bundle: str) -> None:
        await conmon.reopen_log(self.control_fifo(bundle))


def _clean(stderr: str) -> str:
    """runc logs as `time="..." level=error msg="..."`; keep the message."""
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    if not lines:
        return ""
    last = lines[-1]
    if 'msg="' in last:
        msg = last.split('msg="', 1)[1]
        return msg.rsplit('"', 1)[0].replace('\\"', '"')
    return last
