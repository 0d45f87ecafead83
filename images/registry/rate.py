"""The minimum-rate rule for registry transfers, sans-IO: the caller feeds
it the bytes that arrive and asks when the current window ends.

Each window must bring `min_rate * window` bytes (or the rest of the
transfer, if less is left); the window restarts as soon as it has. A
window that ends short means the registry sent slower than `min_rate`
over it, and the transfer is cancelled. Total silence is caught earlier by
the read timeout (images.pull_stall_timeout); this catches the drip that
keeps a connection just alive enough to defeat it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class RateGuard:
    min_rate: float            # bytes/s; 0 turns the rule off
    window: float              # seconds
    remaining: int | None      # bytes still expected, None if unknown
    started: float             # start of the current window (a monotonic clock)
    got: int = 0               # bytes received in the current window

    @property
    def enabled(self) -> bool:
        return self.min_rate > 0 and self.window > 0

    def quota(self) -> float:
        q = self.min_rate * self.window
        if self.remaining is not None:
            q = min(q, self.remaining)
        return q

    def add(self, n: int, now: float) -> None:
        self.got += n
        if self.remaining is not None:
            self.remaining = max(0, self.remaining - n)
        if self.got >= self.quota():
            self.started, self.got = now, 0

    def deadline(self) -> float | None:
        """When the current window ends short unless its quota arrives."""
        return self.started + self.window if self.enabled else None

    def rate(self, now: float) -> float:
        """Bytes/s over the current window so far."""
        return self.got / max(now - self.started, 1e-9)
