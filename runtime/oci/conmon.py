"""conmon, the per-container monitor: its command line, the sans-IO parser
of the JSON it writes on the sync pipe, and a thin asyncio shell that starts
it and waits for the container to be created.

conmon runs `<runtime> create` itself (for runtime/oci/cli.py) so that it, not crispy, is the
container's parent: it holds the container's stdio, writes the CRI log,
and records the exit status in `<exit_dir>/<id>` and `<persist_dir>/exit`
(and `<persist_dir>/oom` after an OOM kill). Without `--sync` it
double-forks into its own session, so it outlives crispy being stopped or
killed; crispy finds it again through its pid file.

Files conmon keeps in the bundle directory, for later work:
  `ctl`    FIFO; "2 0 0\n" reopens the log (ReopenContainerLog), "1 H W\n" resizes a tty
  `attach` SOCK_SEQPACKET socket for attach, also reachable as `<socket_dir>/<id>/attach`
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Protocol

from runtime.errors import Internal
from runtime.namespaces import process_start_time
from runtime.oci.interface import Created


class RuntimeCommand(Protocol):
    """What conmon needs of the OCI runtime to run its `create`."""
    @property
    def exe(self) -> str: ...
    root: str


@dataclass
class ConmonCreate:
    conmon: str
    runtime: RuntimeCommand
    container_id: str
    name: str
    bundle: str
    log_path: str
    exit_dir: str
    persist_dir: str
    container_pidfile: str
    conmon_pidfile: str
    socket_dir: str
    stdin: bool = False
    stdin_once: bool = False
    tty: bool = False
    systemd_cgroup: bool = False
    log_level: str = "error"


def create_argv(c: ConmonCreate) -> list[str]:
    argv = [
        c.conmon, "--bundle", c.bundle, "--cid", c.container_id, "--cuuid", c.container_id, "--name", c.name,
        "--runtime", c.runtime.exe, "--runtime-arg", f"--root={c.runtime.root}",
        "--log-path", f"k8s-file:{c.log_path}", "--exit-dir", c.exit_dir, "--persist-dir", c.persist_dir,
        "--container-pidfile", c.container_pidfile, "--conmon-pidfile", c.conmon_pidfile,
        "--socket-dir-path", c.socket_dir, "--log-level", c.log_level,
    ]
    if c.systemd_cgroup:
        argv.append("--systemd-cgroup")
    if c.tty:
        argv.append("--terminal")
    if c.stdin:
        argv.append("--stdin")
        if not c.stdin_once:
            argv.append("--leave-stdin-open")
    return argv


# ---- the sync pipe, sans-IO ---------------------------------------------------

@dataclass
class SyncMessage:
    """One JSON object conmon wrote: after create, `value` is the container
    pid (-1 on failure); after an exec with --sync, its exit code."""
    value: int
    message: str = ""

    @property
    def failed(self) -> bool:
        return self.value < 0


class SyncPipeParser:
    """Bytes in, messages out. conmon writes one JSON object per line."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> list[SyncMessage]:
        self._buffer += data
        out = []
        while b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            if line.strip():
                out.append(parse_sync_line(line))
        return out

    def close(self) -> list[SyncMessage]:
        """The writer is gone: whatever is left must be a whole object."""
        rest, self._buffer = self._buffer, b""
        return [parse_sync_line(rest)] if rest.strip() else []


def parse_sync_line(line: bytes) -> SyncMessage:
    try:
        obj: Any = json.loads(line)
    except ValueError:
        raise ValueError(f"conmon wrote something that is not JSON on the sync pipe: {line[:200]!r}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"conmon sync message is not an object: {line[:200]!r}")
    # Key "pid" after create, "exit_code" after exec (API version 0), "data" (API version 1).
    for key in ("pid", "exit_code", "data"):
        if key in obj:
            return SyncMessage(int(obj[key]), str(obj.get("message", "")))
    raise ValueError(f"conmon sync message has no pid, exit_code or data: {line[:200]!r}")


# ---- asyncio shell ------------------------------------------------------------------

@dataclass
class PendingConmon:
    """A conmon started and blocked on its start pipe: nothing forked yet."""
    proc: asyncio.subprocess.Process
    sync_fd: int  # read end of the sync pipe
    start_fd: int  # write end of the start pipe; -1 once released

    @property
    def pid(self) -> int:
        return self.proc.pid


async def spawn(argv: list[str], cwd: str) -> PendingConmon:
    """Starts conmon, which waits on its start pipe before it forks or runs
    anything: the caller may move it into another cgroup and finish
    preparing the bundle meanwhile, then `release` it (or `abort` it).
    `cwd` is the bundle: conmon drops files (an `oom` marker) in its working
    directory."""
    rfd, wfd = os.pipe2(os.O_CLOEXEC)
    start_r, start_w = os.pipe2(os.O_CLOEXEC)
    # pass_fds keeps the descriptors' numbers, which conmon learns from the env.
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "_OCI_SYNCPIPE": str(wfd),
           "_OCI_STARTPIPE": str(start_r)}
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL, pass_fds=(wfd, start_r), env=env, start_new_session=True, cwd=cwd)
    except BaseException:
        for fd in (rfd, wfd, start_r, start_w):
            os.close(fd)
        raise
    os.close(wfd)
    os.close(start_r)
    return PendingConmon(proc, rfd, start_w)


