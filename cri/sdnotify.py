"""systemd's readiness protocol (sd_notify(3)), written out: the service
manager passes a datagram socket's path in $NOTIFY_SOCKET ("@name" for an
abstract socket) and reads newline-separated KEY=VALUE assignments from
each datagram: READY=1 once the socket serves, STOPPING=1 on shutdown,
WATCHDOG=1 at least every $WATCHDOG_USEC microseconds when the unit sets
WatchdogSec (and $WATCHDOG_PID, if set, is this process).

`message` and `watchdog_interval` are pure; `Notifier.send` is the one
datagram. Outside systemd (no $NOTIFY_SOCKET) every send is a no-op."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger("crispy.sdnotify")


def message(**fields: object) -> bytes:
    """message(READY=1, STATUS="serving") -> b"READY=1\\nSTATUS=serving"."""
    lines = []
    for key, value in fields.items():
        text = str(value)
        if "\n" in text:
            raise ValueError(f"sd_notify {key} must be one line")
        lines.append(f"{key}={text}")
    return "\n".join(lines).encode()


def socket_address(env: Mapping[str, str]) -> str | None:
    """Where to send, as socket.sendto takes it; None outside systemd."""
    path = env.get("NOTIFY_SOCKET", "")
    if not path or not (path.startswith("/") or path.startswith("@")):
        return None
    # "@name" is the abstract namespace: a leading NUL byte on the wire.
    return "\0" + path[1:] if path.startswith("@") else path


def watchdog_interval(env: Mapping[str, str], pid: int) -> float | None:
    """Seconds between WATCHDOG=1 pings (half the timeout, as systemd
    advises), or None when no watchdog is armed for this process."""
    usec = env.get("WATCHDOG_USEC", "")
    owner = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if owner and owner != str(pid):
        return None
    return int(usec) / 2 / 1_000_000


class Notifier:
    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        inherited = env is None
        env = os.environ if env is None else env
        self.address = socket_address(env)
        self.watchdog = watchdog_interval(env, os.getpid())
        if inherited:
            # Ours alone (sd_notify's unset_environment): runc given a
            # NOTIFY_SOCKET would proxy it into containers, and a conmon or
            # CNI plugin could speak for the daemon.
            for key in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
                os.environ.pop(key, None)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, **fields: object) -> bool:
        """True if the datagram went out. A failure is logged, never raised:
        a missing listener must not stop the daemon."""
        if self.address is None:
            return False
        data = message(**fields)
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
                s.sendto(data, self.address)
        except OSError as e:
            log.warning("sd_notify failed", extra={"fields": {"socket": self.address.lstrip("\0"),
                                                              "error": e.strerror or str(e)}})
            return False
        return True
