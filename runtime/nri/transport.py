"""The asyncio shell around the multiplexer and ttrpc cores: one trunk
socket, a ttrpc client on one mux conn and a ttrpc server on the other.

The runtime calls the plugin's Plugin service on conn 1 and serves the
Runtime service on conn 2; a plugin does the reverse. Everything protocol
lives in multiplex.py and ttrpc.py; this module only moves bytes, matches
futures to replies and runs handlers as tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from runtime.nri import multiplex, ttrpc
from runtime.nri.ttrpc import Code, TtrpcError

log = logging.getLogger("crispy.nri")

# (method, request payload) -> reply payload; raise TtrpcError for a status.
Handler = Callable[[str, bytes], Awaitable[bytes]]

READ_CHUNK = 1 << 16


class ConnectionClosed(Exception):
    """The trunk is gone (peer hung up, protocol error, or closed by us)."""


class NriConnection:
    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        client_conn: int,
        server_conn: int,
        service: str,
        handler: Handler,
        on_close: Callable[[str], None] | None = None,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._client_conn = client_conn
        self._server_conn = server_conn
        self._service = service
        self._handler = handler
        self._on_close = on_close
        self._demux = multiplex.Demultiplexer()
        self._decoders = {client_conn: ttrpc.FrameDecoder(), server_conn: ttrpc.FrameDecoder()}
        self._client = ttrpc.ClientCore()
        self._server = ttrpc.ServerCore()
        self._waiting: dict[int, asyncio.Future[ttrpc.Reply]] = {}
        self._handlers: set[asyncio.Task[None]] = set()
        self._drain_lock = asyncio.Lock()
        self._reader_task: asyncio.Task[None] | None = None
        self.close_reason = ""
        self._closed = asyncio.Event()

    def start(self) -> None:
        if self._reader_task is None:
            self._reader_task = asyncio.create_task(self._read_loop(), name="nri-trunk-reader")

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    async def wait_closed(self) -> None:
        await self._closed.wait()

    async def call(self, service: str, method: str, payload: bytes, timeout: float) -> bytes:
        """One unary call; TtrpcError for a status, TimeoutError, ConnectionClosed."""
        if self.closed:
            raise ConnectionClosed(self.close_reason)
        # No await between numbering the stream and writing it: ttrpc servers
        # refuse a stream id lower than one they have already seen.
        stream_id, data = self._client.request(service, method, payload, timeout_ns=int(timeout * 1e9))
        fut: asyncio.Future[ttrpc.Reply] = asyncio.get_running_loop().create_future()
        self._waiting[stream_id] = fut
        try:
            await self._send(self._client_conn, data)
            reply = await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            self._client.forget(stream_id)
            raise
        finally:
            self._waiting.pop(stream_id, None)
        if reply.error is not None:
            raise reply.error
        return reply.payload

    async def close(self, reason: str = "closed") -> None:
        self._shut(reason)
        task = self._reader_task
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for t in list(self._handlers):
            t.cancel()
        with contextlib.suppress(Exception):
            await self._writer.wait_closed()

    # ---- internals ----

    def _shut(self, reason: str) -> None:
        if self._closed.is_set():
            return
        self.close_reason = reason
        self._closed.set()
        self._writer.close()
        for fut in self._waiting.values():
            if not fut.done():
                fut.set_exception(ConnectionClosed(reason))
        self._waiting.clear()
        if self._on_close is not None:
            try:
                self._on_close(reason)
            except Exception:  # a callback's bug must not keep the trunk half-open
                log.exception("NRI connection close callback failed")

    async def _send(self, conn_id: int, message: bytes) -> None:
        if self.closed:
            raise ConnectionClosed(self.close_reason)
        # Written before the first await; one write() per message keeps frames of concurrent senders whole.
        self._writer.write(multiplex.encode_message(conn_id, message))
        try:
            async with self._drain_lock:
                await self._writer.drain()
        except (ConnectionError, OSError) as e:
            self._shut(f"write failed: {e}")
            raise ConnectionClosed(self.close_reason) from e

    async def _read_loop(self) -> None:
        reason = "connection closed by peer"
        try:
            while True:
                data = await self._reader.read(READ_CHUNK)
                if not data:
                    if self._demux.pending:
                        reason = "connection closed by peer in the middle of a frame"
                    break
                for frame in self._demux.feed(data):
                    decoder = self._decoders.get(frame.conn_id)
                    if decoder is None:
                        continue  # nobody listens on that conn, as in Go
                    for msg in decoder.feed(frame.payload):
                        if frame.conn_id == self._client_conn:
                            self._on_reply(msg)
                        else:
                            self._on_request(msg)
        except asyncio.CancelledError:
            reason = self.close_reason or "closed"
            raise
        except (multiplex.MuxError, ttrpc.ProtocolError) as e:
            reason = f"protocol error: {e}"
        except (ConnectionError, OSError) as e:
            reason = f"read failed: {e}"
        except Exception as e:  # a bug here must still end the connection cleanly
            log.exception("NRI connection reader failed")
            reason = f"internal error: {e}"
        finally:
            self._shut(reason)

    def _on_reply(self, frame: ttrpc.Frame) -> None:
        reply = self._client.receive(frame)
        if reply is None:
            return
        fut = self._waiting.get(reply.stream_id)
        if fut is not None and not fut.done():
            fut.set_result(reply)

    def _on_request(self, frame: ttrpc.Frame) -> None:
        out = self._server.receive(frame)
        if out is None:
            return
        if isinstance(out, bytes):
            self._spawn(self._send_quietly(out))
            return
        self._spawn(self._serve(out))

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)

    async def _send_quietly(self, message: bytes) -> None:
        with contextlib.suppress(ConnectionClosed):
            await self._send(self._server_conn, message)

    async def _serve(self, call: ttrpc.Call) -> None:
        try:
            if call.service != self._service:
                raise TtrpcError(Code.UNIMPLEMENTED, f"service {call.service}")
            payload = await self._handler(call.method, call.payload)
            out = self._server.reply(call.stream_id, payload)
        except TtrpcError as e:
            out = self._server.fail(call.stream_id, e.code, e.message)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.exception("NRI %s.%s handler failed", call.service, call.method)
            out = self._server.fail(call.stream_id, Code.UNKNOWN, str(e) or type(e).__name__)
        await self._send_quietly(out)
