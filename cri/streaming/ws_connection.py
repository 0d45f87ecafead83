"""asyncio shell around websocket.WebSocketSession: one reader task routes
channel messages to per-channel inboxes; writers send channel messages."""

from __future__ import annotations

import asyncio
import logging
import time

from cri.streaming import websocket
from cri.streaming.shutdown import close_transport
from runtime.stream_io import InputPipe

log = logging.getLogger("crispy.streaming")

# Client bytes buffered per channel before we stop reading the socket.
INBOX_LIMIT = 1024 * 1024


class ConnectionClosed(Exception):
    pass


class WebSocketConnection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, protocol: str,
                 idle_timeout: float) -> None:
        self.reader = reader
        self.writer = writer
        self.protocol = protocol
        self.b64 = websocket.is_base64_protocol(protocol)
        self.session = websocket.WebSocketSession()
        self.inboxes: dict[int, InputPipe] = {}
        self.closed = False
        self.closed_event = asyncio.Event()
        self.idle_timeout = idle_timeout
        self.last_activity = time.monotonic()
        self._task: asyncio.Task[None] | None = None

    def inbox(self, channel: int) -> InputPipe:
        return self.inboxes.setdefault(channel, InputPipe())

    def sink(self, channel: int) -> "ChannelStream":
        return ChannelStream(self, channel)

    def start(self, early: bytes) -> None:
        self._task = asyncio.create_task(self._read_loop(early))

    def _flush_nowait(self) -> None:
        data = self.session.data_to_send()
        if data and not self.closed:
            self.last_activity = time.monotonic()
            self.writer.write(data)

    async def send(self, channel: int, data: bytes) -> None:
        if self.closed or self.session.close_sent:
            raise ConnectionClosed()
        self.session.send(*websocket.encode_channel(channel, data, self.b64))
        self._flush_nowait()
        try:
            await self.writer.drain()
        except (ConnectionError, OSError):
            self._mark_closed()
            raise ConnectionClosed() from None

    async def _read_loop(self, early: bytes) -> None:
        try:
            if early:
                self._dispatch(early)
            while not self.closed and not self.session.close_received:
                try:
                    data = await asyncio.wait_for(self.reader.read(65536), timeout=min(self.idle_timeout, 60.0))
                except asyncio.TimeoutError:
                    if time.monotonic() - self.last_activity >= self.idle_timeout:
                        log.info("closing idle stream connection")
                        self.session.close(1001, "idle")
                        self._flush_nowait()
                        self.writer.close()
                        break
                    continue
                if not data:
                    break
                self.last_activity = time.monotonic()
                self._dispatch(data)
                for box in list(self.inboxes.values()):
                    await box.wait_below(INBOX_LIMIT)
        except websocket.WebSocketError as exc:
            log.info("WebSocket protocol error from client", extra={"fields": {"error": str(exc)}})
            self._flush_nowait()
        except (ConnectionError, OSError):
            pass
        finally:
            self._mark_closed()

    def _dispatch(self, data: bytes) -> None:
        for ev in self.session.receive_data(data):
            if isinstance(ev, websocket.Message):
                if not ev.data:
                    continue
                channel, payload = websocket.decode_channel(ev, self.b64)
                if channel == websocket.CLOSE_CHANNEL and self.protocol == websocket.V5_PROTOCOL:
                    for closed in payload[:1]:
                        if closed in self.inboxes:
                            self.inboxes[closed].feed_eof()
                    continue
                box = self.inboxes.get(channel)
                if box is not None:  # channels nobody reads are dropped
                    box.feed(payload)
        self._flush_nowait()

    def _mark_closed(self) -> None:
        if not self.closed:
            self._flush_nowait()
            self.closed = True
            self.closed_event.set()
            for box in self.inboxes.values():
                box.feed_eof()

    async def close(self) -> None:
        if not self.closed:
            self.session.close()
            self._flush_nowait()
            self._mark_closed()
        await close_transport(self.writer, self._task)


class ChannelStream:
    """One channel as a bidirectional stream (port-forward data/error)."""

    def __init__(self, conn: WebSocketConnection, channel: int) -> None:
        self.conn = conn
        self.channel = channel
        self.inbox = conn.inbox(channel)

    async def write(self, data: bytes) -> None:
        if data:
            await self.conn.send(self.channel, data)

    async def end(self) -> None:
        """WebSocket channels have no half-close; the connection's end is it."""


class WebSocketTunnel:
    """A byte stream carried in binary WebSocket messages (the
    "SPDY/3.1+portforward.k8s.io" subprotocol: client-go tunnels a whole
    SPDY connection this way). `reader` is an asyncio.StreamReader; the
    object itself has the StreamWriter methods SpdyConnection uses."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._raw_reader = reader
        self._raw_writer = writer
        self.session = websocket.WebSocketSession()
        self.reader = asyncio.StreamReader()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def start(self, early: bytes) -> None:
        self._task = asyncio.create_task(self._pump(early))

    def _flush(self) -> None:
        data = self.session.data_to_send()
        if data and not self._raw_writer.is_closing():
            self._raw_writer.write(data)

    async def _pump(self, early: bytes) -> None:
        try:
            data = early
            while True:
                if data:
                    for ev in self.session.receive_data(data):
                        if isinstance(ev, websocket.Message) and ev.data:
                            self.reader.feed_data(ev.data)
                    self._flush()
                    if self.session.close_received:
                        break
                data = await self._raw_reader.read(65536)
                if not data:
                    break
        except (websocket.WebSocketError, ConnectionError, OSError):
            self._flush()
        finally:
            self.reader.feed_eof()

    def write(self, data: bytes) -> None:
        if data and not self.session.close_sent:
            self.session.send(websocket.OP_BINARY, data)
            self._flush()

    async def drain(self) -> None:
        await self._raw_writer.drain()

    def is_closing(self) -> bool:
        return self._closing or self._raw_writer.is_closing()

    def close(self) -> None:
        if not self._closing:
            self._closing = True
            self.session.close()
            self._flush()
            self._raw_writer.close()

    async def wait_closed(self) -> None:
        await self._raw_writer.wait_closed()
        if self._task is not None:
            self._task.cancel()
