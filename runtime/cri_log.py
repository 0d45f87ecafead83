"""The CRI container log format, sans-IO: each line is
`<RFC3339Nano timestamp> <stdout|stderr> <P|F> <content>`, where P marks a
piece of a longer line and F the last (or only) piece. Used to read what
conmon wrote (tests, exec output through conmon, `crispy logs`-style tools).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_TIMESTAMP = re.compile(rb"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?(Z|[+-]\d\d:\d\d)$")


@dataclass
class LogEntry:
    timestamp: str
    stream: str  # "stdout" or "stderr"
    partial: bool
    content: bytes


def parse_line(line: bytes) -> LogEntry:
    """One line without its newline; ValueError if it is not CRI format."""
    parts = line.split(b" ", 3)
    if len(parts) < 3:
        raise ValueError(f"not a CRI log line: {line[:100]!r}")
    ts, stream, tag = parts[0], parts[1], parts[2]
    if not _TIMESTAMP.match(ts):
        raise ValueError(f"bad timestamp in CRI log line: {ts[:40]!r}")
    if stream not in (b"stdout", b"stderr"):
        raise ValueError(f"bad stream in CRI log line: {stream[:20]!r}")
    if tag not in (b"P", b"F"):
        raise ValueError(f"bad tag in CRI log line: {tag[:20]!r}")
    return LogEntry(ts.decode(), stream.decode(), tag == b"P", parts[3] if len(parts) == 4 else b"")


class LogReader:
    """Bytes in (any chunking), whole logical lines out: P pieces are joined
    per stream until their F piece."""

    def __init__(self) -> None:
        self._buffer = b""
        self._pending: dict[str, list[bytes]] = {"stdout": [], "stderr": []}

    def feed(self, data: bytes) -> list[tuple[str, bytes]]:
        self._buffer += data
        out = []
        while b"\n" in self._buffer:
            raw, self._buffer = self._buffer.split(b"\n", 1)
            entry = parse_line(raw)
            pieces = self._pending[entry.stream]
            pieces.append(entry.content)
            if not entry.partial:
                out.append((entry.stream, b"".join(pieces)))
                pieces.clear()
        return out

    def close(self) -> list[tuple[str, bytes]]:
        """Pieces never finished by an F line (output that ended without a
        newline) come out as they are."""
        out = [(s, b"".join(p)) for s, p in self._pending.items() if p]
        for p in self._pending.values():
            p.clear()
        return out


def split_streams(data: bytes) -> tuple[bytes, bytes]:
    """A whole log file as (stdout, stderr) bytes, newlines restored."""
    reader = LogReader()
    out, err = bytearray(), bytearray()
    for stream, content in reader.feed(data):
        (out if stream == "stdout" else err).extend(content + b"\n")
    for stream, content in reader.close():
        (out if stream == "stdout" else err).extend(content)
    return bytes(out), bytes(err)
