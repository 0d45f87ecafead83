"""Attach's runtime half: conmon's attach socket and control FIFO.

conmon listens on an AF_UNIX SOCK_SEQPACKET socket; every packet it sends
is one pipe byte (2 stdout, 3 stderr) followed by data, and whatever we
send goes to the container's stdin. Terminal resizes go to the `ctl` FIFO
in the bundle as "1 <height> <width>\\n".
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket

from runtime.errors import FailedPrecondition
from runtime.stream_io import ExecIO, TerminalSize

STDOUT_PIPE = 2
STDERR_PIPE = 3
# conmon's own buffer is 32 KiB; a packet is never larger plus its pipe byte.
PACKET_MAX = 32 * 1024 + 1


def parse_packet(packet: bytes) -> tuple[int, bytes]:
    """(pipe, data) of one packet from conmon."""
    if not packet:
        return 0, b""
    return packet[0], packet[1:]


def resize_line(size: TerminalSize) -> bytes:
    return f"1 {size.height} {size.width}\n".encode()


def _write_ctl(ctl_path: str, line: bytes) -> None:
    # Non-blocking so a conmon that is gone cannot wedge the thread.
    fd = os.open(ctl_path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


async def _follow_resizes(ctl_path: str, queue: asyncio.Queue[TerminalSize] | None) -> None:
    if queue is None or not ctl_path:
        return
    while True:
        size = await queue.get()
        with contextlib.suppress(OSError):
            await asyncio.to_thread(_write_ctl, ctl_path, resize_line(size))


async def attach(attach_socket: str, ctl_path: str, io: ExecIO) -> None:
    """Copies between the client and the container until the container's
    output ends (it exited) or the client goes away."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        # sun_path holds 107 bytes; reaching the socket through an O_PATH
        # handle on its directory works for any bundle path length.
        try:
            dir_fd = os.open(os.path.dirname(attach_socket) or ".", os.O_PATH | os.O_CLOEXEC)
            try:
                await loop.sock_connect(sock, f"/proc/self/fd/{dir_fd}/{os.path.basename(attach_socket)}")
            finally:
                os.close(dir_fd)
        except OSError as exc:
            raise FailedPrecondition(f"cannot attach: conmon's attach socket {attach_socket} does not answer "
                                     f"({exc.strerror}); is the container running?") from None

        async def stdin_pump() -> None:
            if io.stdin is None:
                return
            while data := await io.stdin.read():
                for i in range(0, len(data), PACKET_MAX - 1):
                    await loop.sock_sendall(sock, data[i:i + PACKET_MAX - 1])
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_WR)

        async def output_pump() -> None:
            while True:
                try:
                    packet = await loop.sock_recv(sock, PACKET_MAX)
                except OSError as exc:
                    if exc.errno in (errno.ECONNRESET, errno.EPIPE):
                        return
                    raise
                if not packet:
                    return  # conmon closed: the container exited
                pipe, data = parse_packet(packet)
                sink = io.stdout if pipe == STDOUT_PIPE else io.stderr if pipe == STDERR_PIPE else None
                if sink is None and pipe == STDERR_PIPE and io.tty:
                    sink = io.stdout
                if sink is not None and data:
                    await sink.write(data)

        helpers = [asyncio.create_task(stdin_pump()), asyncio.create_task(_follow_resizes(ctl_path, io.resize))]
        output = asyncio.create_task(output_pump())
        gone = asyncio.create_task(io.client_gone.wait())
        try:
            await asyncio.wait({output, gone}, return_when=asyncio.FIRST_COMPLETED)
            if output.done():
                output.result()  # re-raise what went wrong
        finally:
            for t in (*helpers, output, gone):
                t.cancel()
    finally:
        sock.close()
