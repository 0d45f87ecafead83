"""SPDY/3.1 framing, as much as the Kubernetes streaming protocols need.

Sans-IO: `SpdyFramer` turns bytes into frame records and frame records into
bytes; `SpdySession` adds the server-side stream bookkeeping (replies, PING
echo, GOAWAY) and queues outgoing bytes for the caller to write.

Header blocks share ONE zlib stream per direction for the whole connection,
preset with the SPDY/3 dictionary: decompressing a block with a fresh
context corrupts every later one, so the framer owns both contexts.

Flow control is deliberately absent: the Go peer (moby/spdystream) never
sends WINDOW_UPDATE, so honouring the 64 KiB initial window would stall.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field
from typing import Union

VERSION = 3

FLAG_FIN = 0x01
FLAG_UNIDIRECTIONAL = 0x02

SYN_STREAM = 1
SYN_REPLY = 2
RST_STREAM = 3
SETTINGS = 4
PING = 6
GOAWAY = 7
HEADERS = 8
WINDOW_UPDATE = 9

# RST_STREAM status codes (SPDY/3 §2.6.3).
PROTOCOL_ERROR = 1
INVALID_STREAM = 2
REFUSED_STREAM = 3
CANCEL = 5
INTERNAL_ERROR = 6
STREAM_IN_USE = 8
STREAM_ALREADY_CLOSED = 9

MAX_DATA_LENGTH = (1 << 24) - 1
# A decompressed header block bigger than this is an attack, not headers.
MAX_HEADER_BLOCK = 1 << 20


def _build_dictionary() -> bytes:
    """The SPDY/3 header-compression dictionary (draft 3, §2.6.10.1): a run
    of 32-bit-length-prefixed words followed by a plain tail. Its Adler-32,
    0xe3c6a7c2, is the DICTID every SPDY/3 zlib stream starts with."""
    words = (
        "options head post put delete trace accept accept-charset accept-encoding accept-language "
        "accept-ranges age allow authorization cache-control connection content-base content-encoding "
        "content-language content-length content-location content-md5 content-range content-type date "
        "etag expect expires from host if-match if-modified-since if-none-match if-range "
        "if-unmodified-since last-modified location max-forwards pragma proxy-authenticate "
        "proxy-authorization range referer retry-after server te trailer transfer-encoding upgrade "
        "user-agent vary via warning www-authenticate method get status"
    ).split() + ["200 OK", "version", "HTTP/1.1", "url", "public", "set-cookie", "keep-alive", "origin"]
    tail = (
        "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505"
        "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request"
        "401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented"
        "503 Service Unavailable"
        "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT"
        "chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,"
        "text/plain,text/javascript,publicprivatemax-age=gzip,deflate,sdch"
        "charset=utf-8charset=iso-8859-1,utf-,*,enq=0."
    )
    out = bytearray()
    for w in words:
        out += struct.pack(">I", len(w)) + w.encode("ascii")
    out += tail.encode("ascii")
    return bytes(out)


DICTIONARY = _build_dictionary()

# Header name -> values. SPDY joins several values of one name with NUL.
HeaderBlock = dict[str, list[str]]


class ProtocolError(Exception):
    """The peer broke SPDY framing; the session cannot continue."""


@dataclass
class DataFrame:
    stream_id: int
    data: bytes
    flags: int = 0

    @property
    def fin(self) -> bool:
        return bool(self.flags & FLAG_FIN)


@dataclass
class SynStream:
    stream_id: int
    headers: HeaderBlock
    flags: int = 0
    associated_id: int = 0
    priority: int = 0
    slot: int = 0

    @property
    def fin(self) -> bool:
        return bool(self.flags & FLAG_FIN)


@dataclass
class SynReply:
    stream_id: int
    headers: HeaderBlock = field(default_factory=dict)
    flags: int = 0


@dataclass
class RstStream:
    stream_id: int
    status: int
    flags: int = 0


@dataclass
class Settings:
    entries: list[tuple[int, int, int]] = field(default_factory=list)  # (flags, id, value)
    flags: int = 0


@dataclass
class Ping:
    ping_id: int
    flags: int = 0


@dataclass
class GoAway:
    last_good_stream_id: int
    status: int = 0
    flags: int = 0


@dataclass
class Headers:
    stream_id: int
    headers: HeaderBlock
    flags: int = 0

    @property
    def fin(self) -> bool:
        return bool(self.flags & FLAG_FIN)


@dataclass
class WindowUpdate:
    stream_id: int
    delta: int
    flags: int = 0


@dataclass
class UnknownControl:
    """A control frame type SPDY/3 tells us to ignore."""
    frame_type: int
    payload: bytes
    flags: int = 0


Frame = Union[DataFrame, SynStream, SynReply, RstStream, Settings, Ping, GoAway, Headers, WindowUpdate, UnknownControl]


def encode_header_block(headers: HeaderBlock) -> bytes:
    out = bytearray(struct.pack(">I", len(headers)))
    for name, values in headers.items():
        n = name.lower().encode("utf-8")
        v = "\0".join(values).encode("utf-8")
        out += struct.pack(">I", len(n)) + n + struct.pack(">I", len(v)) + v
    return bytes(out)


def decode_header_block(block: bytes) -> HeaderBlock:
    def take(pos: int, n: int) -> tuple[bytes, int]:
        if pos + n > len(block):
            raise ProtocolError("truncated header block")
        return block[pos:pos + n], pos + n

    raw, pos = take(0, 4)
    (count,) = struct.unpack(">I", raw)
    headers: HeaderBlock = {}
    for _ in range(count):
        raw, pos = take(pos, 4)
        name, pos = take(pos, struct.unpack(">I", raw)[0])
        raw, pos = take(pos, 4)
        value, pos = take(pos, struct.unpack(">I", raw)[0])
        if not name:
            raise ProtocolError("empty header name")
        try:
            key = name.decode("utf-8")
            vals = value.decode("utf-8").split("\0")
        except UnicodeDecodeError:
            raise ProtocolError("header block is not UTF-8") from None
        headers.setdefault(key.lower(), []).extend(vals)
    return headers


class SpdyFramer:
    """Bytes <-> frames for one connection, owning both zlib contexts."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._inflate = zlib.decompressobj(zdict=DICTIONARY)
        # Go's spdystream deflates at BestCompression; any level interoperates.
        self._deflate = zlib.compressobj(level=9, zdict=DICTIONARY)

    # ---- incoming ------------------------------------------------------

    def receive_data(self, data: bytes) -> list[Frame]:
        """Feeds bytes from the peer; returns every frame now complete."""
        self._buf += data
        frames: list[Frame] = []
        while len(self._buf) >= 8:
            length = int.from_bytes(self._buf[5:8], "big")
            if len(self._buf) < 8 + length:
                break
            header = bytes(self._buf[:8])
            payload = bytes(self._buf[8:8 + length])
            del self._buf[:8 + length]
            frames.append(self._parse(header, payload))
        return frames

    def _inflate_block(self, compressed: bytes) -> HeaderBlock:
        try:
            raw = self._inflate.decompress(compressed, MAX_HEADER_BLOCK)
        except zlib.error as exc:
            raise ProtocolError(f"header block does not decompress: {exc}") from None
        if self._inflate.unconsumed_tail:
            raise ProtocolError("header block too large")
        return decode_header_block(raw)

    def _parse(self, header: bytes, payload: bytes) -> Frame:
        flags = header[4]
        if not header[0] & 0x80:
            stream_id = int.from_bytes(header[0:4], "big") & 0x7FFFFFFF
            return DataFrame(stream_id, payload, flags)
        version = int.from_bytes(header[0:2], "big") & 0x7FFF
        ftype = int.from_bytes(header[2:4], "big")
        if version != VERSION:
            raise ProtocolError(f"unsupported SPDY version {version}")

        def need(n: int) -> None:
            if len(payload) < n:
                raise ProtocolError(f"control frame type {ftype} too short ({len(payload)} bytes)")

        def u31(pos: int) -> int:
            return int.from_bytes(payload[pos:pos + 4], "big") & 0x7FFFFFFF

        if ftype == SYN_STREAM:
            need(10)
            return SynStream(u31(0), self._inflate_block(payload[10:]), flags,
                             associated_id=u31(4), priority=payload[8] >> 5, slot=payload[9])
        if ftype == SYN_REPLY:
            need(4)
            return SynReply(u31(0), self._inflate_block(payload[4:]), flags)
        if ftype == HEADERS:
            need(4)
            return Headers(u31(0), self._inflate_block(payload[4:]), flags)
        if ftype == RST_STREAM:
            need(8)
            return RstStream(u31(0), int.from_bytes(payload[4:8], "big"), flags)
        if ftype == SETTINGS:
            need(4)
            count = int.from_bytes(payload[0:4], "big")
            need(4 + 8 * count)
            entries = []
            for i in range(count):
                off = 4 + 8 * i
                entries.append((payload[off], int.from_bytes(payload[off + 1:off + 4], "big"),
                                int.from_bytes(payload[off + 4:off + 8], "big")))
            return Settings(entries, flags)
        if ftype == PING:
            need(4)
            return Ping(int.from_bytes(payload[0:4], "big"), flags)
        if ftype == GOAWAY:
            need(8)
            return GoAway(u31(0), int.from_bytes(payload[4:8], "big"), flags)
        if ftype == WINDOW_UPDATE:
            need(8)
            return WindowUpdate(u31(0), u31(4), flags)
        return UnknownControl(ftype, payload, flags)

    # ---- outgoing ------------------------------------------------------

    def _deflate_block(self, headers: HeaderBlock) -> bytes:
        # Sync flush makes each block end on a byte boundary the peer can
        # decode without the next frame, while keeping the shared window.
        return self._deflate.compress(encode_header_block(headers)) + self._deflate.flush(zlib.Z_SYNC_FLUSH)

    @staticmethod
    def _control(ftype: int, flags: int, payload: bytes) -> bytes:
        if len(payload) > MAX_DATA_LENGTH:
            raise ValueError("control frame too large")
        return struct.pack(">HHI", 0x8000 | VERSION, ftype, (flags << 24) | len(payload)) + payload

    def serialize(self, frame: Frame) -> bytes:
        if isinstance(frame, DataFrame):
            if len(frame.data) > MAX_DATA_LENGTH:
                raise ValueError("data frame too large; split it")
            return struct.pack(">II", frame.stream_id & 0x7FFFFFFF, (frame.flags << 24) | len(frame.data)) + frame.data
        if isinstance(frame, SynStream):
            head = struct.pack(">IIBB", frame.stream_id, frame.associated_id, (frame.priority & 7) << 5, frame.slot)
            return self._control(SYN_STREAM, frame.flags, head + self._deflate_block(frame.headers))
        if isinstance(frame, SynReply):
            return self._control(SYN_REPLY, frame.flags,
                                 struct.pack(">I", frame.stream_id) + self._deflate_block(frame.headers))
        if isinstance(frame, Headers):
            return self._control(HEADERS, frame.flags,
                                 struct.pack(">I", frame.stream_id) + self._deflate_block(frame.headers))
        if isinstance(frame, RstStream):
            return self._control(RST_STREAM, frame.flags, struct.pack(">II", frame.stream_id, frame.status))
        if isinstance(frame, Settings):
            body = struct.pack(">I", len(frame.entries)) + b"".join(
                struct.pack(">I", (f << 24) | i) + struct.pack(">I", v) for f, i, v in frame.entries)
            return self._control(SETTINGS, frame.flags, body)
        if isinstance(frame, Ping):
            return self._control(PING, frame.flags, struct.pack(">I", frame.ping_id))
        if isinstance(frame, GoAway):
            return self._control(GOAWAY, frame.flags, struct.pack(">II", frame.last_good_stream_id, frame.status))
        if isinstance(frame, WindowUpdate):
            return self._control(WINDOW_UPDATE, frame.flags, struct.pack(">II", frame.stream_id, frame.delta))
        if isinstance(frame, UnknownControl):
            return self._control(frame.frame_type, frame.flags, frame.payload)
        raise TypeError(f"not a SPDY frame: {frame!r}")


