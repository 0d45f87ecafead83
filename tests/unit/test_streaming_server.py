"""The streaming server over a real TCP socket on 127.0.0.1, driven by our
own minimal SPDY and WebSocket clients. The runtime side is a local
backend here (commands run as plain host processes); the container and
netns paths have their own integration tests."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import subprocess
from typing import Any, AsyncIterator

from cri.proto import api_pb2 as pb
from cri.streaming import remotecommand, spdy, websocket
from cri.streaming.server import ServerOptions, StreamingServer
from runtime.errors import FailedPrecondition
from runtime.stream_io import ExecIO
from tests.streaming_client import SpdyClient, WsClient


class LocalBackend:
    """Runs exec commands as host processes; attach echoes stdin; ports
    connect to 127.0.0.1 on the host."""

    def __init__(self) -> None:
        self.resizes: list[remotecommand.TerminalSize] = []

    async def exec(self, request: pb.ExecRequest, io: ExecIO) -> int:
        proc = await asyncio.create_subprocess_exec(
            *request.cmd, stdin=subprocess.PIPE if io.stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)

        async def out(stream: asyncio.StreamReader, sink: Any) -> None:
            while data := await stream.read(65536):
                if sink is not None:
                    await sink.write(data)

        async def feed() -> None:
            while data := await io.stdin.read():
                proc.stdin.write(data)
                await proc.stdin.drain()
            proc.stdin.close()

        async def resizes() -> None:
            while io.resize is not None:
                self.resizes.append(await io.resize.get())

        extra = [asyncio.create_task(resizes())]
        if io.stdin:
            extra.append(asyncio.create_task(feed()))
        try:
            await asyncio.gather(out(proc.stdout, io.stdout), out(proc.stderr, io.stderr))
            code = await proc.wait()
            await asyncio.sleep(0.05)
        finally:
            for t in extra:
                t.cancel()
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        return code

    async def attach(self, request: pb.AttachRequest, io: ExecIO) -> None:
        if request.container_id == "broken":
            raise FailedPrecondition("container broken is not running")
        while data := await io.stdin.read():
            await io.stdout.write(data.upper())

    async def open_port(self, sandbox_id: str, port: int):
        return await asyncio.open_connection("127.0.0.1", port)


def run(coro_fn, **opts):  # type: ignore[no-untyped-def]
    async def main() -> None:
        server = StreamingServer(ServerOptions(**opts), LocalBackend())
        await server.start()
        try:
            await asyncio.wait_for(coro_fn(server), 60)
        finally:
            await server.stop()
    asyncio.run(main())


def exec_req(cmd: list[str], stdin=False, stdout=True, stderr=True, tty=False) -> pb.ExecRequest:
    return pb.ExecRequest(container_id="c", cmd=cmd, stdin=stdin, stdout=stdout, stderr=stderr, tty=tty)


async def _spdy_exec(server, req, protocol, stdin_data: bytes | None = None):
    url = server.issue("exec", req)
    status, headers, c = await SpdyClient.connect(url, [protocol])
    assert status == 101, c
    assert headers["x-stream-protocol-version"] == [protocol]
    ids = {"error": c.open({"streamType": "error"})}
    if req.stdin:
        ids["stdin"] = c.open({"streamType": "stdin"})
    if req.stdout:
        ids["stdout"] = c.open({"streamType": "stdout"})
    if req.stderr:
        ids["stderr"] = c.open({"streamType": "stderr"})
    if req.tty and protocol in (remotecommand.V3, remotecommand.V4):
        ids["resize"] = c.open({"streamType": "resize"})
    await c.wait_for(lambda: set(ids.values()) <= c.replied)
    if "resize" in ids:
        c.send(ids["resize"], json.dumps({"Width": 120, "Height": 40}).encode())
    if stdin_data is not None:
        c.send(ids["stdin"], stdin_data, fin=True)
    await c.wait_for(lambda: ids["error"] in c.fin)
    await c.wait_for(lambda: c.closed)
    return c, ids


def test_spdy_exec_v4_nonzero_exit():
    async def body(server):
        c, ids = await _spdy_exec(server, exec_req(["sh", "-c", "echo hi; echo oops >&2; exit 3"]), remotecommand.V4)
        assert c.text(ids["stdout"]) == "hi\n"
        assert c.text(ids["stderr"]) == "oops\n"
        status = json.loads(c.text(ids["error"]))
        assert status["status"] == "Failure" and status["reason"] == "NonZeroExitCode"
        assert status["details"]["causes"] == [{"reason": "ExitCode", "message": "3"}]
        assert {ids["stdout"], ids["stderr"], ids["error"]} <= c.fin and c.goaway
        await c.close()
    run(body)


def test_spdy_exec_stdin_success_and_resize():
    async def body(server):
        c, ids = await _spdy_exec(server, exec_req(["cat"], stdin=True, stderr=False), remotecommand.V4, b"ping\n" * 1000)
        assert c.text(ids["stdout"]) == "ping\n" * 1000
        assert json.loads(c.text(ids["error"])) == {"metadata": {}, "status": "Success"}
        await c.close()
        c, ids = await _spdy_exec(server, exec_req(["sh", "-c", "sleep 0.3; echo tty"], stderr=False, tty=True), remotecommand.V3)
        assert c.text(ids["stdout"]) == "tty\n" and c.text(ids["error"]) == ""
        assert server.backend.resizes == [remotecommand.TerminalSize(120, 40)]
        await c.close()
    run(body)


def test_spdy_older_protocols_send_plain_text_errors():
    async def body(server):
        c, ids = await _spdy_exec(server, exec_req(["sh", "-c", "exit 2"]), remotecommand.V2)
        assert c.text(ids["error"]).startswith("command terminated with non-zero exit code")
        await c.close()
        c, ids = await _spdy_exec(server, exec_req(["true"]), remotecommand.V1)
        assert c.text(ids["error"]) == ""
        await c.close()
    run(body)


def test_backend_errors_reach_the_error_stream():
    async def body(server):
        url = server.issue("attach", pb.AttachRequest(container_id="broken", stdin=True, stdout=True))
        _, _, c = await SpdyClient.connect(url, [remotecommand.V4])
        e, i, o = (c.open({"streamType": t}) for t in ("error", "stdin", "stdout"))
        await c.wait_for(lambda: e in c.fin)
        status = json.loads(c.text(e))
        assert status["reason"] == "InternalError" and "not running" in status["message"]
        await c.close()
    run(body)


def test_negotiation_failure_token_reuse_and_bad_paths():
    async def body(server):
        url = server.issue("exec", exec_req(["true"]))
        status, headers, resp = await SpdyClient.connect(url, ["v9.channel.k8s.io"])
        assert status == 400
        assert headers["x-accepted-stream-protocol-versions"] == remotecommand.SPDY_PROTOCOLS
        # The token was consumed by that (failed) request.
        status, _, resp = await SpdyClient.connect(url, [remotecommand.V4])
        assert status == 404 and b"token" in resp
        status, _, _ = await SpdyClient.connect(url.replace("/exec/", "/attach/"), [remotecommand.V4])
        assert status == 404
        status, _, _ = await SpdyClient.connect(f"{server.base_url}/nothing/here", [remotecommand.V4])
        assert status == 404
    run(body)


def test_ping_echo_and_creation_timeout():
    async def body(server):
        url = server.issue("exec", exec_req(["true"]))
        _, _, c = await SpdyClient.connect(url, [remotecommand.V4])
        c.ping(1)
        c.ping(2)  # even: a reply to a ping of ours; never echoed
        await c.wait_for(lambda: c.pings == [1])
        e = c.open({"streamType": "error"})
        # stdout and stderr never come: the server gives up and closes.
        await c.wait_for(lambda: c.closed, timeout=10)
        assert "timed out" in c.text(e)
        await c.close()
    run(body, creation_timeout=0.5)


def test_unexpected_streams_are_reset():
    async def body(server):
        url = server.issue("exec", exec_req(["true"], stderr=False))
        _, _, c = await SpdyClient.connect(url, [remotecommand.V4])
        bogus = c.open({"streamType": "stderr"})
        await c.wait_for(lambda: bogus in c.reset)
        e = c.open({"streamType": "error"})
        c.open({"streamType": "stdout"})
        await c.wait_for(lambda: e in c.fin)
        assert json.loads(c.text(e))["status"] == "Success"
        await c.close()
    run(body)


def test_websocket_exec_binary_and_base64():
    async def body(server):
        for proto, _b64 in (("v4.channel.k8s.io", False), ("v4.base64.channel.k8s.io", True)):
            url = server.issue("exec", exec_req(["sh", "-c", "read x; echo got $x; echo e >&2; exit 4"], stdin=True))
            status, headers, c = await WsClient.connect(url, [proto])
            assert status == 101 and headers["sec-websocket-protocol"] == [proto]
            c.send(0, b"hello\n")
            await c.wait_closed()
            assert c.messages[0] == (1, b"")  # readiness on stdout
            assert c.channel(1) == b"got hello\n" and c.channel(2) == b"e\n"
            assert json.loads(c.channel(3))["details"]["causes"][0]["message"] == "4"
            assert c.close_frame is not None and c.close_frame.code == 1000
            await c.close()
    run(body)


@contextlib.asynccontextmanager
async def echo_listener() -> AsyncIterator[int]:
    """A TCP listener on loopback answering "echo:" + whatever it gets; yields its port."""
    async def echo(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while data := await r.read(65536):
            w.write(b"echo:" + data)
            await w.drain()
        w.close()
    listener = await asyncio.start_server(echo, "127.0.0.1", 0)
    try:
        yield listener.sockets[0].getsockname()[1]
    finally:
        listener.close()


def test_port_forward_spdy_and_websocket_against_local_listener():
    async def body(server):
        async with echo_listener() as port:
            url = server.issue("portforward", pb.PortForwardRequest(pod_sandbox_id="sb", port=[port]))
            status, headers, c = await SpdyClient.connect(url, ["portforward.k8s.io"])
            assert status == 101
            # Two concurrent forwards on one connection, one with request ids, one without.
            e1 = c.open({"streamType": "error", "port": str(port), "requestID": "0"})
            d1 = c.open({"streamType": "data", "port": str(port), "requestID": "0"})
            e2 = c.open({"streamType": "error", "port": str(port)})
            d2 = c.open({"streamType": "data", "port": str(port)})
            await c.wait_for(lambda: {e1, d1, e2, d2} <= c.replied)
            c.send(d1, b"one", fin=True)
            c.send(d2, b"two", fin=True)
            await c.wait_for(lambda: {d1, d2} <= c.fin)
            assert c.text(d1) == "echo:one" and c.text(d2) == "echo:two"
            # A port nobody listens on: the error text arrives on the error stream.
            e3 = c.open({"streamType": "error", "port": "1", "requestID": "9"})
            c.open({"streamType": "data", "port": "1", "requestID": "9"})
            await c.wait_for(lambda: e3 in c.fin)
            assert "error forwarding port 1" in c.text(e3)
            await c.close()

            url = server.issue("portforward", pb.PortForwardRequest(pod_sandbox_id="sb"))
            status, _, w = await WsClient.connect(f"{url}?port={port}", ["v4.channel.k8s.io"])
            assert status == 101
            w.send(0, b"ws")
            for _ in range(100):
                if w.channel(0) == port.to_bytes(2, "little") + b"echo:ws":
                    break
                await asyncio.sleep(0.05)
            assert w.channel(0) == port.to_bytes(2, "little") + b"echo:ws"
            assert w.channel(1) == port.to_bytes(2, "little")
            await w.close()
    run(body)


def test_large_stdin_round_trip_with_backpressure():
    blob = os.urandom(6 * 1024 * 1024)

    async def body(server):
        req = exec_req(["cat"], stdin=True, stderr=False)
        url = server.issue("exec", req)
        _, _, c = await SpdyClient.connect(url, [remotecommand.V4])
        e, i, o = (c.open({"streamType": t}) for t in ("error", "stdin", "stdout"))
        await c.wait_for(lambda: {e, i, o} <= c.replied)
        for off in range(0, len(blob), 60000):
            c.send(i, blob[off:off + 60000])
            await c.writer.drain()
        c.send(i, b"", fin=True)
        await c.wait_for(lambda: e in c.fin, timeout=60)
        assert hashlib.sha256(bytes(c.data[o])).hexdigest() == hashlib.sha256(blob).hexdigest()
        await c.close()
    run(body)


def test_idle_connections_are_closed():
    async def body(server):
        url = server.issue("exec", exec_req(["sleep", "30"], stderr=False))
        _, _, c = await SpdyClient.connect(url, [remotecommand.V4])
        for t in ("error", "stdout"):
            c.open({"streamType": t})
        # Nothing flows either way: the server hangs up on its own.
        await c.wait_for(lambda: c.closed, timeout=20)
        await c.close()
    run(body, idle_timeout=0.5)


def test_websocket_v5_close_signal_ends_stdin():
    async def body(server):
        url = server.issue("exec", exec_req(["cat"], stdin=True))
        status, headers, c = await WsClient.connect(url, ["v5.channel.k8s.io", "v4.channel.k8s.io"])
        assert status == 101 and headers["sec-websocket-protocol"] == ["v5.channel.k8s.io"]
        c.send(0, b"abc")
        c.send(255, b"\x00")  # CLOSE stdin: cat sees EOF and exits
        await c.wait_closed()
        assert c.channel(1) == b"abc" and json.loads(c.channel(3))["status"] == "Success"
        await c.close()
    run(body)


def test_port_forward_spdy_tunnelled_in_websocket():
    async def body(server):
        async with echo_listener() as port:
            url = server.issue("portforward", pb.PortForwardRequest(pod_sandbox_id="sb"))
            status, headers, w = await WsClient.connect(url, ["SPDY/3.1+portforward.k8s.io"])
            assert status == 101 and headers["sec-websocket-protocol"] == ["SPDY/3.1+portforward.k8s.io"]
            framer = spdy.SpdyFramer()
            w.b64 = False

            def send(frame: spdy.Frame) -> None:
                w.writer.write(websocket.encode_frame(websocket.OP_BINARY, framer.serialize(frame), mask=os.urandom(4)))
            send(spdy.SynStream(1, {"streamtype": ["error"], "port": [str(port)], "requestid": ["0"]}))
            send(spdy.SynStream(3, {"streamtype": ["data"], "port": [str(port)], "requestid": ["0"]}))
            send(spdy.DataFrame(3, b"tunnel", spdy.FLAG_FIN))
            # Messages are raw SPDY bytes here, not channel-framed.
            got = bytearray()
            frames: list[spdy.Frame] = []
            deadline = asyncio.get_running_loop().time() + 20
            while not any(isinstance(f, spdy.DataFrame) and f.stream_id == 3 and f.fin for f in frames):
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.05)
                raw = b"".join(bytes([c]) + d for c, d in w.messages)
                w.messages.clear()
                got += raw
                frames += framer.receive_data(bytes(got))
                got.clear()
            data = b"".join(f.data for f in frames if isinstance(f, spdy.DataFrame) and f.stream_id == 3)
            assert data == b"echo:tunnel"
            assert {f.stream_id for f in frames if isinstance(f, spdy.SynReply)} == {1, 3}
            await w.close()
    run(body)


def test_client_naming_no_protocol_gets_v1():
    async def body(server):
        url = server.issue("exec", exec_req(["sh", "-c", "echo v1; exit 2"], stderr=False))
        status, headers, c = await SpdyClient.connect(url, [])
        assert status == 101 and "x-stream-protocol-version" not in headers
        e, o = c.open({"streamType": "error"}), c.open({"streamType": "stdout"})
        await c.wait_for(lambda: e in c.fin)
        assert c.text(o) == "v1\n"
        assert c.text(e).startswith("command terminated with non-zero exit code")  # text, not JSON
        await c.close()
    run(body)
