"""Single-use stream tokens: the Exec/Attach/PortForward RPC stores the
request and hands out a URL; the first HTTP request naming the token
takes it. Pure bookkeeping with an injectable clock."""

from __future__ import annotations

import base64
import secrets
import time
from dataclasses import dataclass
from typing import Any, Callable

TTL_SECONDS = 60.0
MAX_IN_FLIGHT = 1000


class TooManyInFlight(Exception):
    pass


@dataclass
class _Entry:
    kind: str
    request: Any
    expires: float


class TokenCache:
    def __init__(self, ttl: float = TTL_SECONDS, max_in_flight: int = MAX_IN_FLIGHT,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.max_in_flight = max_in_flight
        self._clock = clock
        self._entries: dict[str, _Entry] = {}

    def _expire(self) -> None:
        now = self._clock()
        for token in [t for t, e in self._entries.items() if e.expires <= now]:
            del self._entries[token]

    def insert(self, kind: str, request: Any) -> str:
        self._expire()
        if len(self._entries) >= self.max_in_flight:
            raise TooManyInFlight(f"too many stream requests in flight ({self.max_in_flight}); retry shortly")
        while True:
            # 6 random bytes are exactly 8 URL-safe base64 characters, no padding.
            token = base64.urlsafe_b64encode(secrets.token_bytes(6)).decode()
            if token not in self._entries:
                break
        self._entries[token] = _Entry(kind, request, self._clock() + self.ttl)
        return token

    def consume(self, kind: str, token: str) -> Any | None:
        """The request stored under `token` for `kind`, at most once."""
        self._expire()
        entry = self._entries.get(token)
        if entry is None or entry.kind != kind:
            return None
        del self._entries[token]
        return entry.request

    def __len__(self) -> int:
        self._expire()
        return len(self._entries)