# ---- session events ------------------------------------------------------

@dataclass
class StreamOpened:
    stream_id: int
    headers: HeaderBlock
    fin: bool


@dataclass
class StreamData:
    stream_id: int
    data: bytes


@dataclass
class StreamEnded:
    """The peer half-closed the stream (FIN)."""
    stream_id: int


@dataclass
class StreamReset:
    stream_id: int
    status: int


@dataclass
class ConnectionClosing:
    """The peer sent GOAWAY: finish what is open, start nothing new."""
    last_good_stream_id: int


Event = Union[StreamOpened, StreamData, StreamEnded, StreamReset, ConnectionClosing]


class SpdySession:
    """Server side of one SPDY connection: frames in, events out, and the
    bytes to send queued in `data_to_send()`. In Kubernetes the client
    creates every stream; the server only replies, writes and resets."""

    def __init__(self) -> None:
        self.framer = SpdyFramer()
        self._out = bytearray()
        self.open_streams: set[int] = set()
        self._last_client_stream = 0
        self.goaway_sent = False

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def receive_data(self, data: bytes) -> list[Event]:
        events: list[Event] = []
        for frame in self.framer.receive_data(data):
            events.extend(self._handle(frame))
        return events

    def _handle(self, frame: Frame) -> list[Event]:
        if isinstance(frame, SynStream):
            sid = frame.stream_id
            if sid % 2 == 0 or sid == 0:
                raise ProtocolError(f"client opened stream {sid}, which is not a client (odd) id")
            if sid in self.open_streams:
                self._out += self.framer.serialize(RstStream(sid, STREAM_IN_USE))
                return []
            if sid <= self._last_client_stream:
                raise ProtocolError(f"stream id {sid} is not larger than {self._last_client_stream}")
            self._last_client_stream = sid
            if self.goaway_sent:
                self._out += self.framer.serialize(RstStream(sid, REFUSED_STREAM))
                return []
            self.open_streams.add(sid)
            events: list[Event] = [StreamOpened(sid, frame.headers, frame.fin)]
            if frame.fin:
                events.append(StreamEnded(sid))
            return events
        if isinstance(frame, DataFrame):
            events = []
            if frame.stream_id not in self.open_streams:
                # Late data for a stream we already forgot: harmless.
                return events
            if frame.data:
                events.append(StreamData(frame.stream_id, frame.data))
            if frame.fin:
                events.append(StreamEnded(frame.stream_id))
            return events
        if isinstance(frame, Ping):
            # Odd ids are the client's: echo. Even ids would be replies to
            # our own pings, which we never send.
            if frame.ping_id % 2 == 1:
                self._out += self.framer.serialize(Ping(frame.ping_id))
            return []
        if isinstance(frame, RstStream):
            self.open_streams.discard(frame.stream_id)
            return [StreamReset(frame.stream_id, frame.status)]
        if isinstance(frame, GoAway):
            return [ConnectionClosing(frame.last_good_stream_id)]
        if isinstance(frame, Headers):
            if frame.fin and frame.stream_id in self.open_streams:
                return [StreamEnded(frame.stream_id)]
            return []
        # SETTINGS, WINDOW_UPDATE, SYN_REPLY (we open no streams), unknown types.
        return []

    # ---- actions -------------------------------------------------------

    def reply(self, stream_id: int, headers: HeaderBlock | None = None) -> None:
        self._out += self.framer.serialize(SynReply(stream_id, headers or {}))

    def send_data(self, stream_id: int, data: bytes, fin: bool = False) -> None:
        view = memoryview(data)
        # Small frames keep one busy stream from starving the others.
        chunk = 32 * 1024
        while len(view) > chunk:
            self._out += self.framer.serialize(DataFrame(stream_id, bytes(view[:chunk])))
            view = view[chunk:]
        self._out += self.framer.serialize(DataFrame(stream_id, bytes(view), FLAG_FIN if fin else 0))

    def end_stream(self, stream_id: int) -> None:
        self.send_data(stream_id, b"", fin=True)

    def reset(self, stream_id: int, status: int = CANCEL) -> None:
        self.open_streams.discard(stream_id)
        self._out += self.framer.serialize(RstStream(stream_id, status))

    def goaway(self, status: int = 0) -> None:
        if not self.goaway_sent:
            self.goaway_sent = True
            self._out += self.framer.serialize(GoAway(self._last_client_stream, status))
