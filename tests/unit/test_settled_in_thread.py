"""A cancelled blob download waits for its writer thread before the
cleanup closes the file (images/registry/client.py settled_in_thread)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from images.registry.client import settled_in_thread


def test_cancelled_caller_waits_for_the_thread_before_cleanup() -> None:
    events: list[str] = []
    started = threading.Event()
    release = threading.Event()

    def write() -> None:
        started.set()
        release.wait(5)
        events.append("write done")

    async def download() -> None:
        try:
            await settled_in_thread(write)
        finally:
            events.append("cleanup")  # where fetch_blob closes the file

    async def main() -> None:
        task = asyncio.ensure_future(download())
        await asyncio.to_thread(started.wait, 5)
        task.cancel()
        await asyncio.sleep(0.05)
        assert events == []  # still waiting for the thread, not cleaned up under it
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert events == ["write done", "cleanup"]


def test_result_and_errors_pass_through() -> None:
    def boom() -> None:
        raise ValueError("disk full")

    async def main() -> None:
        assert await settled_in_thread(lambda a, b: a + b, 2, 3) == 5
        with pytest.raises(ValueError, match="disk full"):
            await settled_in_thread(boom)

    asyncio.run(main())
