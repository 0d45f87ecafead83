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

from runtime.oci.interface import OciRuntime

# stdout and stderr together. Both travel in one reply, which must fit the
# transport's message limit (16 MiB for gRPC, kubelet's included: see
# cri/limits.py, whose tests hold this under it); the megabyte left is room
# for the protobuf framing and the truncation markers. containerd and CRI-O
# cap each stream at 16 MiB, so two full streams fail the reply there.
OUTPUT_LIMIT = 15 * 1024 * 1024
# What each stream may always keep however much the other printed first: a
# flood on stdout must not hide the error a probe writes to stderr.
STREAM_RESERVE = 1024 * 1024
READ_CHUNK = 65536
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
    # Some output was dropped (and a marker line says so in that stream).
    truncated: bool = False


class OutputBudget:
    """Keeps what two streams print within OUTPUT_LIMIT together, deciding
    chunk by chunk as they arrive (sans-IO: `feed` what was read). Past its
    share a stream's bytes are counted and dropped, never held."""

    NAMES = ("stdout", "stderr")

    def __init__(self, limit: int = OUTPUT_LIMIT, reserve: int = STREAM_RESERVE) -> None:
        if 2 * reserve > limit:
            raise ValueError("the reserves of both streams must fit in the limit")
        self.limit, self.reserve = limit, reserve
        self.kept = (bytearray(), bytearray())
        self.dropped = [0, 0]

    def feed(self, stream: int, chunk: bytes) -> None:
        mine, other = self.kept[stream], self.kept[1 - stream]
        room = self.limit - max(len(other), self.reserve) - len(mine)
        keep = max(0, min(len(chunk), room))
        if keep:
            mine += chunk[:keep] if keep < len(chunk) else chunk
        self.dropped[stream] += len(chunk) - keep

    def output(self, stream: int) -> bytes:
        """What the caller gets: the kept bytes, then, if any were dropped, a
        line saying how many."""
        data = self.kept[stream]
        if self.dropped[stream]:
            data += truncation_marker(self.NAMES[stream], len(data), self.dropped[stream])
        out = bytes(data)
        data.clear()  # the copy above is all that stays
        return out


def truncation_marker(name: str, kept: int, dropped: int) -> bytes:
    return (f"\n[crispy: {name} truncated: kept the first {kept} bytes, dropped {dropped} more; "
            f"ExecSync returns at most {OUTPUT_LIMIT} bytes of output in all]\n").encode()


async def _collect(stream: asyncio.StreamReader, budget: OutputBudget, which: int) -> None:
    # Reads on past the budget, discarding: a writer blocked on a full pipe
    # would never exit.
    while True:
        chunk = await stream.read(READ_CHUNK)
        if not chunk:
            return
        budget.feed(which, chunk)


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
        budget = OutputBudget()
        readers = asyncio.gather(_collect(proc.stdout, budget, 0), _collect(proc.stderr, budget, 1))
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
        return ExecResult(budget.output(0), budget.output(1), -1 if timed_out else code, timed_out,
                          truncated=any(budget.dropped))
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
