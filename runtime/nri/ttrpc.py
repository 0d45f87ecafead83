"""ttrpc (containerd's lightweight RPC over one byte stream), sans-IO.

A message is a 10-byte header (payload length uint32, stream id uint32, both
big endian; message type byte; flags byte) and at most 4 MiB of payload. A
unary call is one Request message (its payload a serialized ttrpc Request:
service, method, method payload, timeout) on a fresh stream, answered by one
Response message on the same stream (a Status and the method's reply).
Clients number their streams with odd ids that only ever grow; a server
refuses anything else. NRI uses unary calls only, so Data messages (client
or server streaming) are answered with an error.

`ClientCore` and `ServerCore` turn calls into bytes and bytes into results;
the asyncio shell in transport.py moves the bytes.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field

from google.protobuf.message import DecodeError

from runtime.nri.proto import ttrpc_pb2

HEADER = struct.Struct(">IIBB")
HEADER_LEN = HEADER.size
MAX_MESSAGE = 4 << 20


class MessageType(enum.IntEnum):
    REQUEST = 1
    RESPONSE = 2
    DATA = 3


FLAG_REMOTE_CLOSED = 0x1
FLAG_REMOTE_OPEN = 0x2
FLAG_NO_DATA = 0x4


class Code(enum.IntEnum):
    """Status codes ttrpc carries (the gRPC numbering)."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


class TtrpcError(Exception):
    """A call ended with a non-OK status (from the peer or from us)."""

    def __init__(self, code: int, message: str) -> None:
        try:
            self.code: Code | int = Code(code)
        except ValueError:
            self.code = code
        self.message = message
        name = self.code.name if isinstance(self.code, Code) else str(code)
        super().__init__(f"{name}: {message}")


class ProtocolError(Exception):
    """The byte stream broke the ttrpc framing; the connection is unusable."""


@dataclass(frozen=True, slots=True)
class Frame:
    stream_id: int
    type: int
    flags: int
    payload: bytes
    # Length the header announced when it was above MAX_MESSAGE (payload
    # then skipped and empty), else 0.
    oversized: int = 0


def encode_frame(stream_id: int, type_: int, flags: int, payload: bytes) -> bytes:
    if len(payload) > MAX_MESSAGE:
        raise TtrpcError(Code.RESOURCE_EXHAUSTED, _oversized_message(len(payload)))
    return HEADER.pack(len(payload), stream_id, type_, flags) + payload


def _oversized_message(length: int) -> str:
    return f"message length {length} exceeds the maximum message size of {MAX_MESSAGE}"


class FrameDecoder:
    """Bytes in, frames out. An oversized message is skipped, not buffered,
    and reported as a frame with `oversized` set, as the Go reader does."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._skip = 0

    def feed(self, data: bytes) -> list[Frame]:
        self._buf += data
        frames: list[Frame] = []
        while True:
            if self._skip:
                n = min(self._skip, len(self._buf))
                del self._buf[:n]
                self._skip -= n
                if self._skip:
                    break
            if len(self._buf) < HEADER_LEN:
                break
            length, stream_id, type_, flags = HEADER.unpack_from(self._buf)
            if length > MAX_MESSAGE:
                del self._buf[:HEADER_LEN]
                self._skip = length
                frames.append(Frame(stream_id, type_, flags, b"", oversized=length))
                continue
            end = HEADER_LEN + length
            if len(self._buf) < end:
                break
            frames.append(Frame(stream_id, type_, flags, bytes(self._buf[HEADER_LEN:end])))
            del self._buf[:end]
        return frames


# ---- client side ----


@dataclass(frozen=True, slots=True)
class Reply:
    """The outcome of one call: the method's reply payload or an error."""

    stream_id: int
    payload: bytes = b""
    error: TtrpcError | None = None


