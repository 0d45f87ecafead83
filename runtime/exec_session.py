"""A streaming exec: `<runtime> --root <root> exec --process <json> <id>`,
with the client's stdio spliced to pipes, or to a pseudo-terminal the OCI
runtime hands us over a console socket (SCM_RIGHTS) when a TTY is wanted.

The runtime's own exit status is the command's: both runc and crun exit
with the exec'd process's code. Failures of the runtime itself are told
apart by running only against containers known to be running, and the
runtime's own complaints reach the client on stderr.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import errno
import fcntl
import json
import os
import secrets
import shutil
import socket
import struct
import sys
import termios
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime import private_dirs
from runtime.errors import Internal
from runtime.oci.interface import OciRuntime
from runtime.stream_io import ExecIO, InputPipe, OutputSink, TerminalSize

CHUNK = 32 * 1024


@dataclass
class ExecTarget:
    container_id: str
    runtime: OciRuntime
    process: dict[str, Any]  # the OCI process to run (oci_spec.exec_process_spec)
    # The client's terminal size when the exec starts (also in the process's
    # consoleSize, which the runtime applies before the process runs).
    initial_size: TerminalSize | None = None


# ---- fd helpers ---------------------------------------------------------------

async def _wait_fd(fd: int, writable: bool) -> None:
    loop = asyncio.get_running_loop()
    fut = loop.create_future()
    add, remove = (loop.add_writer, loop.remove_writer) if writable else (loop.add_reader, loop.remove_reader)
    def ready() -> None:
        if not fut.done():
            fut.set_result(None)

    add(fd, ready)
    try:
        await fut
    finally:
        remove(fd)


async def fd_to_sink(fd: int, sink: OutputSink | None) -> None:
    """Copies a non-blocking fd to `sink` until EOF (or EIO: a pty master
    whose last slave closed)."""
    while True:
        try:
            data = os.read(fd, CHUNK)
        except BlockingIOError:
            await _wait_fd(fd, writable=False)
            continue
        except OSError as exc:
            if exc.errno == errno.EIO:
                return
            raise
        if not data:
            return
        if sink is not None:
            await sink.write(data)


async def write_fd(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            await _wait_fd(fd, writable=True)
            continue
        view = view[n:]


def set_winsize(fd: int, size: TerminalSize) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", size.height, size.width, 0, 0))


async def follow_resizes(fd: int, queue: asyncio.Queue[TerminalSize] | None) -> None:
    if queue is None:
        return
    while True:
        size = await queue.get()
        with contextlib.suppress(OSError):
            set_winsize(fd, size)


def _recv_fd(conn: socket.socket) -> int:
    """The pty master the runtime sends over the console socket."""
    fds = array.array("i")
    _, ancdata, _, _ = conn.recvmsg(4096, socket.CMSG_SPACE(fds.itemsize))
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[:len(data) - (len(data) % fds.itemsize)])
    if not fds:
        raise Internal("the OCI runtime sent no terminal over the console socket")
    for extra in fds[1:]:
        os.close(extra)
    return fds[0]


# ---- the session -------------------------------------------------------------

async def _stdin_to_fd(stdin: InputPipe | None, fd: int, close_at_eof: bool) -> None:
    if stdin is None:
        return
    try:
        while data := await stdin.read():
            await write_fd(fd, data)
    except OSError:
        return
    if close_at_eof:
        os.close(fd)


async def run(target: ExecTarget, io: ExecIO, work_dir: Path, start_timeout: float = 30.0) -> int:
    """Runs the exec to completion and returns its exit code. `work_dir`
    (per session, removed at the end) holds the process JSON and the
    console socket."""
    private_dirs.make_private(work_dir)
    try:
        spec_path = work_dir / "process.json"
        await asyncio.to_thread(spec_path.write_text, json.dumps(target.process))
        args = target.runtime.exec_session_argv(str(spec_path))
        if io.tty:
            return await _run_tty(target, io, args, work_dir, start_timeout)
        return await _run_pipes(target, io, args)
    finally:
        await asyncio.to_thread(shutil.rmtree, work_dir, True)


async def _run_pipes(target: ExecTarget, io: ExecIO, args: list[str]) -> int:
    proc = await asyncio.create_subprocess_exec(
        *args, target.container_id,
        stdin=asyncio.subprocess.PIPE if io.stdin else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None

    async def copy_out(stream: asyncio.StreamReader, sink: OutputSink | None) -> None:
        while data := await stream.read(CHUNK):
            if sink is not None:
                await sink.write(data)

    async def feed_in() -> None:
        assert proc.stdin is not None
        try:
            # Only started when io.stdin is set (proc.stdin is a pipe only then).
            while data := await io.stdin.read():  # type: ignore[union-attr]
                proc.stdin.write(data)
                await proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            return
        proc.stdin.close()

    stdin_task = asyncio.create_task(feed_in()) if io.stdin else None
    try:
        await asyncio.gather(copy_out(proc.stdout, io.stdout), copy_out(proc.stderr, io.stderr))
        code = await proc.wait()
    finally:
        if stdin_task is not None:
            stdin_task.cancel()
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            # On Python 3.11 wait() also waits for the stdout/stderr pipes to
            # close, and the exec'd process, which outlives the runtime's
            # `exec` (as upstream), still holds them: bound the wait.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(proc.wait(), 5)
    return code


async def _run_tty(target: ExecTarget, io: ExecIO, args: list[str], work_dir: Path, start_timeout: float) -> int:
    sock_path = str(work_dir / "console.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    master = -1
    proc = None
    tasks: list[asyncio.Task[Any]] = []
    try:
        server.bind(sock_path)
        server.listen(1)
        server.setblocking(False)
        # runc and crun only use a console socket when detaching; the
        # reaper helper waits for the detached process and reports its status.
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "runtime.exec_reaper", str(work_dir / "exec.pid"),
            *args, "--detach", "--tty", "--console-socket", sock_path, "--pid-file", str(work_dir / "exec.pid"),
            target.container_id,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            cwd=str(Path(__file__).resolve().parent.parent))
        loop = asyncio.get_running_loop()
        accept = asyncio.ensure_future(loop.sock_accept(server))
        exited = asyncio.ensure_future(proc.wait())
        done, _ = await asyncio.wait({accept, exited}, timeout=start_timeout, return_when=asyncio.FIRST_COMPLETED)
        if accept not in done:
            accept.cancel()
            exited.cancel()
            err = (await proc.stderr.read()).decode(errors="replace").strip() if proc.stderr and exited in done else ""
            raise Internal(f"the OCI runtime did not hand over a terminal: {err or 'timed out'}")
        exited.cancel()
        conn, _ = accept.result()
        with conn:
            conn.setblocking(True)
            conn.settimeout(start_timeout)
            master = await asyncio.to_thread(_recv_fd, conn)
        os.set_blocking(master, False)
        if target.initial_size is not None:
            set_winsize(master, target.initial_size)
        tasks.append(asyncio.create_task(follow_resizes(master, io.resize)))
        # Closing the master would hang up the session, so stdin EOF only
        # stops the copy.
        tasks.append(asyncio.create_task(_stdin_to_fd(io.stdin, master, close_at_eof=False)))
        await fd_to_sink(master, io.stdout)
        return await proc.wait()
    finally:
        for t in tasks:
            t.cancel()
        if master >= 0:
            os.close(master)
        server.close()
        if proc is not None and proc.returncode is None:
            # SIGTERM makes the reaper kill the exec'd process too.
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()


def session_dir(base: Path) -> Path:
    return base / secrets.token_hex(8)
