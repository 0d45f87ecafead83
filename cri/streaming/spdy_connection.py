"""asyncio shell around spdy.SpdySession, the twin of ws_connection.py: used
for SPDY/3.1 upgrades and for SPDY tunnelled in WebSocket messages."""

from __future__ import annotations

import asyncio
import logging
import time

from cri.streaming import spdy
from cri.streaming.shutdown import close_transport
from runtime.stream_io import InputPipe

log = logging.getLogger("crispy.streaming")

READ_CHUNK = 64 * 1024
# Client bytes buffered for one stream before we stop reading the socket:
# SPDY as Kubernetes uses it has no flow control, TCP has.
INBOX_LIMIT = 1024 * 1024


class SpdyClosed(Exception):
    pass


class SpdyStream:
    def __init__(self, conn: "SpdyConnection", stream_id: int, headers: dict[str, list[str]]) -> None:
        self.conn = conn
        self.id = stream_id
        self.headers = headers
        self.inbox = InputPipe()

    @property
    def type(self) -> str:
        return (self.headers.get("streamtype") or [""])[0]

    async def write(self, data: bytes) -> None:
        if self.conn.closed:
            raise SpdyClosed()
        if data:
            self.conn.session.send_data(self.id, data)
            await self.conn.flush()

    async def end(self) -> None:
        if not self.conn.closed:
            self.conn.session.end_stream(self.id)
            await self.conn.flush()

    def reset(self, status: int = spdy.CANCEL) -> None:
        if not self.conn.closed:
            self.conn.session.reset(self.id, status)
            self.conn.flush_nowait()
        self.inbox.feed_eof()


class SpdyConnection:
    """Owns the socket after the 101: one reader task feeds the session and
    routes data to per-stream inboxes; writers append frames and flush."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, idle_timeout: float) -> None:
        self.reader = reader
        self.writer = writer
        self.session = spdy.SpdySession()
        self.streams: dict[int, SpdyStream] = {}
        self.new_streams: asyncio.Queue[SpdyStream | None] = asyncio.Queue()
        self.closed = False
        self.closed_event = asyncio.Event()
        self.idle_timeout = idle_timeout
        self.last_activity = time.monotonic()
        self._task: asyncio.Task[None] | None = None

    def start(self, early: bytes) -> None:
        self._task = asyncio.create_task(self._read_loop(early))

    def flush_nowait(self) -> None:
        data = self.session.data_to_send()
        if data and not self.closed:
            self.last_activity = time.monotonic()
            self.writer.write(data)

    async def flush(self) -> None:
        self.flush_nowait()
        try:
            await self.writer.drain()
        except (ConnectionError, OSError):
            self._mark_closed()
            raise SpdyClosed() from None

    def reply(self, stream: SpdyStream) -> None:
        self.session.reply(stream.id)
        self.flush_nowait()

    async def _read_loop(self, early: bytes) -> None:
        try:
            if early:
                self._dispatch(early)
            while not self.closed:
                try:
                    data = await asyncio.wait_for(self.reader.read(READ_CHUNK), timeout=min(self.idle_timeout, 60.0))
                except asyncio.TimeoutError:
                    if time.monotonic() - self.last_activity >= self.idle_timeout:
                        log.info("closing idle stream connection")
                        self.session.goaway()
                        self.flush_nowait()
                        self.writer.close()
                        break
                    continue
                if not data:
                    break
                self.last_activity = time.monotonic()
                self._dispatch(data)
                for stream in list(self.streams.values()):
                    await stream.inbox.wait_below(INBOX_LIMIT)
        except spdy.ProtocolError as exc:
            log.info("SPDY protocol error from client", extra={"fields": {"error": str(exc)}})
            self.session.goaway(spdy.PROTOCOL_ERROR)
            self.flush_nowait()
        except (ConnectionError, OSError):
            pass
        finally:
            self._mark_closed()

    def _dispatch(self, data: bytes) -> None:
        for ev in self.session.receive_data(data):
            if isinstance(ev, spdy.StreamOpened):
                s = self.streams[ev.stream_id] = SpdyStream(self, ev.stream_id, ev.headers)
                self.new_streams.put_nowait(s)
            elif isinstance(ev, spdy.StreamData):
                if ev.stream_id in self.streams:
                    self.streams[ev.stream_id].inbox.feed(ev.data)
            elif isinstance(ev, spdy.StreamEnded):
                if ev.stream_id in self.streams:
                    self.streams[ev.stream_id].inbox.feed_eof()
            elif isinstance(ev, spdy.StreamReset):
                stream = self.streams.pop(ev.stream_id, None)
                if stream is not None:
                    stream.inbox.feed_eof()
            elif isinstance(ev, spdy.ConnectionClosing):
                self.new_streams.put_nowait(None)
        self.flush_nowait()  # PING echoes, refusals

    def _mark_closed(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.closed_event.set()
        for s in self.streams.values():
            s.inbox.feed_eof()
        self.new_streams.put_nowait(None)

    async def close(self) -> None:
        if not self.closed:
            self.session.goaway()
            self.flush_nowait()
            self._mark_closed()
        await close_transport(self.writer, self._task)