class ClientCore:
    """Issues unary calls; matches Response messages back to their streams."""

    def __init__(self) -> None:
        self._next_id = 1
        self._open: set[int] = set()

    def request(
        self,
        service: str,
        method: str,
        payload: bytes,
        timeout_ns: int = 0,
        metadata: dict[str, str] | None = None,
    ) -> tuple[int, bytes]:
        """Stream id of the new call and the bytes to send for it."""
        req = ttrpc_pb2.Request(service=service, method=method, payload=payload, timeout_nano=timeout_ns)
        for k, v in (metadata or {}).items():
            req.metadata.add(key=k, value=v)
        stream_id = self._next_id
        data = encode_frame(stream_id, MessageType.REQUEST, 0, req.SerializeToString())
        self._next_id += 2
        self._open.add(stream_id)
        return stream_id, data

    def forget(self, stream_id: int) -> None:
        """The caller gave up on the call (timeout); a late reply is dropped."""
        self._open.discard(stream_id)

    def receive(self, frame: Frame) -> Reply | None:
        """The reply a frame completes, or None for a frame on no open call."""
        if frame.stream_id not in self._open:
            return None
        sid = frame.stream_id
        self._open.discard(sid)
        if frame.oversized:
            return Reply(sid, error=TtrpcError(Code.RESOURCE_EXHAUSTED, _oversized_message(frame.oversized)))
        if frame.type != MessageType.RESPONSE:
            return Reply(sid, error=TtrpcError(Code.INTERNAL, f"unexpected message type {frame.type} on a unary call"))
        try:
            resp = ttrpc_pb2.Response.FromString(frame.payload)
        except DecodeError as e:
            return Reply(sid, error=TtrpcError(Code.INTERNAL, f"undecodable ttrpc response: {e}"))
        if resp.HasField("status") and resp.status.code != Code.OK:
            return Reply(sid, error=TtrpcError(resp.status.code, resp.status.message))
        return Reply(sid, resp.payload)

    @property
    def pending(self) -> frozenset[int]:
        return frozenset(self._open)


# ---- server side ----


@dataclass(frozen=True, slots=True)
class Call:
    """A request to dispatch to a handler; answer it with ServerCore.reply/fail."""

    stream_id: int
    service: str
    method: str
    payload: bytes
    timeout_ns: int = 0
    metadata: dict[str, str] = field(default_factory=dict)


class ServerCore:
    """Accepts unary calls; refuses what ttrpc servers refuse, with the same codes."""

    def __init__(self) -> None:
        self._last_id = 0

    def receive(self, frame: Frame) -> Call | bytes | None:
        """A Call to dispatch, bytes to send back at once (a refusal), or None."""
        if frame.oversized:
            return self.fail(frame.stream_id, Code.RESOURCE_EXHAUSTED, _oversized_message(frame.oversized))
        if frame.stream_id % 2 != 1:
            msg = "StreamID must be odd for client initiated streams"
            return self.fail(frame.stream_id, Code.INVALID_ARGUMENT, msg)
        if frame.type == MessageType.DATA:
            return self.fail(frame.stream_id, Code.INVALID_ARGUMENT, "streaming is not supported on this service")
        if frame.type != MessageType.REQUEST:
            return None
        if frame.stream_id <= self._last_id:
            return self.fail(frame.stream_id, Code.INVALID_ARGUMENT, "StreamID cannot be re-used and must increment")
        self._last_id = frame.stream_id
        try:
            req = ttrpc_pb2.Request.FromString(frame.payload)
        except DecodeError as e:
            return self.fail(frame.stream_id, Code.INVALID_ARGUMENT, f"unmarshal request error: {e}")
        return Call(
            frame.stream_id,
            req.service,
            req.method,
            req.payload,
            req.timeout_nano,
            {kv.key: kv.value for kv in req.metadata},
        )

    def reply(self, stream_id: int, payload: bytes) -> bytes:
        resp = ttrpc_pb2.Response(status=ttrpc_pb2.Status(code=Code.OK), payload=payload)
        return encode_frame(stream_id, MessageType.RESPONSE, 0, resp.SerializeToString())

    def fail(self, stream_id: int, code: int, message: str) -> bytes:
        resp = ttrpc_pb2.Response(status=ttrpc_pb2.Status(code=code, message=message))
        return encode_frame(stream_id, MessageType.RESPONSE, 0, resp.SerializeToString())