async def abort(p: PendingConmon) -> None:
    """Kills a conmon that was never released (it has forked nothing);
    idempotent."""
    for name in ("start_fd", "sync_fd"):
        fd = getattr(p, name)
        if fd >= 0:
            os.close(fd)
            setattr(p, name, -1)
    if p.proc.returncode is None:
        try:
            p.proc.kill()
        except ProcessLookupError:
            pass
        await p.proc.wait()


async def release(p: PendingConmon, conmon_pidfile: str, timeout: float = 120.0,
                  on_monitor: Callable[[int, int], Awaitable[None]] | None = None) -> Created:
    """Lets conmon run `<runtime> create` and returns once it has finished.
    Raises Internal with the runtime's message on failure.

    `on_monitor(pid, start_time)` runs as soon as conmon's monitor exists,
    while the runtime is still creating the container: the place to move it
    into another cgroup (instead of the process crispy started, before
    letting it fork: on cgroup v1 a move waits for an RCU grace period,
    which then overlaps with the runtime's own move of the container's
    process) and to record it."""
    try:
        os.write(p.start_fd, b"0")
    except BrokenPipeError:
        await abort(p)
        raise Internal(f"conmon exited (status {p.proc.returncode}) before it was told to create the container; "
                       f"run it by hand with the same arguments to see why") from None
    except BaseException:
        await abort(p)
        raise
    os.close(p.start_fd)
    p.start_fd = -1
    rfd, p.sync_fd = p.sync_fd, -1
    proc = p.proc

    async def monitor() -> tuple[int, int]:
        # conmon's first process writes the monitor's pid, then exits.
        await proc.wait()
        if proc.returncode != 0:
            return 0, 0
        pid, start_time = await asyncio.to_thread(_read_monitor, conmon_pidfile)
        if pid and on_monitor is not None:
            await on_monitor(pid, start_time)
        return pid, start_time

    parser = SyncPipeParser()
    messages: list[SyncMessage] = []
    watching = asyncio.ensure_future(monitor())
    try:
        async with asyncio.timeout(timeout):
            loop = asyncio.get_running_loop()
            reader = asyncio.StreamReader()
            transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader),
                                                        os.fdopen(rfd, "rb", 0))
            rfd = -1
            try:
                while not messages:
                    chunk = await reader.read(65536)
                    if not chunk:
                        messages = parser.close()
                        break
                    messages = parser.feed(chunk)
            finally:
                transport.close()
            monitor_pid, monitor_start = await watching
    except TimeoutError:
        raise Internal(f"conmon did not report the container created within {timeout:.0f}s") from None
    except ValueError as e:
        raise Internal(str(e)) from None
    finally:
        if rfd >= 0:
            os.close(rfd)
        if not watching.done():
            watching.cancel()
            await asyncio.wait([watching])
    if not messages:
        raise Internal(f"conmon exited (status {proc.returncode}) without reporting the container's creation")
    msg = messages[0]
    if msg.failed:
        raise Internal(f"creating the container failed: {_runtime_message(msg.message)}")
    if not monitor_pid:
        raise Internal(f"conmon reported the container created but its monitor is gone "
                       f"(first process exited with status {proc.returncode})")
    return Created(msg.value, monitor_pid, monitor_start)


def _read_monitor(pidfile: str) -> tuple[int, int]:
    """Blocking: the monitor's pid and start time, (0, 0) if it is gone."""
    try:
        pid = read_pidfile(pidfile)
    except (OSError, ValueError):
        return 0, 0
    start = process_start_time(pid)
    return (pid, start) if start else (0, 0)


def _runtime_message(message: str) -> str:
    text = message.strip()
    if 'msg="' in text:
        text = text.rsplit('msg="', 1)[1].rsplit('"', 1)[0].replace('\\"', '"')
    return text or "the OCI runtime gave no reason"


def read_pidfile(path: str) -> int:
    with open(path) as f:
        return int(f.read().strip())


async def reopen_log(ctl_fifo: str) -> None:
    """Asks conmon to reopen the container log at its path (kubelet has
    renamed the old file)."""
    def _write() -> None:
        # O_NONBLOCK: fail at once (ENXIO) if no conmon reads the FIFO any more.
        fd = os.open(ctl_fifo, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            os.write(fd, b"2 0 0\n")
        finally:
            os.close(fd)
    await asyncio.to_thread(_write)
