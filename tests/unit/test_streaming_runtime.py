"""The runtime halves of streaming, on real kernel objects where that needs
no container: the exec reaper as a real subreaper, attach over a real
SOCK_SEQPACKET socket (standing in for conmon's), port-forward's connect."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runtime import attach, port_forward
from runtime.errors import FailedPrecondition, NotFound
from runtime.stream_io import ExecIO, InputPipe, TerminalSize

REPO = Path(__file__).resolve().parents[2]


class Sink:
    def __init__(self) -> None:
        self.data = bytearray()

    async def write(self, data: bytes) -> None:
        self.data += data


def test_attach_packet_and_resize_formats():
    assert attach.parse_packet(b"\x02hello") == (2, b"hello")
    assert attach.parse_packet(b"\x03") == (3, b"")
    assert attach.resize_line(TerminalSize(width=80, height=24)) == b"1 24 80\n"


def _reaper(tmp_path: Path, script: str) -> subprocess.Popen:
    pid_file = tmp_path / "pid"
    return subprocess.Popen([sys.executable, "-m", "runtime.exec_reaper", str(pid_file), "sh", "-c",
                             script.replace("PIDFILE", str(pid_file))], cwd=REPO)


def test_reaper_waits_for_the_detached_process_and_reports_its_status(tmp_path):
    # The shell exits at once, like `runc exec --detach`; its orphan is ours.
    p = _reaper(tmp_path, "(sleep 0.3; exit 7) & echo $! > PIDFILE")
    assert p.wait(30) == 7
    p = _reaper(tmp_path, "(sleep 0.3; kill -9 $(sh -c 'echo $PPID')) & echo $! > PIDFILE")
    assert p.wait(30) == 137
    p = _reaper(tmp_path, "exit 3")
    assert p.wait(30) == 125  # the "runtime" failed before anything ran


def test_reaper_sigterm_kills_the_exec_process(tmp_path):
    p = _reaper(tmp_path, "sleep 60 & echo $! > PIDFILE")
    deadline = time.monotonic() + 10
    while not (tmp_path / "pid").exists() or not (tmp_path / "pid").read_text().strip():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    target = int((tmp_path / "pid").read_text())
    time.sleep(0.2)
    p.send_signal(signal.SIGTERM)
    assert p.wait(30) == 137
    assert not Path(f"/proc/{target}").exists()


def test_attach_over_seqpacket_with_a_long_path(tmp_path):
    # Longer than sun_path allows: attach must reach it through /proc/self/fd.
    d = tmp_path / ("x" * 60) / ("y" * 60)
    d.mkdir(parents=True)
    path = d / "attach"
    assert len(str(path)) > 108

    async def main() -> tuple[bytes, bytes, bytes]:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        fd = os.open(d, os.O_PATH)
        listener.bind(f"/proc/self/fd/{fd}/attach")
        os.close(fd)
        listener.listen(1)
        listener.setblocking(False)
        loop = asyncio.get_running_loop()
        got = bytearray()

        async def fake_conmon() -> None:
            conn, _ = await loop.sock_accept(listener)
            with conn:
                await loop.sock_sendall(conn, b"\x02out")
                await loop.sock_sendall(conn, b"\x03err")
                while data := await loop.sock_recv(conn, 65536):
                    got.extend(data)
                # stdin closed (SHUT_WR): the container "exits".
        srv = asyncio.create_task(fake_conmon())
        stdin, out, err = InputPipe(), Sink(), Sink()
        io = ExecIO(stdin=stdin, stdout=out, stderr=err, tty=False)
        stdin.feed(b"typed")
        stdin.feed_eof()
        await asyncio.wait_for(attach.attach(str(path), str(d / "ctl"), io), 10)
        await srv
        listener.close()
        return bytes(out.data), bytes(err.data), bytes(got)

    assert asyncio.run(main()) == (b"out", b"err", b"typed")


def test_attach_to_a_missing_socket_fails_clearly(tmp_path):
    io = ExecIO(stdin=None, stdout=Sink(), stderr=None, tty=False)
    with pytest.raises(FailedPrecondition):
        asyncio.run(attach.attach(str(tmp_path / "attach"), "", io))


def test_attach_stops_when_the_client_leaves(tmp_path):
    async def main() -> None:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        listener.bind(str(tmp_path / "attach"))
        listener.listen(1)
        io = ExecIO(stdin=None, stdout=Sink(), stderr=None, tty=False)
        task = asyncio.create_task(attach.attach(str(tmp_path / "attach"), "", io))
        await asyncio.sleep(0.2)
        assert not task.done()  # a quiet container: nothing to read
        io.client_gone.set()
        await asyncio.wait_for(task, 5)
        listener.close()
    asyncio.run(main())


def test_port_forward_connect_on_host_network_and_errors():
    async def main() -> None:
        async def hello(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            w.write(b"hello")
            await w.drain()
            w.close()
        srv = await asyncio.start_server(hello, "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        r, w = await port_forward.connect("", port)
        assert await r.read() == b"hello"
        w.close()
        srv.close()
        with pytest.raises(FailedPrecondition):
            await port_forward.connect("", port)
        with pytest.raises(NotFound):
            await port_forward.connect("/run/netns/crispy-does-not-exist", port)
    asyncio.run(main())


def test_socket_in_netns_errors_reach_the_caller(tmp_path):
    not_a_netns = tmp_path / "plain-file"
    not_a_netns.write_text("")

    async def main() -> None:
        with pytest.raises(OSError):
            await port_forward._in_own_thread(port_forward.socket_in_netns, str(not_a_netns))
    asyncio.run(main())
