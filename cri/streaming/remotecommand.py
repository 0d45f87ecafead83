"""The Kubernetes remotecommand subprotocols (exec and attach), sans-IO:
which streams a client must open, what goes on the error stream, and how
resize messages are read.

v1 channel.k8s.io, v2 fixes its stream bugs, v3 adds terminal resize, v4
adds a structured exit status (a JSON metav1.Status on the error stream).
"""

from __future__ import annotations

import codecs
import json
from dataclasses import dataclass
from typing import Iterator

from runtime.stream_io import TerminalSize

V1 = "channel.k8s.io"
V2 = "v2.channel.k8s.io"
V3 = "v3.channel.k8s.io"
V4 = "v4.channel.k8s.io"
# Preference order for SPDY negotiation.
SPDY_PROTOCOLS = [V4, V3, V2, V1]

STREAM_ERROR = "error"
STREAM_STDIN = "stdin"
STREAM_STDOUT = "stdout"
STREAM_STDERR = "stderr"
STREAM_RESIZE = "resize"

NON_ZERO_EXIT_REASON = "NonZeroExitCode"
EXIT_CODE_CAUSE = "ExitCode"


@dataclass(frozen=True)
class StreamOptions:
    stdin: bool
    stdout: bool
    stderr: bool
    tty: bool


def supports_resize(protocol: str) -> bool:
    return protocol in (V3, V4)


def expected_streams(opts: StreamOptions, protocol: str) -> set[str]:
    """The stream types the client must open before the command starts."""
    wanted = {STREAM_ERROR}
    if opts.stdin:
        wanted.add(STREAM_STDIN)
    if opts.stdout:
        wanted.add(STREAM_STDOUT)
    # With a TTY stderr is merged into stdout, so no stderr stream exists.
    if opts.stderr and not opts.tty:
        wanted.add(STREAM_STDERR)
    if opts.tty and supports_resize(protocol):
        wanted.add(STREAM_RESIZE)
    return wanted


def _status(**fields: object) -> dict:
    return {"metadata": {}, **fields}


def success_status() -> dict:
    return _status(status="Success")


def exit_code_status(code: int, command: list[str] | None = None) -> dict:
    what = f"error executing command {command}, exit code {code}" if command else f"exit code {code}"
    return _status(status="Failure", message=f"command terminated with non-zero exit code: {what}",
                   reason=NON_ZERO_EXIT_REASON,
                   details={"causes": [{"reason": EXIT_CODE_CAUSE, "message": str(code)}]})


def internal_error_status(message: str) -> dict:
    return _status(status="Failure", message=f"Internal error occurred: {message}", reason="InternalError",
                   details={"causes": [{"message": message}]}, code=500)


def error_stream_payload(protocol: str, status: dict) -> bytes:
    """What to write on the error stream when the command is over. v4 gets
    the Status as JSON, always; older protocols get its message as text,
    and nothing at all on success."""
    if protocol == V4:
        return json.dumps(status, separators=(",", ":")).encode()
    if status.get("status") == "Success":
        return b""
    return str(status.get("message", "")).encode()


class ResizeDecoder:
    """Reads the stream of JSON objects {"Width": w, "Height": h} a client
    sends on the resize stream (capitalised: the Go struct has no tags)."""

    def __init__(self) -> None:
        self._buf = ""
        # Incremental: a character split across reads waits for its rest.
        self._utf8 = codecs.getincrementaldecoder("utf-8")()
        self._decoder = json.JSONDecoder()

    def feed(self, data: bytes) -> Iterator[TerminalSize]:
        try:
            self._buf += self._utf8.decode(data)
        except UnicodeDecodeError:
            raise ValueError("resize stream carries bytes that are not UTF-8") from None
        while True:
            text = self._buf.lstrip()
            if not text:
                self._buf = ""
                return
            try:
                obj, end = self._decoder.raw_decode(text)
            except json.JSONDecodeError:
                self._buf = text
                if len(text) > 4096:
                    raise ValueError("resize stream carries something that is not JSON") from None
                return
            self._buf = text[end:]
            if not isinstance(obj, dict):
                raise ValueError("resize message is not a JSON object")
            w, h = obj.get("Width", 0), obj.get("Height", 0)
            if not isinstance(w, int) or not isinstance(h, int) or not (0 <= w <= 0xFFFF and 0 <= h <= 0xFFFF):
                raise ValueError(f"resize message out of range: {obj}")
            yield TerminalSize(w, h)
