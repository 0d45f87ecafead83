"""runtime/isolated.py: a blocking call that never returns costs its request
a DEADLINE_EXCEEDED and one thread of its own, never the shared pool."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from runtime import isolated
from runtime.errors import DeadlineExceeded, Unavailable


def _open_fifo(path: Path) -> bytes:
    # Blocks in open(2) until a writer comes: a real system call that does
    # not return, as on an image's FIFO.
    with open(path, "rb") as f:
        return f.read()


def _let_go(path: Path) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    os.write(fd, b"late")
    os.close(fd)


async def _until(cond, within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while not cond() and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    return cond()


def test_result_and_exception_come_back():
    async def main():
        assert await isolated.call(lambda a, b: a + b, 2, 3, what="adding", timeout=10) == 5
        with pytest.raises(ZeroDivisionError):
            await isolated.call(lambda: 1 / 0, what="dividing", timeout=10)
        assert await _until(lambda: isolated.in_flight() == 0)
    asyncio.run(main())


def test_a_call_that_never_returns_leaves_the_pool_alone(tmp_path):
    fifo = tmp_path / "passwd"
    os.mkfifo(fifo)

    async def main():
        # More stuck calls than the shared pool has threads.
        pool_size = min(32, (os.cpu_count() or 1) + 4)
        stuck = [asyncio.ensure_future(isolated.call(_open_fifo, fifo, what="reading the image's /etc/passwd",
                                                     timeout=0.5)) for _ in range(pool_size + 2)]
        # Meanwhile the shared pool still serves everyone else.
        assert await asyncio.wait_for(asyncio.gather(*(asyncio.to_thread(sum, [i, 1]) for i in range(pool_size * 2))),
                                      30) == [i + 1 for i in range(pool_size * 2)]
        for s in stuck:
            with pytest.raises(DeadlineExceeded, match="reading the image's /etc/passwd did not finish within 0.5 seconds"):
                await s
        # The threads are still blocked, and counted.
        assert isolated.in_flight() == pool_size + 2
        while isolated.in_flight():
            try:
                _let_go(fifo)
            except OSError:  # no reader at this instant
                pass
            await asyncio.sleep(0.01)
    asyncio.run(main())


def test_too_many_left_behind_refuses_new_calls(tmp_path, monkeypatch):
    monkeypatch.setattr(isolated, "MAX_IN_FLIGHT", 2)
    fifo = tmp_path / "group"
    os.mkfifo(fifo)

    async def main():
        for _ in range(2):
            with pytest.raises(DeadlineExceeded):
                await isolated.call(_open_fifo, fifo, what="reading", timeout=0.2)
        with pytest.raises(Unavailable, match="2 earlier reads of image files on this node have not returned"):
            await isolated.call(lambda: 1, what="reading the image's /etc/group", timeout=5)
        while isolated.in_flight():
            try:
                _let_go(fifo)
            except OSError:
                pass
            await asyncio.sleep(0.01)
        # Once they came back, calls run again.
        assert await isolated.call(lambda: 1, what="reading", timeout=5) == 1
    asyncio.run(main())


def test_the_deadline_is_configured(tmp_path):
    import argparse

    from cri import config
    from runtime.errors import InvalidArgument
    empty = tmp_path / "crispy.toml"
    empty.write_text("")
    assert config.load(path=str(empty)).runtime.user_lookup_timeout == 30.0
    assert config.load(argparse.Namespace(set=["runtime.user_lookup_timeout=2.5"]), path=str(empty)).runtime.user_lookup_timeout == 2.5
    with pytest.raises(InvalidArgument, match="user_lookup_timeout must be more than 0"):
        config.load(argparse.Namespace(set=["runtime.user_lookup_timeout=0"]), path=str(empty))
