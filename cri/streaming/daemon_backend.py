"""The streaming server's view of the daemon: finds containers and pods in
the record index and runs the runtime halves in runtime/exec_session.py,
attach.py and port_forward.py.

From the index it needs `container(ref)` and `sandbox(ref)`, and from the
runtime factory the OCI runtime object of a record, which names the exec
command line and the attach socket and control FIFO.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
from pathlib import Path
from typing import Protocol

from cri.proto import api_pb2 as pb
from runtime import attach, exec_session, oci_spec, port_forward
from runtime.errors import FailedPrecondition, Internal
from runtime.oci.interface import OciRuntime
from runtime.states import ContainerState, PodState
from runtime.store import ContainerRecord, SandboxRecord
from runtime.stream_io import ExecIO

log = logging.getLogger("crispy.streaming")

# Clients send their terminal size right after opening the streams.
FIRST_SIZE_WAIT = 1.0


class Lookup(Protocol):
    def container(self, ref: str) -> ContainerRecord: ...
    def sandbox(self, ref: str) -> SandboxRecord: ...


class Runtimes(Protocol):
    def for_record(self, rec: ContainerRecord) -> OciRuntime: ...


class DaemonStreamBackend:
    def __init__(self, index: Lookup, runtimes: Runtimes, exec_root: Path) -> None:
        """`exec_root`: where exec sessions keep their work directories."""
        self.index = index
        self.runtimes = runtimes
        self.exec_root = exec_root

    async def prepare(self) -> None:
        """Removes exec work directories a crashed crispy left behind."""
        await asyncio.to_thread(shutil.rmtree, self.exec_root, True)

    def running_container(self, ref: str) -> ContainerRecord:
        ctr = self.index.container(ref)
        if ctr.state != ContainerState.RUNNING:
            raise FailedPrecondition(f"container {ctr.id[:13]} is not running (state {ctr.state}); start it first")
        return ctr

    def ready_sandbox(self, ref: str) -> SandboxRecord:
        sb = self.index.sandbox(ref)
        if sb.state != PodState.READY:
            raise FailedPrecondition(f"pod sandbox {sb.id[:13]} is not ready; port-forward needs a running pod")
        return sb

    async def exec(self, request: pb.ExecRequest, io: ExecIO) -> int:
        ctr = self.running_container(request.container_id)
        try:
            spec = await asyncio.to_thread(lambda: json.loads((Path(ctr.bundle) / "config.json").read_text()))
        except (OSError, ValueError) as exc:
            raise Internal(f"cannot read the container's OCI spec: {exc}") from None
        process = oci_spec.exec_process_spec(spec, list(request.cmd), request.tty)
        size = None
        if request.tty and io.resize is not None:
            # The command may query its terminal before a later resize
            # lands; runc applies consoleSize before starting it (crun 1.8
            # ignores it on exec, so there the size lands when we get the
            # terminal, a moment after the command started).
            try:
                size = await asyncio.wait_for(io.resize.get(), FIRST_SIZE_WAIT)
            except asyncio.TimeoutError:
                log.debug("no terminal size from the client before exec", extra={"fields": {"container": ctr.id[:13]}})
            else:
                process["consoleSize"] = {"height": size.height, "width": size.width}
        target = exec_session.ExecTarget(ctr.id, self.runtimes.for_record(ctr), process, initial_size=size)
        return await exec_session.run(target, io, exec_session.session_dir(self.exec_root))

    async def attach(self, request: pb.AttachRequest, io: ExecIO) -> None:
        ctr = self.running_container(request.container_id)
        rt = self.runtimes.for_record(ctr)
        await attach.attach(rt.attach_socket(ctr.bundle), rt.control_fifo(ctr.bundle), io)

    async def open_port(self, sandbox_id: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        sb = self.ready_sandbox(sandbox_id)
        netns = "" if sb.host_network else (sb.namespaces or {}).get("net", "")
        if not netns and not sb.host_network:
            raise FailedPrecondition(f"pod sandbox {sb.id[:13]} has no network namespace")
        return await port_forward.connect(netns, port)
