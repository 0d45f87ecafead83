"""Port-forward's runtime half: a TCP connection to localhost:<port> inside
a pod's network namespace.

The socket is created by a short-lived thread that enters the namespace
with setns(2) (Python 3.11 has no os.setns, hence ctypes). A socket keeps
the namespace it was created in, so the thread switches back at once and
the connect itself runs on the event loop. A dedicated thread, not the
shared pool: if switching back ever failed, that thread simply ends instead
of serving other work from the wrong namespace.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import threading
from typing import Any, Callable

from runtime.errors import FailedPrecondition, NotFound
from runtime.libc import CLONE_NEWNET, check, libc


def _setns(fd: int, nstype: int) -> None:
    check(libc.setns(fd, nstype), "setns")


def socket_in_netns(netns_path: str, family: int = socket.AF_INET) -> socket.socket:
    """A new non-blocking TCP socket living in the network namespace
    pinned at `netns_path`. Blocking; call it from a thread of its own."""
    target = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(target, CLONE_NEWNET)
            try:
                sock = socket.socket(family, socket.SOCK_STREAM)
            finally:
                _setns(home, CLONE_NEWNET)
        finally:
            os.close(home)
    finally:
        os.close(target)
    sock.setblocking(False)
    return sock


async def _in_own_thread(fn: Callable[..., socket.socket], *args: Any) -> socket.socket:
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[socket.socket] = loop.create_future()

    def failed(exc: BaseException) -> None:
        if not fut.done():
            fut.set_exception(exc)

    def run() -> None:
        try:
            result = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
            loop.call_soon_threadsafe(failed, exc)
        else:
            loop.call_soon_threadsafe(lambda: fut.set_result(result) if not fut.done() else result.close())

    threading.Thread(target=run, name="crispy-netns", daemon=True).start()
    return await fut


async def connect(netns_path: str, port: int,
                  timeout: float = 10.0) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connects to 127.0.0.1:`port` (then [::1]) in the namespace at
    `netns_path`, or in crispy's own namespace when the path is "" (pods
    on the host network)."""
    if netns_path and not os.path.exists(netns_path):
        raise NotFound(f"the pod's network namespace {netns_path} is gone; is the pod still running?")
    last: OSError | None = None
    for family, addr in ((socket.AF_INET, ("127.0.0.1", port)), (socket.AF_INET6, ("::1", port))):
        try:
            if netns_path:
                sock = await _in_own_thread(socket_in_netns, netns_path, family)
            else:
                sock = socket.socket(family, socket.SOCK_STREAM)
                sock.setblocking(False)
        except OSError as exc:
            if exc.errno == errno.EAFNOSUPPORT:
                continue
            raise
        try:
            await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, addr), timeout)
        except (OSError, asyncio.TimeoutError) as exc:
            sock.close()
            last = exc if isinstance(exc, OSError) else OSError(errno.ETIMEDOUT, "connect timed out")
            continue
        return await asyncio.open_connection(sock=sock)
    raise FailedPrecondition(f"nothing accepts connections on localhost:{port} in the pod "
                             f"({last.strerror if last else 'unreachable'})")
