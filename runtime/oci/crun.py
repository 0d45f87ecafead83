"""crun: the shared command line, run from a sealed copy, and a created
container started by crun's own FIFO handshake done in-process
(runtime/oci/crun_start.py) instead of a `crun start` process."""

from __future__ import annotations

from runtime.oci import crun_start
from runtime.oci.cli import CliRuntime
from runtime.oci.interface import OciRuntimeError, RuntimeKind


class CrunRuntime(CliRuntime):
    kind = RuntimeKind.CRUN

    async def start(self, container_id: str) -> None:
        # The same one-byte handshake `crun start` does, without its process
        # start; it declines anything unusual, which then goes through
        # `crun start`.
        try:
            if crun_start.release_init(self.root, container_id):
                return
        except crun_start.InitGone as exc:
            raise OciRuntimeError(f"crun start failed: {exc}") from None
        await self._check("start", container_id)
