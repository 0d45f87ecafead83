"""Named steps at which a test can make the daemon die as `kill -9` would.

Crash consistency is only believable when every window between two steps
has been hit on purpose. A lifecycle step calls `crashpoint("pod.after_cni_add")`;
when the daemon was started with `CRISPY_CRASH_AT` naming that step (a comma
separated list), the process sends itself SIGKILL right there: no finally
blocks, no atexit, no flushing, exactly what an OOM kill or a power cut gives.

Unarmed, a crash point is one set lookup. The variable is read once at import
so an operator cannot arm it on a running daemon.
"""

from __future__ import annotations

import os
import signal

ENV = "CRISPY_CRASH_AT"

_armed: frozenset[str] = frozenset(s.strip() for s in os.environ.get(ENV, "").split(",") if s.strip())


def crashpoint(name: str) -> None:
    if name in _armed:
        os.kill(os.getpid(), signal.SIGKILL)


def armed() -> frozenset[str]:
    return _armed
