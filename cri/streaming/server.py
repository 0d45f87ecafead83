"""The streaming server's asyncio shell: accepts TCP connections, reads the
upgrade request, takes the token, and runs exec/attach/port-forward over
SPDY (what kubelet speaks) or WebSocket (crictl -r websocket, direct
clients). Every protocol decision lives in the sans-IO cores next door."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from cri.proto import api_pb2 as pb
from cri.streaming import http_upgrade, portforward, remotecommand, spdy, websocket
from cri.streaming.backend import StreamBackend
from cri.streaming.http_upgrade import HttpError
from cri.streaming.spdy_connection import SpdyClosed, SpdyConnection, SpdyStream
from cri.streaming.tokens import TokenCache
from cri.streaming.ws_connection import ChannelStream, ConnectionClosed, WebSocketConnection, WebSocketTunnel
from runtime.errors import CrispyError
from runtime.stream_io import ExecIO, InputPipe

log = logging.getLogger("crispy.streaming")

READ_CHUNK = 64 * 1024
KINDS = ("exec", "attach", "portforward")


@dataclass
class ServerOptions:
    address: str = "127.0.0.1"
    port: int = 0
    creation_timeout: float = 30.0
    idle_timeout: float = 4 * 3600.0


# ---- running a remote command over any transport ---------------------------

async def run_remotecommand(io: ExecIO, protocol: str, run: Callable[[ExecIO], Awaitable[int | None]],
                            command: list[str] | None) -> bytes:
    """Runs `run` and returns the error-stream payload for `protocol`."""
    try:
        code = await run(io)
    except CrispyError as exc:
        status = remotecommand.internal_error_status(exc.message)
    except (SpdyClosed, ConnectionClosed):
        status = remotecommand.internal_error_status("client went away")
    except Exception as exc:  # noqa: BLE001 - reported to the client, logged here
        log.error("stream command failed", exc_info=exc)
        status = remotecommand.internal_error_status(f"{type(exc).__name__}: {exc}")
    else:
        status = remotecommand.success_status() if not code else remotecommand.exit_code_status(code, command)
    return remotecommand.error_stream_payload(protocol, status)


async def _pump_resize(source: InputPipe, queue: asyncio.Queue[remotecommand.TerminalSize]) -> None:
    decoder = remotecommand.ResizeDecoder()
    while data := await source.read():
        try:
            for size in decoder.feed(data):
                queue.put_nowait(size)
        except ValueError as exc:
            log.info("bad resize message", extra={"fields": {"error": str(exc)}})
            return


# ---- the server ---------------------------------------------------------------

class StreamingServer:
    def __init__(self, options: ServerOptions, backend: StreamBackend) -> None:
        self.options = options
        self.backend = backend
        self.tokens = TokenCache()
        self._server: asyncio.base_events.Server | None = None
        self._conns: set[asyncio.Task[Any]] = set()
        self.port = 0

    # ---- lifecycle / URLs ----------------------------------------------

    async def start(self) -> None:
        prepare = getattr(self.backend, "prepare", None)
        if prepare is not None:
            await prepare()
        self._server = await asyncio.start_server(self._on_connection, self.options.address, self.options.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("streaming server listening", extra={"fields": {"address": self.options.address, "port": self.port}})

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for t in list(self._conns):
            t.cancel()
        if self._conns:
            await asyncio.gather(*self._conns, return_exceptions=True)

    def open_sessions(self) -> int:
        """Stream connections open (exec, attach, port-forward)."""
        return len(self._conns)

    @property
    def base_url(self) -> str:
        host = self.options.address
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    def issue(self, kind: str, request: Any) -> str:
        """Stores `request` under a fresh token and returns its URL."""
        return f"{self.base_url}/{kind}/{self.tokens.insert(kind, request)}"

    # ---- per connection -------------------------------------------------

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, OSError, SpdyClosed, ConnectionClosed):
            pass
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - one bad connection must not kill the server
            log.error("stream connection failed", exc_info=exc)
        finally:
            self._conns.discard(task)
            if not writer.is_closing():
                writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        parser = http_upgrade.RequestParser()
        try:
            request = await asyncio.wait_for(self._read_head(reader, parser), self.options.creation_timeout)
        except asyncio.TimeoutError:
            return
        except HttpError as err:
            writer.write(http_upgrade.error_response(err))
            await writer.drain()
            return
        if request is None:
            return
        try:
            kind, payload = self._route(request)
        except HttpError as err:
            writer.write(http_upgrade.error_response(err))
            await writer.drain()
            return
        log.debug("stream request", extra={"fields": {"kind": kind, "upgrade": request.upgrade_to()}})
        try:
            if request.upgrade_to() == "spdy":
                await self._serve_spdy(kind, payload, request, reader, writer, parser.trailing)
            elif request.upgrade_to() == "websocket":
                await self._serve_websocket(kind, payload, request, reader, writer, parser.trailing)
            else:
                raise HttpError(400, "this endpoint needs a protocol upgrade (SPDY/3.1 or websocket)")
        except HttpError as err:
            writer.write(http_upgrade.error_response(err))
            await writer.drain()

    @staticmethod
    async def _read_head(reader: asyncio.StreamReader,
                         parser: http_upgrade.RequestParser) -> http_upgrade.Request | None:
        while True:
            data = await reader.read(4096)
            if not data:
                return None
            req = parser.feed(data)
            if req is not None:
                return req

    def _route(self, request: http_upgrade.Request) -> tuple[str, Any]:
        if request.method not in ("GET", "POST"):
            raise HttpError(405, f"method {request.method} not allowed; use GET or POST")
        parts = request.path.strip("/").split("/")
        if len(parts) != 2 or parts[0] not in KINDS:
            raise HttpError(404, f"no such endpoint {request.path!r}; want /exec|/attach|/portforward/<token>")
        payload = self.tokens.consume(parts[0], parts[1])
        if payload is None:
            raise HttpError(404, "unknown or expired stream token; ask the runtime for a new URL")
        return parts[0], payload

    def _runner(self, kind: str, payload: Any) -> tuple[remotecommand.StreamOptions,
                                                        Callable[[ExecIO], Awaitable[int | None]], list[str] | None]:
        opts = remotecommand.StreamOptions(stdin=payload.stdin, stdout=payload.stdout, stderr=payload.stderr,
                                           tty=payload.tty)
        if kind == "exec":
            return opts, (lambda io: self.backend.exec(payload, io)), list(payload.cmd)
        return opts, (lambda io: self.backend.attach(payload, io)), None

    # ---- SPDY -------------------------------------------------------------

    async def _serve_spdy(self, kind: str, payload: Any, request: http_upgrade.Request,
                          reader: asyncio.StreamReader, writer: asyncio.StreamWriter, early: bytes) -> None:
        supported = portforward.SPDY_PROTOCOLS if kind == "portforward" else remotecommand.SPDY_PROTOCOLS
        protocol = http_upgrade.negotiate(request, supported)
        writer.write(http_upgrade.spdy_switching_protocols(protocol))
        await writer.drain()
        conn = SpdyConnection(reader, writer, self.options.idle_timeout)
        conn.start(early)
        try:
            if kind == "portforward":
                await self._spdy_portforward(conn, payload)
            else:
                await self._spdy_remotecommand(conn, kind, payload, protocol or remotecommand.V1)
        finally:
            await conn.close()

    async def _spdy_remotecommand(self, conn: SpdyConnection, kind: str, payload: Any, protocol: str) -> None:
        opts, run, command = self._runner(kind, payload)
        expected = remotecommand.expected_streams(opts, protocol)
        streams: dict[str, SpdyStream] = {}
        deadline = time.monotonic() + self.options.creation_timeout
        while set(streams) != expected:
            try:
                s = await asyncio.wait_for(conn.new_streams.get(), max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                log.info("client did not open its streams in time", extra={"fields": {
                    "kind": kind, "have": sorted(streams), "want": sorted(expected)}})
                if "error" in streams:
                    await streams["error"].write(b"timed out waiting for client to create streams")
                return
            if s is None:
                return
            if s.type not in expected or s.type in streams:
                s.reset(spdy.PROTOCOL_ERROR)
                continue
            conn.reply(s)
            streams[s.type] = s
            if s.type not in ("stdin", "resize"):
                s.inbox.feed_eof()  # write-only: whatever the client sends there is dropped
        resize_q: asyncio.Queue[remotecommand.TerminalSize] | None = None
        resize_task = None
        if "resize" in streams:
            resize_q = asyncio.Queue()
            resize_task = asyncio.create_task(_pump_resize(streams["resize"].inbox, resize_q))
        io = ExecIO(stdin=streams["stdin"].inbox if "stdin" in streams else None,
                    stdout=streams.get("stdout"), stderr=streams.get("stderr"), tty=opts.tty, resize=resize_q,
                    client_gone=conn.closed_event)
        try:
            status = await run_remotecommand(io, protocol, run, command)
            err = streams["error"]
            if status and not conn.closed:
                await err.write(status)
            for name in ("stdout", "stderr", "error"):
                if name in streams:
                    await streams[name].end()
        finally:
            if resize_task is not None:
                resize_task.cancel()

    async def _spdy_portforward(self, conn: SpdyConnection, payload: pb.PortForwardRequest) -> None:
        tracker = portforward.PairTracker()
        forwards: set[asyncio.Task[None]] = set()
        try:
            while True:
                try:
                    s = await asyncio.wait_for(conn.new_streams.get(), 1.0)
                except asyncio.TimeoutError:
                    s = None
                    if not conn.closed:
                        for stale in tracker.expired(time.monotonic(), self.options.creation_timeout):
                            for sid in (stale.data_id, stale.error_id):
                                if sid is not None and sid in conn.streams:
                                    conn.streams[sid].reset()
                        continue
                if s is None:
                    break
                try:
                    pair = tracker.add(s.id, s.headers, time.monotonic())
                except portforward.PortForwardError as exc:
                    log.info("rejected port-forward stream", extra={"fields": {"error": str(exc)}})
                    s.reset(spdy.PROTOCOL_ERROR)
                    continue
                conn.reply(s)
                if s.type == portforward.STREAM_ERROR:
                    s.inbox.feed_eof()  # write-only
                if pair is not None:
                    assert pair.data_id is not None and pair.error_id is not None
                    t = asyncio.create_task(self._forward(payload.pod_sandbox_id, pair.port,
                                                          conn.streams[pair.data_id], conn.streams[pair.error_id]))
                    forwards.add(t)
                    t.add_done_callback(forwards.discard)
        finally:
            for t in list(forwards):
                t.cancel()
            if forwards:
                await asyncio.gather(*forwards, return_exceptions=True)

    async def _forward(self, sandbox_id: str, port: int, data: Any, error: Any) -> None:
        """Splices one client connection (data/error channel pair) to
        localhost:`port` in the pod."""
        try:
            r, w = await self.backend.open_port(sandbox_id, port)
        except Exception as exc:  # noqa: BLE001 - the client gets the text
            msg = exc.message if isinstance(exc, CrispyError) else str(exc)
            try:
                await error.write(f"error forwarding port {port} to pod {sandbox_id}: {msg}".encode())
                await error.end()
                await data.end()
            except (SpdyClosed, ConnectionClosed):
                pass
            return

        async def upstream() -> None:
            while chunk := await data.inbox.read():
                w.write(chunk)
                await w.drain()
            if w.can_write_eof():
                w.write_eof()

        up = asyncio.create_task(upstream())
        try:
            while chunk := await r.read(READ_CHUNK):
                await data.write(chunk)
            await data.end()
            await up
        except (SpdyClosed, ConnectionClosed, ConnectionError, OSError):
            pass
        finally:
            up.cancel()
            w.close()
            try:
                await error.end()
            except (SpdyClosed, ConnectionClosed):
                pass

    # ---- WebSocket -----------------------------------------------------

    async def _serve_websocket(self, kind: str, payload: Any, request: http_upgrade.Request,
                               reader: asyncio.StreamReader, writer: asyncio.StreamWriter, early: bytes) -> None:
        supported = portforward.WS_PROTOCOLS if kind == "portforward" else websocket.REMOTECOMMAND_PROTOCOLS
        if kind == "portforward" and portforward.SPDY_TUNNEL_PROTOCOL in request.tokens("sec-websocket-protocol"):
            handshake = websocket.server_handshake(request, [portforward.SPDY_TUNNEL_PROTOCOL])
            writer.write(handshake.response)
            await writer.drain()
            tunnel = WebSocketTunnel(reader, writer)
            tunnel.start(early)
            # The tunnel has the StreamWriter methods SpdyConnection calls, not the class.
            spdy_conn = SpdyConnection(tunnel.reader, tunnel, self.options.idle_timeout)  # type: ignore[arg-type]
            spdy_conn.start(b"")
            try:
                await self._spdy_portforward(spdy_conn, payload)
            finally:
                await spdy_conn.close()
            return
        ports: list[int] = []
        if kind == "portforward":
            if request.query.get("port"):
                try:
                    ports = portforward.ports_from_query(request.query)
                except portforward.PortForwardError as exc:
                    raise HttpError(400, str(exc)) from None
            else:
                ports = [int(p) for p in payload.port]
            if not ports:
                raise HttpError(400, "query parameter 'port' is required (e.g. ?port=80)")
        handshake = websocket.server_handshake(request, supported)
        writer.write(handshake.response)
        await writer.drain()
        conn = WebSocketConnection(reader, writer, handshake.protocol, self.options.idle_timeout)
        conn.start(early)
        try:
            if kind == "portforward":
                await self._ws_portforward(conn, payload.pod_sandbox_id, ports)
            else:
                opts, run, command = self._runner(kind, payload)
                await self._ws_remotecommand(conn, opts, run, command)
        finally:
            await conn.close()

    async def _ws_remotecommand(self, conn: WebSocketConnection, opts: remotecommand.StreamOptions,
                                run: Callable[[ExecIO], Awaitable[int | None]], command: list[str] | None) -> None:
        ch = websocket.Channel
        # v5 reports status like v4; it only adds the CLOSE signal.
        protocol = remotecommand.V4 if conn.protocol.startswith(("v4.", "v5.")) else remotecommand.V1
        stdin = conn.inbox(ch.STDIN) if opts.stdin else None
        stdout = conn.sink(ch.STDOUT) if opts.stdout else None
        stderr = conn.sink(ch.STDERR) if opts.stderr and not opts.tty else None
        resize_q: asyncio.Queue[remotecommand.TerminalSize] | None = asyncio.Queue() if opts.tty else None
        resize_task = (asyncio.create_task(_pump_resize(conn.inbox(ch.RESIZE), resize_q))
                       if resize_q is not None else None)
        # Readiness: an empty message on the lowest writable channel.
        ready = ch.STDOUT if stdout else ch.STDERR if stderr else ch.ERROR
        await conn.send(ready, b"")
        io = ExecIO(stdin=stdin, stdout=stdout, stderr=stderr, tty=opts.tty, resize=resize_q,
                    client_gone=conn.closed_event)
        try:
            status = await run_remotecommand(io, protocol, run, command)
            if status and not conn.closed:
                await conn.send(ch.ERROR, status)
        finally:
            if resize_task is not None:
                resize_task.cancel()

    async def _ws_portforward(self, conn: WebSocketConnection, sandbox_id: str, ports: list[int]) -> None:
        tasks = []
        pairs = []
        for i, port in enumerate(ports):
            data = ChannelStream(conn, portforward.data_channel(i))
            error = ChannelStream(conn, portforward.error_channel(i))
            error.inbox.feed_eof()  # write-only
            pairs.append((port, data, error))
        for port, data, error in pairs:
            await data.write(portforward.port_prefix(port))
            await error.write(portforward.port_prefix(port))
            tasks.append(asyncio.create_task(self._forward(sandbox_id, port, data, error)))
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
