"""A minimal SPDY/3.1 and WebSocket client for tests of the streaming
server, built on our own sans-IO framers (the client side of each)."""

from __future__ import annotations

import asyncio
import base64
import os
from urllib.parse import urlsplit

from cri.streaming import spdy, websocket


async def _upgrade(url: str, headers: list[tuple[str, str]], method: str = "POST") -> tuple[int, dict[str, list[str]], bytes, asyncio.StreamReader, asyncio.StreamWriter]:
    u = urlsplit(url)
    reader, writer = await asyncio.open_connection(u.hostname, u.port)
    target = u.path + (f"?{u.query}" if u.query else "")
    lines = [f"{method} {target} HTTP/1.1", f"Host: {u.netloc}"] + [f"{k}: {v}" for k, v in headers]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    await writer.drain()
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = await reader.read(4096)
        if not chunk:
            break
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    status_line, *hlines = head.decode().split("\r\n")
    got: dict[str, list[str]] = {}
    for line in hlines:
        k, _, v = line.partition(":")
        got.setdefault(k.strip().lower(), []).append(v.strip())
    return int(status_line.split()[1]), got, rest, reader, writer


class SpdyClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, early: bytes) -> None:
        self.reader, self.writer = reader, writer
        self.framer = spdy.SpdyFramer()
        self.next_id = 1
        self.data: dict[int, bytearray] = {}
        self.fin: set[int] = set()
        self.replied: set[int] = set()
        self.reset: dict[int, int] = {}
        self.pings: list[int] = []
        self.goaway = False
        self.closed = False
        self._changed = asyncio.Event()
        self._task = asyncio.create_task(self._read(early))

    @classmethod
    async def connect(cls, url: str, protocols: list[str]) -> tuple[int, dict[str, list[str]], "SpdyClient | bytes"]:
        headers = [("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1")] + [("X-Stream-Protocol-Version", p) for p in protocols]
        status, got, rest, reader, writer = await _upgrade(url, headers)
        if status != 101:
            body = rest + await reader.read()
            writer.close()
            return status, got, body
        return status, got, cls(reader, writer, rest)

    async def _read(self, early: bytes) -> None:
        data = early
        try:
            while True:
                for f in self.framer.receive_data(data):
                    if isinstance(f, spdy.DataFrame):
                        self.data.setdefault(f.stream_id, bytearray()).extend(f.data)
                        if f.fin:
                            self.fin.add(f.stream_id)
                    elif isinstance(f, spdy.SynReply):
                        self.replied.add(f.stream_id)
                    elif isinstance(f, spdy.RstStream):
                        self.reset[f.stream_id] = f.status
                    elif isinstance(f, spdy.Ping):
                        self.pings.append(f.ping_id)
                    elif isinstance(f, spdy.GoAway):
                        self.goaway = True
                self._changed.set()
                data = await self.reader.read(65536)
                if not data:
                    break
        finally:
            self.closed = True
            self._changed.set()

    async def wait_for(self, cond, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
        async def loop() -> None:
            while not cond():
                if self.closed:
                    raise ConnectionError("connection closed before the condition held")
                self._changed.clear()
                await self._changed.wait()
        await asyncio.wait_for(loop(), timeout)

    def _send(self, frame: spdy.Frame) -> None:
        self.writer.write(self.framer.serialize(frame))

    def open(self, headers: dict[str, str], fin: bool = False) -> int:
        sid = self.next_id
        self.next_id += 2
        self._send(spdy.SynStream(sid, {k.lower(): [v] for k, v in headers.items()}, spdy.FLAG_FIN if fin else 0))
        return sid

    def send(self, sid: int, data: bytes, fin: bool = False) -> None:
        self._send(spdy.DataFrame(sid, data, spdy.FLAG_FIN if fin else 0))

    def ping(self, ping_id: int) -> None:
        self._send(spdy.Ping(ping_id))

    def text(self, sid: int) -> str:
        return bytes(self.data.get(sid, b"")).decode(errors="replace")

    async def close(self) -> None:
        self._task.cancel()
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, OSError):
            pass


class WsClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, early: bytes, b64: bool) -> None:
        self.reader, self.writer = reader, writer
        self.decoder = websocket.FrameDecoder(require_mask=False)
        self.b64 = b64
        self.messages: list[tuple[int, bytes]] = []
        self.close_frame: websocket.Close | None = None
        self.closed = False
        self._changed = asyncio.Event()
        self._task = asyncio.create_task(self._read(early))

    @classmethod
    async def connect(cls, url: str, protocols: list[str]) -> tuple[int, dict[str, list[str]], "WsClient | bytes"]:
        headers = [("Connection", "Upgrade"), ("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13"),
                   ("Sec-WebSocket-Key", base64.b64encode(os.urandom(16)).decode())]
        if protocols:
            headers.append(("Sec-WebSocket-Protocol", ", ".join(protocols)))
        status, got, rest, reader, writer = await _upgrade(url, headers, "GET")
        if status != 101:
            body = rest + await reader.read()
            writer.close()
            return status, got, body
        proto = (got.get("sec-websocket-protocol") or [""])[0]
        return status, got, cls(reader, writer, rest, websocket.is_base64_protocol(proto))

    async def _read(self, early: bytes) -> None:
        data = early
        try:
            while True:
                for ev in self.decoder.receive_data(data):
                    if isinstance(ev, websocket.Message):
                        self.messages.append(websocket.decode_channel(ev, self.b64))
                    elif isinstance(ev, websocket.Close):
                        self.close_frame = ev
                self._changed.set()
                data = await self.reader.read(65536)
                if not data:
                    break
        finally:
            self.closed = True
            self._changed.set()

    async def wait_closed(self, timeout: float = 30.0) -> None:
        async def loop() -> None:
            while not self.closed:
                self._changed.clear()
                await self._changed.wait()
        await asyncio.wait_for(loop(), timeout)

    def channel(self, ch: int) -> bytes:
        return b"".join(d for c, d in self.messages if c == ch)

    def send(self, ch: int, data: bytes) -> None:
        op, payload = websocket.encode_channel(ch, data, self.b64)
        self.writer.write(websocket.encode_frame(op, payload, mask=os.urandom(4)))

    async def close(self) -> None:
        self._task.cancel()
        self.writer.close()
