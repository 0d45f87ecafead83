"""RFC 6455 WebSocket, server side, sans-IO, plus the Kubernetes channel
framing carried inside it (one leading channel byte per message; in the
base64 subprotocols the channel is an ASCII digit and the data base64)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Union

from cri.streaming.http_upgrade import HttpError, Request, response

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

CLOSE_NORMAL = 1000
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_TOO_BIG = 1009

MAX_MESSAGE = 16 * 1024 * 1024

# Subprotocols for exec/attach over WebSocket. "" (none offered) is binary.
# v5 (binary only) is v4 plus the CLOSE signal: a message on channel 255
# whose one data byte names a channel the client will not write again.
V5_PROTOCOL = "v5.channel.k8s.io"
REMOTECOMMAND_PROTOCOLS = [V5_PROTOCOL, "v4.channel.k8s.io", "v4.base64.channel.k8s.io", "channel.k8s.io",
                           "base64.channel.k8s.io"]
CLOSE_CHANNEL = 255


class Channel(IntEnum):
    STDIN = 0
    STDOUT = 1
    STDERR = 2
    ERROR = 3
    RESIZE = 4


class WebSocketError(Exception):
    def __init__(self, message: str, code: int = CLOSE_PROTOCOL_ERROR) -> None:
        super().__init__(message)
        self.code = code


def accept_key(key: str) -> str:
    return base64.b64encode(hashlib.sha1((key + GUID).encode("ascii")).digest()).decode("ascii")


@dataclass
class Handshake:
    protocol: str
    response: bytes


def server_handshake(request: Request, supported: list[str]) -> Handshake:
    """Checks an upgrade request and picks the subprotocol (the client's
    first one we support; "" when it offers none)."""
    if request.method != "GET":
        raise HttpError(405, "a WebSocket upgrade must be a GET")
    if (request.header("sec-websocket-version") or "") != "13":
        raise HttpError(426, "unsupported WebSocket version; use 13", [("Sec-WebSocket-Version", "13")])
    key = request.header("sec-websocket-key") or ""
    try:
        if len(base64.b64decode(key, validate=True)) != 16:
            raise ValueError
    except (ValueError, binascii.Error):
        raise HttpError(400, "missing or malformed Sec-WebSocket-Key") from None
    offered = request.tokens("sec-websocket-protocol")
    chosen: str | None
    if not offered:
        chosen = ""
    else:
        chosen = next((p for p in offered if p in supported), None)
        if chosen is None:
            raise HttpError(400, f"requested protocol(s) {offered} are not supported; use one of {supported}")
    headers = [("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Accept", accept_key(key))]
    if chosen:
        headers.append(("Sec-WebSocket-Protocol", chosen))
    return Handshake(chosen, response(101, headers))


def encode_frame(opcode: int, payload: bytes, fin: bool = True, mask: bytes | None = None) -> bytes:
    """One frame. Servers send unmasked; `mask` is for test clients."""
    first = (0x80 if fin else 0) | opcode
    n = len(payload)
    mask_bit = 0x80 if mask else 0
    if n < 126:
        head = struct.pack(">BB", first, mask_bit | n)
    elif n < 1 << 16:
        head = struct.pack(">BBH", first, mask_bit | 126, n)
    else:
        head = struct.pack(">BBQ", first, mask_bit | 127, n)
    if mask:
        return head + mask + apply_mask(payload, mask)
    return head + payload


def apply_mask(data: bytes, mask: bytes) -> bytes:
    if not data:
        return b""
    # XOR as one big integer: much faster in Python than a byte loop.
    reps = mask * (len(data) // 4 + 1)
    return (int.from_bytes(data, "big") ^ int.from_bytes(reps[:len(data)], "big")).to_bytes(len(data), "big")


@dataclass
class Message:
    opcode: int  # OP_TEXT or OP_BINARY
    data: bytes


@dataclass
class Ping:
    data: bytes


@dataclass
class Pong:
    data: bytes


@dataclass
class Close:
    code: int | None
    reason: str


Event = Union[Message, Ping, Pong, Close]


class FrameDecoder:
    """Client frames in, events out, fragments reassembled."""

    def __init__(self, require_mask: bool = True, max_message: int = MAX_MESSAGE) -> None:
        self._buf = bytearray()
        self._frag_op: int | None = None
        self._frag = bytearray()
        self.require_mask = require_mask
        self.max_message = max_message

    def receive_data(self, data: bytes) -> list[Event]:
        self._buf += data
        events: list[Event] = []
        while True:
            frame = self._next_frame()
            if frame is None:
                return events
            ev = self._assemble(*frame)
            if ev is not None:
                events.append(ev)

    def _next_frame(self) -> tuple[bool, int, bytes] | None:
        b = self._buf
        if len(b) < 2:
            return None
        fin, rsv, opcode = bool(b[0] & 0x80), b[0] & 0x70, b[0] & 0x0F
        masked, n = bool(b[1] & 0x80), b[1] & 0x7F
        if rsv:
            raise WebSocketError("reserved bits set without an extension")
        pos = 2
        if n == 126:
            if len(b) < 4:
                return None
            n = struct.unpack(">H", b[2:4])[0]
            pos = 4
        elif n == 127:
            if len(b) < 10:
                return None
            n = struct.unpack(">Q", b[2:10])[0]
            pos = 10
        if n > self.max_message:
            raise WebSocketError("message too big", CLOSE_TOO_BIG)
        if self.require_mask and not masked:
            raise WebSocketError("client frames must be masked")
        mask = b""
        if masked:
            if len(b) < pos + 4:
                return None
            mask = bytes(b[pos:pos + 4])
            pos += 4
        if len(b) < pos + n:
            return None
        payload = bytes(b[pos:pos + n])
        del b[:pos + n]
        if masked:
            payload = apply_mask(payload, mask)
        return fin, opcode, payload

    def _assemble(self, fin: bool, opcode: int, payload: bytes) -> Event | None:
        if opcode >= 0x8:
            if not fin or len(payload) > 125:
                raise WebSocketError("control frames must be whole and at most 125 bytes")
            if opcode == OP_PING:
                return Ping(payload)
            if opcode == OP_PONG:
                return Pong(payload)
            if opcode == OP_CLOSE:
                if len(payload) == 1:
                    raise WebSocketError("close frame with a 1-byte body")
                if len(payload) >= 2:
                    code = struct.unpack(">H", payload[:2])[0]
                    return Close(code, payload[2:].decode("utf-8", "replace"))
                return Close(None, "")
            raise WebSocketError(f"unknown control opcode {opcode:#x}")
        if opcode == OP_CONTINUATION:
            if self._frag_op is None:
                raise WebSocketError("continuation frame without a message to continue")
        elif opcode in (OP_TEXT, OP_BINARY):
            if self._frag_op is not None:
                raise WebSocketError("new message before the fragmented one ended")
            self._frag_op = opcode
        else:
            raise WebSocketError(f"unknown opcode {opcode:#x}")
        self._frag += payload
        if len(self._frag) > self.max_message:
            raise WebSocketError("message too big", CLOSE_TOO_BIG)
        if not fin:
            return None
        msg = Message(self._frag_op, bytes(self._frag))
        self._frag_op = None
        self._frag.clear()
        return msg


class WebSocketSession:
    """Server side of one connection: answers pings, runs the close
    handshake, queues outgoing bytes for `data_to_send()`."""

    def __init__(self) -> None:
        self.decoder = FrameDecoder()
        self._out = bytearray()
        self.close_sent = False
        self.close_received = False

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def receive_data(self, data: bytes) -> list[Message | Close]:
        out: list[Message | Close] = []
        try:
            events = self.decoder.receive_data(data)
        except WebSocketError as exc:
            self.close(exc.code, str(exc))
            raise
        for ev in events:
            if isinstance(ev, Ping):
                if not self.close_sent:
                    self._out += encode_frame(OP_PONG, ev.data)
            elif isinstance(ev, Close):
                self.close_received = True
                # Echo the code, as RFC 6455 §5.5.1 asks.
                self.close(ev.code if ev.code is not None else CLOSE_NORMAL)
                out.append(ev)
            elif isinstance(ev, Message):
                if not self.close_received:
                    out.append(ev)
        return out

    def send(self, opcode: int, data: bytes) -> None:
        if self.close_sent:
            raise WebSocketError("connection is closing")
        self._out += encode_frame(opcode, data)

    def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        if not self.close_sent:
            self.close_sent = True
            self._out += encode_frame(OP_CLOSE, struct.pack(">H", code) + reason.encode()[:120])


# ---- Kubernetes channel framing ---------------------------------------------

def is_base64_protocol(protocol: str) -> bool:
    return "base64." in protocol


def encode_channel(channel: int, data: bytes, b64: bool) -> tuple[int, bytes]:
    """(opcode, payload) for `data` on `channel`."""
    if b64:
        return OP_TEXT, bytes([ord("0") + channel]) + base64.b64encode(data)
    return OP_BINARY, bytes([channel]) + data


def decode_channel(msg: Message, b64: bool) -> tuple[int, bytes]:
    if not msg.data:
        raise WebSocketError("empty message has no channel byte")
    if b64:
        channel = msg.data[0] - ord("0")
        try:
            return channel, base64.b64decode(msg.data[1:], validate=True)
        except binascii.Error:
            raise WebSocketError("base64 channel message does not decode") from None
    return msg.data[0], msg.data[1:]
