"""Structured logging: `key=value` text by default, one JSON object per line
with --log-format json. Fields go in `extra={"fields": {...}}`."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Mapping
from typing import TextIO


class _TextFormatter(logging.Formatter):
    def __init__(self, timestamps: bool = True) -> None:
        super().__init__()
        self.timestamps = timestamps

    def format(self, record: logging.LogRecord) -> str:
        line = f"{record.levelname.lower():5} {record.name}: {record.getMessage()}"
        if self.timestamps:
            ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
            line = f"{ts} {line}"
        for key, value in getattr(record, "fields", {}).items():
            text = str(value)
            if not text or any(c in text for c in ' "='):
                text = json.dumps(text)
            line += f" {key}={text}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        obj = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        obj.update(getattr(record, "fields", {}))
        if record.exc_info:
            obj["exception"] = self.formatException(record.exc_info)
        return json.dumps(obj, default=str)


def under_journald(env: Mapping[str, str], stream: TextIO) -> bool:
    """stderr is connected to the journal (systemd sets JOURNAL_STREAM to
    "device:inode" of the stream it hands us), which stamps every line
    itself: a timestamp of ours would show twice."""
    want = env.get("JOURNAL_STREAM", "")
    dev, _, ino = want.partition(":")
    if not (dev.isdigit() and ino.isdigit()):
        return False
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (int(dev), int(ino))


def setup(level: str = "info", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    journal = under_journald(os.environ, sys.stderr)
    handler.setFormatter(_JsonFormatter() if fmt == "json" else _TextFormatter(timestamps=not journal))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    set_level(level)


def set_level(level: str) -> None:
    """At start-up and when SIGHUP reloads log_level."""
    root = logging.getLogger()
    root.setLevel(level.upper())
    # grpc and asyncio chatter is not ours to report at debug level.
    for noisy in ("asyncio", "grpc", "pyroute2"):
        logging.getLogger(noisy).setLevel(max(logging.INFO, root.level))
