"""NriConnection: two ends over a real socketpair, one loop."""

from __future__ import annotations

import asyncio
import socket

import pytest

from runtime.nri import multiplex
from runtime.nri.transport import ConnectionClosed, NriConnection
from runtime.nri.ttrpc import Code, TtrpcError


async def _pair(handler_a, handler_b):  # type: ignore[no-untyped-def]
    sa, sb = socket.socketpair()
    ra, wa = await asyncio.open_unix_connection(sock=sa)
    rb, wb = await asyncio.open_unix_connection(sock=sb)
    closed: list[str] = []
    # a = runtime side (client on conn 1, serves conn 2); b = plugin side.
    a = NriConnection(ra, wa, client_conn=1, server_conn=2, service="svc.A", handler=handler_a, on_close=closed.append)
    b = NriConnection(rb, wb, client_conn=2, server_conn=1, service="svc.B", handler=handler_b)
    a.start()
    b.start()
    return a, b, closed


def test_calls_both_ways_concurrently_and_out_of_order() -> None:
    async def body() -> None:
        async def on_b(method: str, payload: bytes) -> bytes:
            if method == "Slow":
                await asyncio.sleep(0.2)
            if method == "Boom":
                raise RuntimeError("kaboom")
            if method == "Refuse":
                raise TtrpcError(Code.PERMISSION_DENIED, "not you")
            return method.encode() + payload

        async def on_a(method: str, payload: bytes) -> bytes:
            return b"a:" + payload

        a, b, closed = await _pair(on_a, on_b)
        slow = asyncio.ensure_future(a.call("svc.B", "Slow", b"1", 5))
        fast = await a.call("svc.B", "Fast", b"2", 5)
        assert fast == b"Fast2" and not slow.done()
        assert await slow == b"Slow1"
        assert await b.call("svc.A", "X", b"hi", 5) == b"a:hi"
        big = bytes(3 << 20)
        assert await a.call("svc.B", "Big", big, 5) == b"Big" + big

        with pytest.raises(TtrpcError) as e:
            await a.call("svc.Other", "X", b"", 5)
        assert e.value.code == Code.UNIMPLEMENTED and "svc.Other" in e.value.message
        with pytest.raises(TtrpcError) as e:
            await a.call("svc.B", "Boom", b"", 5)
        assert (e.value.code, e.value.message) == (Code.UNKNOWN, "kaboom")
        with pytest.raises(TtrpcError) as e:
            await a.call("svc.B", "Refuse", b"", 5)
        assert e.value.code == Code.PERMISSION_DENIED

        # Timeout: the caller gets TimeoutError; a late reply is ignored.
        with pytest.raises(TimeoutError):
            await a.call("svc.B", "Slow", b"", 0.05)
        await asyncio.sleep(0.3)
        assert not a.closed

        # The peer hangs up: pending and later calls fail, on_close runs once.
        pending = asyncio.ensure_future(a.call("svc.B", "Slow", b"", 5))
        await asyncio.sleep(0.05)
        await b.close("bye")
        with pytest.raises(ConnectionClosed):
            await pending
        with pytest.raises(ConnectionClosed):
            await a.call("svc.B", "Fast", b"", 5)
        assert closed == ["connection closed by peer"]
        await a.close()

    asyncio.run(asyncio.wait_for(body(), 30))


def test_garbage_on_the_trunk_closes_the_connection() -> None:
    async def body() -> None:
        async def nothing(method: str, payload: bytes) -> bytes:
            return b""

        sa, sb = socket.socketpair()
        ra, wa = await asyncio.open_unix_connection(sock=sa)
        closed: list[str] = []
        a = NriConnection(ra, wa, client_conn=1, server_conn=2, service="s", handler=nothing, on_close=closed.append)
        a.start()
        # A mux frame claiming more than the largest allowed payload.
        sb.sendall(b"\x00\x00\x00\x01" + (multiplex.MAX_FRAME_PAYLOAD + 1).to_bytes(4, "big"))
        await asyncio.wait_for(a.wait_closed(), 5)
        assert closed and closed[0].startswith("protocol error")
        sb.close()
        await a.close()

    asyncio.run(asyncio.wait_for(body(), 30))
