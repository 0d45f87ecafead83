"""What the streaming server needs from the runtime. The stdio plumbing
between the two (`ExecIO` and its parts) is the runtime's own, in
runtime/stream_io.py: the protocol shells (SPDY, WebSocket) fill it."""

from __future__ import annotations

import asyncio
from typing import Protocol

from cri.proto import api_pb2 as pb
from runtime.stream_io import ExecIO


class StreamBackend(Protocol):
    async def exec(self, request: pb.ExecRequest, io: ExecIO) -> int:
        """Runs the command to completion; returns its exit code. Raises a
        CrispyError when it could not be run at all."""

    async def attach(self, request: pb.AttachRequest, io: ExecIO) -> None:
        """Copies stdio until the container exits or the client leaves."""

    async def open_port(self, sandbox_id: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A TCP connection to localhost:`port` inside the pod's network."""

