"""The SPDY connection shell (cri.streaming.spdy_connection) on its own:
a real TCP connection on 127.0.0.1, our test SPDY client on one end and a
SpdyConnection on the other, with no streaming server or backend between.
(spdy.py's framing is tested with bytes in test_streaming_spdy.py.)"""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable

import pytest

from cri.streaming import spdy
from cri.streaming.spdy_connection import SpdyClosed, SpdyConnection
from tests.streaming_client import SpdyClient

Body = Callable[[SpdyConnection, SpdyClient], Awaitable[None]]


def _run(body: Body, idle_timeout: float = 3600.0, early: Callable[[SpdyClient], bytes] | None = None) -> None:
    async def main() -> None:
        accepted: asyncio.Future[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Future()

        async def on_connection(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            accepted.set_result((r, w))

        server = await asyncio.start_server(on_connection, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        client = SpdyClient(reader, writer, b"")
        sr, sw = await asyncio.wait_for(accepted, 10)
        conn = SpdyConnection(sr, sw, idle_timeout)
        conn.start(early(client) if early is not None else b"")
        try:
            await asyncio.wait_for(body(conn, client), 30)
        finally:
            await conn.close()
            await client.close()
            server.close()
            await server.wait_closed()

    asyncio.run(main())


async def _next_stream(conn: SpdyConnection):  # type: ignore[no-untyped-def]
    return await asyncio.wait_for(conn.new_streams.get(), 10)


def test_streams_open_carry_data_both_ways_and_end() -> None:
    async def body(conn: SpdyConnection, client: SpdyClient) -> None:
        sid = client.open({"streamType": "stdin", "port": "80"})
        s = await _next_stream(conn)
        assert s.id == sid and s.type == "stdin" and s.headers["port"] == ["80"]
        assert conn.streams[sid] is s
        conn.reply(s)
        await client.wait_for(lambda: sid in client.replied)
        client.send(sid, b"hello ")
        client.send(sid, b"world", fin=True)
        got = b""
        while chunk := await s.inbox.read():
            got += chunk
        assert got == b"hello world"
        await s.write(b"back")
        await s.end()
        await client.wait_for(lambda: sid in client.fin)
        assert client.text(sid) == "back"

    _run(body)


def test_early_bytes_are_read_before_the_socket() -> None:
    def early(client: SpdyClient) -> bytes:
        # What a client sends right behind its upgrade request arrives with
        # the request head; the shell gets it handed in at start.
        return client.framer.serialize(spdy.SynStream(1, {"streamtype": ["error"]}))

    async def body(conn: SpdyConnection, client: SpdyClient) -> None:
        client.next_id = 3
        s = await _next_stream(conn)
        assert (s.id, s.type) == (1, "error")

    _run(body, early=early)


def test_reset_ends_the_inbox_and_tells_the_client() -> None:
    async def body(conn: SpdyConnection, client: SpdyClient) -> None:
        sid = client.open({"streamtype": "data"})
        s = await _next_stream(conn)
        s.reset(spdy.PROTOCOL_ERROR)
        assert await s.inbox.read() == b""
        await client.wait_for(lambda: sid in client.reset)
        assert client.reset[sid] == spdy.PROTOCOL_ERROR

    _run(body)


def test_client_reset_drops_the_stream() -> None:
    async def body(conn: SpdyConnection, client: SpdyClient) -> None:
        sid = client.open({"streamtype": "stdin"})
        s = await _next_stream(conn)
        client._send(spdy.RstStream(sid, spdy.CANCEL))
        assert await s.inbox.read() == b""
        assert sid not in conn.streams

    _run(body)


def test_pings_are_echoed() -> None:
    async def body(conn: SpdyConnection, client: SpdyClient) -> None:
        client.ping(7)
        await client.wait_for(lambda: 7 in client.pings)

    _run(body)


def test_protocol_error_sends_goaway_and_closes() -> None:
    async def body(conn: SpdyConnection, client: SpdyClient) -> None:
        sid = client.open({"streamtype": "stdin"})
        s = await _next_stream(conn)
        # A control frame of SPDY version 2: not ours to speak.
        client.writer.write(b"\x80\x02\x00\x01\x00\x00\x00\x00")
        await asyncio.wait_for(conn.closed_event.wait(), 10)
        await client.wait_for(lambda: client.goaway)
        assert conn.closed
        assert await s.inbox.read() == b""
        assert await _next_stream(conn) is None
        with pytest.raises(SpdyClosed):
            await conn.streams[sid].write(b"late")

    _run(body)


def test_client_hangup_closes_the_connection() -> None:
    async def body(conn: SpdyConnection, client: SpdyClient) -> None:
        client.open({"streamtype": "stdin"})
        s = await _next_stream(conn)
        client.writer.close()
        await asyncio.wait_for(conn.closed_event.wait(), 10)
        assert await s.inbox.read() == b""
        assert await _next_stream(conn) is None

    _run(body)


def test_idle_connection_gets_goaway() -> None:
    async def body(conn: SpdyConnection, client: SpdyClient) -> None:
        await client.wait_for(lambda: client.goaway)
        await asyncio.wait_for(conn.closed_event.wait(), 10)

    _run(body, idle_timeout=0.2)


def test_close_sends_goaway() -> None:
    async def body(conn: SpdyConnection, client: SpdyClient) -> None:
        await conn.close()
        await client.wait_for(lambda: client.goaway)
        assert conn.closed

    _run(body)
