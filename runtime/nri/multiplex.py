"""The NRI connection multiplexer, sans-IO.

One unix socket (the "trunk") carries two independent byte streams between
the runtime and a plugin, each a ttrpc connection: conn 1 where the plugin
serves the Plugin service (the runtime is the ttrpc client), and conn 2 where
the runtime serves the Runtime service (the plugin is the client). This is
containerd/nri's pkg/net/multiplex, which frames the trunk as

    conn id (uint32, big endian) | length (uint32, big endian) | length bytes

Conn id 0 is reserved. Frames for a conn id nobody opened are dropped, as the
Go side does. A frame never carries more than one ttrpc message header plus
the largest ttrpc payload (10 + 4 MiB), so longer ones are refused here
rather than buffered.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

RESERVED_CONN = 0
PLUGIN_SERVICE_CONN = 1
RUNTIME_SERVICE_CONN = 2

HEADER = struct.Struct(">II")
HEADER_LEN = HEADER.size
# ttrpc's header and largest message: the Go writer splits at this size.
MAX_FRAME_PAYLOAD = 10 + (4 << 20)
# The Go reader on each conn sits behind a 4096-byte bufio.Reader, and a mux
# frame must fit the buffer it is read into (or the read fails with ENOMEM).
# Go's own bufio.Writer produces frames that always fit: a first frame of at
# most 4096 bytes, then the remainder in one frame, which bufio reads straight
# into the message buffer of exactly that size when it is 4096 bytes or more.
GO_READ_BUFFER = 4096


class MuxError(Exception):
    """The trunk carried something the multiplexer protocol does not allow."""


@dataclass(frozen=True, slots=True)
class MuxFrame:
    conn_id: int
    payload: bytes


def encode_frame(conn_id: int, payload: bytes) -> bytes:
    """One frame; callers keep payload within MAX_FRAME_PAYLOAD."""
    if conn_id == RESERVED_CONN:
        raise MuxError(f"conn id {RESERVED_CONN} is reserved")
    if len(payload) > MAX_FRAME_PAYLOAD:
        raise MuxError(f"mux frame of {len(payload)} bytes exceeds {MAX_FRAME_PAYLOAD}")
    return HEADER.pack(conn_id, len(payload)) + payload


def encode_message(conn_id: int, message: bytes) -> bytes:
    """Frames carrying one whole ttrpc message (header included), split the
    way a Go peer can read them (see GO_READ_BUFFER)."""
    if len(message) <= GO_READ_BUFFER:
        return encode_frame(conn_id, message)
    out = [encode_frame(conn_id, message[:GO_READ_BUFFER])]
    rest = memoryview(message)[GO_READ_BUFFER:]
    while rest:
        out.append(encode_frame(conn_id, bytes(rest[:MAX_FRAME_PAYLOAD])))
        rest = rest[MAX_FRAME_PAYLOAD:]
    return b"".join(out)


class Demultiplexer:
    """Splits trunk bytes back into frames; feed it whatever the socket gave."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[MuxFrame]:
        self._buf += data
        frames: list[MuxFrame] = []
        while len(self._buf) >= HEADER_LEN:
            conn_id, length = HEADER.unpack_from(self._buf)
            if length > MAX_FRAME_PAYLOAD:
                raise MuxError(f"mux frame of {length} bytes on conn {conn_id} exceeds {MAX_FRAME_PAYLOAD}")
            end = HEADER_LEN + length
            if len(self._buf) < end:
                break
            frames.append(MuxFrame(conn_id, bytes(self._buf[HEADER_LEN:end])))
            del self._buf[:end]
        return frames

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame held back (non-zero at EOF = truncated)."""
        return len(self._buf)
