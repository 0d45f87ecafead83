"""The Kubernetes port-forward subprotocol, sans-IO.

Over SPDY each forwarded connection is a pair of client-created streams
(`streamtype` error and data) sharing a `requestid` and a `port`. Old
clients send no request id; it is then derived from the stream ids (the
error stream's own id, the data stream's id minus 2).

Over WebSocket the ports come in the query; port i uses channel 2i for data
and 2i+1 for errors, and each channel starts with the port, little-endian.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

PROTOCOL_V1 = "portforward.k8s.io"
SPDY_PROTOCOLS = [PROTOCOL_V1]

STREAM_ERROR = "error"
STREAM_DATA = "data"


class PortForwardError(Exception):
    """A stream the client opened is not acceptable; the message says why."""


def parse_port(text: str) -> int:
    try:
        port = int(text.strip())
    except ValueError:
        raise PortForwardError(f"unable to parse {text!r} as a port") from None
    if not 0 < port <= 0xFFFF:
        raise PortForwardError(f"port {text!r} must be between 1 and 65535")
    return port


@dataclass
class StreamPair:
    request_id: str
    port: int
    created: float
    data_id: int | None = None
    error_id: int | None = None

    @property
    def complete(self) -> bool:
        return self.data_id is not None and self.error_id is not None


class PairTracker:
    """Matches data and error streams into pairs by request id."""

    def __init__(self) -> None:
        self.pending: dict[str, StreamPair] = {}

    def add(self, stream_id: int, headers: dict[str, list[str]], now: float) -> StreamPair | None:
        """Registers a new stream; returns its pair once both halves exist.
        Raises PortForwardError for a stream that cannot be part of a pair."""
        stype = (headers.get("streamtype") or [""])[0]
        if stype not in (STREAM_ERROR, STREAM_DATA):
            raise PortForwardError(f"invalid stream type {stype!r} (want 'error' or 'data')")
        port = parse_port((headers.get("port") or [""])[0])
        request_id = (headers.get("requestid") or [""])[0]
        if not request_id:
            request_id = str(stream_id if stype == STREAM_ERROR else stream_id - 2)
        pair = self.pending.get(request_id)
        if pair is None:
            pair = self.pending[request_id] = StreamPair(request_id, port, now)
        elif pair.port != port:
            raise PortForwardError(f"request {request_id}: streams name different ports ({pair.port}, {port})")
        if stype == STREAM_DATA:
            if pair.data_id is not None:
                raise PortForwardError(f"request {request_id} already has a data stream")
            pair.data_id = stream_id
        else:
            if pair.error_id is not None:
                raise PortForwardError(f"request {request_id} already has an error stream")
            pair.error_id = stream_id
        if pair.complete:
            del self.pending[request_id]
            return pair
        return None

    def expired(self, now: float, timeout: float) -> list[StreamPair]:
        """Pairs still incomplete after `timeout`; removed from the tracker."""
        old = [p for p in self.pending.values() if now - p.created >= timeout]
        for p in old:
            del self.pending[p.request_id]
        return old


# ---- WebSocket variant -----------------------------------------------------

# Channel framing, or a whole SPDY port-forward connection tunnelled in
# binary messages (what client-go's WebSocket port-forward dialer speaks).
SPDY_TUNNEL_PROTOCOL = "SPDY/3.1+" + PROTOCOL_V1
WS_PROTOCOLS = [SPDY_TUNNEL_PROTOCOL, "v4.channel.k8s.io", "v4.base64.channel.k8s.io"]


def ports_from_query(query: dict[str, list[str]]) -> list[int]:
    ports: list[int] = []
    for value in query.get("port", []):
        for item in value.split(","):
            if item.strip():
                ports.append(parse_port(item))
    if not ports:
        raise PortForwardError("query parameter 'port' is required (e.g. ?port=80)")
    return ports


def data_channel(index: int) -> int:
    return 2 * index


def error_channel(index: int) -> int:
    return 2 * index + 1


def port_prefix(port: int) -> bytes:
    return struct.pack("<H", port)
