"""What the streaming server needs from the runtime, and the stdio plumbing
between the two. The protocol shells (SPDY, WebSocket) fill an `ExecIO`;
the runtime side (runtime/exec_session.py, attach.py, port_forward.py)
reads stdin, writes stdout/stderr and follows resizes."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Protocol

from cri.proto import api_pb2 as pb
from cri.streaming.remotecommand import TerminalSize


class InputPipe:
    """Bytes from the client, in order; read() returns b"" at end of input.
    `pending` counts bytes not yet read, so the connection's reader can
    stop reading the socket instead of buffering without bound."""

    def __init__(self) -> None:
        self._q: asyncio.Queue[bytes] = asyncio.Queue()
        self.closed = False
        self.pending = 0
        self._drained = asyncio.Event()
        self._drained.set()

    def feed(self, data: bytes) -> None:
        if data and not self.closed:
            self.pending += len(data)
            self._drained.clear()
            self._q.put_nowait(data)

    def feed_eof(self) -> None:
        if not self.closed:
            self.closed = True
            self._q.put_nowait(b"")

    async def read(self) -> bytes:
        data = await self._q.get()
        if not data:
            self._q.put_nowait(b"")  # every later read sees EOF too
            self._drained.set()
            return data
        self.pending -= len(data)
        if self.pending <= 0:
            self._drained.set()
        return data

    async def wait_below(self, limit: int) -> None:
        while self.pending > limit and not self.closed:
            self._drained.clear()
            await self._drained.wait()


class OutputSink(Protocol):
    async def write(self, data: bytes) -> None: ...


@dataclass
class ExecIO:
    stdin: InputPipe | None
    stdout: OutputSink | None
    stderr: OutputSink | None
    tty: bool
    # Terminal sizes as the client reports them; None when not a TTY.
    resize: asyncio.Queue[TerminalSize] | None = None
    # Set when the client's connection is gone, so attach can stop waiting
    # for output that may never come.
    client_gone: asyncio.Event = field(default_factory=asyncio.Event)


class StreamBackend(Protocol):
    async def exec(self, request: pb.ExecRequest, io: ExecIO) -> int:
        """Runs the command to completion; returns its exit code. Raises a
        CrispyError when it could not be run at all."""

    async def attach(self, request: pb.AttachRequest, io: ExecIO) -> None:
        """Copies stdio until the container exits or the client leaves."""

    async def open_port(self, sandbox_id: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A TCP connection to localhost:`port` inside the pod's network."""

