"""Blocking calls made for one request that might not come back (reads from
an image's filesystem), each in a thread of its own with a deadline.

The daemon's shared thread pool (asyncio.to_thread) has min(32, cpus + 4)
threads, six on a two-core node. A call that never returns keeps its pool
thread for good, and a handful of them leave every other request (pods,
pulls, stats) queued behind. A call run here can only keep its own thread:
its request fails with DEADLINE_EXCEEDED when the deadline passes and
releases whatever it holds (its pod's lock), the thread is left behind (a
thread in a system call cannot be killed) and counted, and while too many
are left behind new calls are refused at once instead of piling up threads.

Only side-effect-free work belongs here: after its deadline the caller goes
on (and cleans up) while the work may still be running.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Callable, TypeVar

from runtime.errors import DeadlineExceeded, Unavailable

__all__ = ["call", "in_flight", "MAX_IN_FLIGHT"]

T = TypeVar("T")

# Threads running or left behind, node-wide. Far above what a node's
# concurrent CreateContainers need, far below what would hurt the daemon.
MAX_IN_FLIGHT = 64

_lock = threading.Lock()
_in_flight = 0


def in_flight() -> int:
    with _lock:
        return _in_flight


async def call(fn: Callable[..., T], *args: Any, what: str, timeout: float) -> T:
    """fn(*args) in a new thread; DeadlineExceeded naming `what` if it has
    not returned after `timeout` seconds. Exceptions from fn propagate."""
    global _in_flight
    with _lock:
        if _in_flight >= MAX_IN_FLIGHT:
            raise Unavailable(f"{what}: {_in_flight} earlier reads of image files on this node have not "
                              "returned (a hung filesystem under the data root?); try again later")
        _in_flight += 1
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def settle(ok: bool, value: Any) -> None:
        if done.cancelled() or done.done():
            return
        if ok:
            done.set_result(value)
        else:
            done.set_exception(value)

    def run() -> None:
        global _in_flight
        try:
            result: tuple[bool, Any] = (True, fn(*args))
        except BaseException as e:  # noqa: BLE001 - handed to the awaiting task
            result = (False, e)
        finally:
            with _lock:
                _in_flight -= 1
        try:
            loop.call_soon_threadsafe(settle, *result)
        except RuntimeError:
            pass  # the loop is closed: nobody waits any more

    # A daemon thread: one stuck in a system call must not hold up the
    # daemon's exit either (the shared pool's threads are joined at exit).
    try:
        threading.Thread(target=run, name="crispy-isolated", daemon=True).start()
    except BaseException:
        with _lock:
            _in_flight -= 1
        raise

    def expire() -> None:
        if not done.done():
            done.set_exception(DeadlineExceeded(
                f"{what} did not finish within {timeout:g} seconds; "
                "check the image and the filesystem under crispy's data root"))
    timer = loop.call_later(timeout, expire)
    try:
        return await done
    finally:
        timer.cancel()
