"""The HTTP/1.1 request that opens a stream, and the upgrade answers.

Sans-IO and deliberately minimal: the streaming server only ever sees one
GET/POST with an `Upgrade` header per connection, then the socket belongs
to SPDY or WebSocket. Bodies are never read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

MAX_HEAD_BYTES = 16 * 1024

PROTOCOL_HEADER = "x-stream-protocol-version"
ACCEPTED_HEADER = "X-Accepted-Stream-Protocol-Versions"

REASONS = {101: "Switching Protocols", 400: "Bad Request", 403: "Forbidden", 404: "Not Found",
           405: "Method Not Allowed", 426: "Upgrade Required", 429: "Too Many Requests",
           431: "Request Header Fields Too Large", 500: "Internal Server Error", 503: "Service Unavailable"}


class HttpError(Exception):
    """The request cannot be served; `status` and the message go back as is."""

    def __init__(self, status: int, message: str, headers: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or []


@dataclass
class Request:
    method: str
    target: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, list[str]] = field(default_factory=dict)  # lower-case names

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[0] if values else None

    def tokens(self, name: str) -> list[str]:
        """Every comma-separated item of every occurrence of `name`."""
        out: list[str] = []
        for value in self.headers.get(name.lower(), []):
            out.extend(t.strip() for t in value.split(",") if t.strip())
        return out

    def upgrade_to(self) -> str:
        """'spdy', 'websocket' or '' for the protocol this request upgrades to."""
        if "upgrade" not in (t.lower() for t in self.tokens("connection")):
            return ""
        wanted = [t.lower() for t in self.tokens("upgrade")]
        if "spdy/3.1" in wanted:
            return "spdy"
        if "websocket" in wanted:
            return "websocket"
        return ""


class RequestParser:
    """Feed bytes until `feed` returns the request; `trailing` then holds
    bytes the client already sent past the head (early protocol frames)."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self.trailing = b""

    def feed(self, data: bytes) -> Request | None:
        self._buf += data
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buf) > MAX_HEAD_BYTES:
                raise HttpError(431, "request head too large")
            return None
        if end > MAX_HEAD_BYTES:
            raise HttpError(431, "request head too large")
        head = bytes(self._buf[:end])
        self.trailing = bytes(self._buf[end + 4:])
        return parse_head(head)


def parse_head(head: bytes) -> Request:
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes anything
        raise HttpError(400, "request head is not text") from None
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise HttpError(400, f"malformed request line {lines[0][:80]!r}")
    method, target, _ = parts
    headers: dict[str, list[str]] = {}
    for line in lines[1:]:
        if not line:
            continue
        if line[0] in " \t":
            raise HttpError(400, "obsolete header line folding is not accepted")
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise HttpError(400, f"malformed header line {line[:80]!r}")
        headers.setdefault(name.lower(), []).append(value.strip())
    split = urlsplit(target)
    return Request(method=method, target=target, path=unquote(split.path),
                   query=parse_qs(split.query, keep_blank_values=True), headers=headers)


def negotiate(request: Request, supported: list[str]) -> str:
    """The first protocol the client lists that we support. "" when the
    client names none (old clients; remotecommand then means v1). Raises
    HttpError 400 listing what we accept when nothing matches."""
    offered = request.tokens(PROTOCOL_HEADER)
    if not offered:
        return ""
    for proto in offered:
        if proto in supported:
            return proto
    raise HttpError(400,
                    f"unable to upgrade: unable to negotiate protocol: client supports {offered}, "
                    f"server accepts {supported}",
                    [(ACCEPTED_HEADER, p) for p in supported])


def response(status: int, headers: list[tuple[str, str]] | None = None, body: str = "") -> bytes:
    data = body.encode()
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}"]
    for name, value in headers or []:
        lines.append(f"{name}: {value}")
    if status != 101:
        lines += ["Content-Type: text/plain; charset=utf-8", f"Content-Length: {len(data)}", "Connection: close"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + data


def error_response(err: HttpError) -> bytes:
    return response(err.status, err.headers, err.message + "\n")


def spdy_switching_protocols(protocol: str) -> bytes:
    headers = [("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1")]
    if protocol:
        headers.append(("X-Stream-Protocol-Version", protocol))
    return response(101, headers)
