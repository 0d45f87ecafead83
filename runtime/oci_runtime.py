"""The OCI runtime command line (runc or crun): start, kill, delete, state,
exec and update, with all runtime state under crispy's state root
(`--root`), never the runtime's default /run/runc or /run/crun.

`create` is not here: conmon runs it, so that conmon is the parent of the
container process (see runtime/conmon.py).
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.errors import Internal
from runtime import crun_start


class OciRuntimeError(Internal):
    """The runtime refused; the message carries its stderr."""

    def __init__(self, message: str, stderr: str = "") -> None:
        super().__init__(message)
        self.stderr = stderr


def _not_found(stderr: str) -> bool:
    s = stderr.lower()
    return "does not exist" in s or "not found" in s or "no such file" in s


def _already_exited(stderr: str) -> bool:
    # runc says "not running"/"process already finished"; crun 1.8 fails to
    # open a pidfd for the exited init with ESRCH ("No such process").
    s = stderr.lower()
    return "not running" in s or "process already finished" in s or "no such process" in s


@dataclass(frozen=True)
class OciRuntime:
    path: str
    root: str  # --root: the runtime's state directory
    # What to execute: a sealed copy of `path` (runtime/sealed_binary.py), or `path`.
    exe: str = ""

    @property
    def name(self) -> str:
        return os.path.basename(self.path)

    @classmethod
    def under(cls, path: str, state_root: Path, exe: str = "") -> "OciRuntime":
        """One state directory per runtime binary, so runc and crun never
        read each other's state."""
        return cls(path, str(state_root / "oci" / os.path.basename(path)), exe)

    @property
    def executable(self) -> str:
        return self.exe or self.path

    def global_args(self) -> list[str]:
        return [self.executable, "--root", self.root]

    async def _run(self, *args: str, stdin: bytes | None = None, timeout: float = 60.0) -> tuple[int, str, str]:
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

    async def start(self, container_id: str) -> None:
        if self.name == "crun":
            # The same one-byte handshake `crun start` does, without its
            # process start (runtime/crun_start.py); it declines anything
            # unusual, which then goes through `crun start`.
            try:
                if crun_start.release_init(self.root, container_id):
                    return
            except crun_start.InitGone as exc:
                raise OciRuntimeError(f"crun start failed: {exc}") from None
        await self._check("start", container_id)

    async def kill(self, container_id: str, signal: int | str, all_processes: bool = False) -> bool:
        """False if the container is already gone or stopped."""
        args = ["kill", *(["--all"] if all_processes else []), container_id, str(signal)]
        rc, _, err = await self._run(*args)
        if rc == 0:
            return True
        if _not_found(err) or _already_exited(err):
            return False
        raise OciRuntimeError(f"{self.name} kill failed: {_clean(err)}", err)

    async def delete(self, container_id: str) -> None:
        """Idempotent: a container the runtime does not know is fine."""
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
