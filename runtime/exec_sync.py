"""ExecSync: run a command in a running container and collect its output
and exit code, with a timeout that kills it (kubelet's exec probes).

The OCI runtime's `exec` is run directly, not under conmon: the output
comes straight back on pipes and no CRI log has to be parsed. The runtime
writes the process's host pid to a pid file, which is what a timeout kills
(killing `runc exec` itself would leave the process running).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.oci_runtime import OciRuntime

# Per stream; what a probe prints beyond this is dropped (CRI-O caps at 16 MiB too).
MAX_OUTPUT = 16 * 1024 * 1024
# After the process ends, how long to wait for output held open by children
# it left behind.
DRAIN_GRACE = 1.0
# How long `runtime exec` gets to notice its process was killed and exit.
REAP_GRACE = 5.0


@dataclass
class ExecResult:
    stdout: bytes
    stderr: bytes
    exit_code: int
    timed_out: bool = False


async def _collect(stream: asyncio.StreamReader, into: bytearray, limit: int) -> None:
    while True:
        chunk = await stream.read(65536)
        if not chunk:
            return
        if len(into) < limit:
            into += chunk[: limit - len(into)]


async def exec_sync(runtime: OciRuntime, container_id: str, process: dict[str, Any], work_dir: Path,
                    timeout: float) -> ExecResult:
    """`timeout` <= 0 means none."""
    token = secrets.token_hex(8)
    process_file = work_dir / f"exec-{token}.json"
    pid_file = work_dir / f"exec-{token}.pid"
    await asyncio.to_thread(process_file.write_text, json.dumps(process))
    try:
        proc = await asyncio.create_subprocess_exec(
            *runtime.exec_argv(container_id, str(process_file), str(pid_file)),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        assert proc.stdout is not None and proc.stderr is not None
        out, err = bytearray(), bytearray()
        readers = asyncio.gather(_collect(proc.stdout, out, MAX_OUTPUT), _collect(proc.stderr, err, MAX_OUTPUT))
        timed_out = False
        try:
            async with asyncio.timeout(timeout if timeout > 0 else None):
                await proc.wait()
        except TimeoutError:
            timed_out = True
        except BaseException:
            await _kill(proc, pid_file)
            readers.cancel()
            raise
        if timed_out:
            await _kill(proc, pid_file)
        try:
            async with asyncio.timeout(DRAIN_GRACE):
                await asyncio.shield(readers)
        except TimeoutError:
            # Children of the process keep the pipes open; return what came.
            readers.cancel()
        code = proc.returncode if proc.returncode is not None else -1
        return ExecResult(bytes(out), bytes(err), -1 if timed_out else code, timed_out)
    finally:
        for f in (process_file, pid_file):
            try:
                os.unlink(f)
            except FileNotFoundError:
                pass


async def _kill(proc: asyncio.subprocess.Process, pid_file: Path) -> None:
    try:
        pid = int(await asyncio.to_thread(pid_file.read_text))
        os.kill(pid, signal.SIGKILL)
    except (FileNotFoundError, ValueError, ProcessLookupError):
        pass
    # Let `runtime exec` reap the process: killed first, it would leave the
    # process to the container's init, which may never reap it (a zombie
    # that probes and `ps` keep seeing).
    try:
        async with asyncio.timeout(REAP_GRACE):
            await proc.wait()
    except TimeoutError:
        proc.kill()
        await proc.wait()
