"""Ending a stream connection the same way whatever protocol it speaks."""

from __future__ import annotations

import asyncio


async def close_transport(writer: asyncio.StreamWriter, read_loop: "asyncio.Task[object] | None") -> None:
    """Closes the socket (waiting at most 5 s for the peer) and stops the
    connection's read loop; a peer that is already gone is not an error."""
    try:
        writer.close()
        await asyncio.wait_for(writer.wait_closed(), 5)
    except (ConnectionError, OSError, asyncio.TimeoutError):
        pass
    if read_loop is not None:
        read_loop.cancel()
        try:
            await read_loop
        except (asyncio.CancelledError, Exception):
            pass
