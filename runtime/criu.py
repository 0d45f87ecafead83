"""Whether CRIU can checkpoint containers on this node: the `criu` binary
is installed and `criu check` passes on this kernel. Asked once, at the
first CheckpointContainer, and remembered."""

from __future__ import annotations

import asyncio
import shutil

# `criu check` probes the kernel (a few hundred ms); a hung one is a failure.
CHECK_TIMEOUT_S = 30.0


class Criu:
    def __init__(self, binary: str = "criu") -> None:
        self._binary = binary
        self._problem: str | None = None
        self._checked = False
        self._lock = asyncio.Lock()

    async def problem(self) -> str | None:
        """What keeps CRIU from working here, or None when it works."""
        async with self._lock:
            if not self._checked:
                self._problem = await self._check()
                self._checked = True
            return self._problem

    async def _check(self) -> str | None:
        path = shutil.which(self._binary)
        if path is None:
            return f"CRIU ({self._binary}) is not installed on this node; install criu 3.19 or newer"
        try:
            proc = await asyncio.create_subprocess_exec(path, "check", stdin=asyncio.subprocess.DEVNULL,
                                                        stdout=asyncio.subprocess.PIPE,
                                                        stderr=asyncio.subprocess.STDOUT)
        except OSError as e:
            return f"CRIU ({path}) cannot be run: {e.strerror}"
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), CHECK_TIMEOUT_S)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return f"`{path} check` did not finish within {CHECK_TIMEOUT_S:.0f}s"
        if proc.returncode != 0:
            lines = [ln for ln in out.decode(errors="replace").splitlines() if ln.strip()]
            detail = "; ".join(lines[-3:]) or f"exit status {proc.returncode}"
            return f"`{path} check` fails on this kernel: {detail}"
        return None
