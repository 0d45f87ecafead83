"""SPDY/3.1 framer and session, bytes only."""

from __future__ import annotations

import struct
import zlib

import pytest

from cri.streaming import spdy

# Chromium's SpdyFramerTest "SYN_REPLY frame, no FIN" vector for SPDY/3:
# headers bar=foo, foo=bar, compressed with the SPDY/3 dictionary.
CHROMIUM_V3_SYN_REPLY = bytes([
    0x80, 0x03, 0x00, 0x02, 0x00, 0x00, 0x00, 0x31, 0x00, 0x00, 0x00, 0x01,
    0x38, 0xea, 0xe3, 0xc6, 0xa7, 0xc2, 0x02, 0xe5, 0x0e, 0x50, 0xc2, 0x4b,
    0x4a, 0x04, 0xe5, 0x0b, 0x66, 0x80, 0x00, 0x4a, 0xcb, 0xcf, 0x07, 0x08,
    0x20, 0x10, 0x95, 0x96, 0x9f, 0x0f, 0xa2, 0x00, 0x02, 0x28, 0x29, 0xb1,
    0x08, 0x20, 0x80, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff,
])


def test_dictionary_matches_spdy3_dictid():
    assert len(spdy.DICTIONARY) == 1423
    assert zlib.adler32(spdy.DICTIONARY) == 0xE3C6A7C2


def test_decodes_known_good_compressed_block():
    frames = spdy.SpdyFramer().receive_data(CHROMIUM_V3_SYN_REPLY)
    assert frames == [spdy.SynReply(1, {"bar": ["foo"], "foo": ["bar"]}, 0)]


def test_header_blocks_share_one_zlib_stream_across_frames():
    client, server = spdy.SpdyFramer(), spdy.SpdyFramer()
    wire = b"".join(client.serialize(spdy.SynStream(sid, {"streamtype": [t], "port": ["80"]}))
                    for sid, t in ((1, "error"), (3, "data"), (5, "stdout")))
    # The second and later blocks reference the first block's bytes: a
    # fresh inflater for each would fail or produce garbage.
    out = server.receive_data(wire)
    assert [f.headers["streamtype"] for f in out] == [["error"], ["data"], ["stdout"]]
    fresh = spdy.SpdyFramer()
    third = client.serialize(spdy.SynStream(7, {"streamtype": ["error"], "port": ["80"]}))
    with pytest.raises(spdy.ProtocolError):
        fresh.receive_data(third)
    assert server.receive_data(third)[0].headers == {"streamtype": ["error"], "port": ["80"]}


def test_frames_round_trip_byte_by_byte():
    a, b = spdy.SpdyFramer(), spdy.SpdyFramer()
    frames = [
        spdy.SynStream(1, {"streamtype": ["stdin"], "multi": ["x", "y"]}, spdy.FLAG_FIN, associated_id=0, priority=3, slot=0),
        spdy.SynReply(1, {}),
        spdy.DataFrame(1, b"hello", spdy.FLAG_FIN),
        spdy.DataFrame(3, b""),
        spdy.RstStream(5, spdy.CANCEL),
        spdy.Settings([(0, 7, 65536), (1, 4, 100)]),
        spdy.Ping(7),
        spdy.GoAway(9, 0),
        spdy.Headers(1, {"a": ["b"]}, spdy.FLAG_FIN),
        spdy.WindowUpdate(1, 1000),
    ]
    wire = b"".join(a.serialize(f) for f in frames)
    got = []
    for i in range(len(wire)):
        got.extend(b.receive_data(wire[i:i + 1]))
    assert got == frames


def test_frame_header_layout():
    f = spdy.SpdyFramer()
    assert f.serialize(spdy.Ping(1)) == bytes.fromhex("80030006 00000004 00000001")
    assert f.serialize(spdy.DataFrame(3, b"ab", spdy.FLAG_FIN)) == bytes.fromhex("00000003 01000002") + b"ab"
    assert f.serialize(spdy.RstStream(1, 5)) == bytes.fromhex("80030003 00000008 00000001 00000005")
    assert f.serialize(spdy.GoAway(0, 0)) == bytes.fromhex("80030007 00000008 00000000 00000000")


def test_multiple_values_are_nul_joined():
    assert spdy.encode_header_block({"x": ["1", "2"]}) == struct.pack(">I", 1) + struct.pack(">I", 1) + b"x" + struct.pack(">I", 3) + b"1\x002"
    assert spdy.decode_header_block(spdy.encode_header_block({"X-Y": ["1", "2"]})) == {"x-y": ["1", "2"]}


def test_rejects_other_versions_and_garbage():
    with pytest.raises(spdy.ProtocolError):
        spdy.SpdyFramer().receive_data(bytes.fromhex("80020006 00000004 00000001"))
    with pytest.raises(spdy.ProtocolError):
        spdy.SpdyFramer().receive_data(bytes.fromhex("80030001 0000000c 00000001 00000000 0000") + b"\x00\x01")
    with pytest.raises(spdy.ProtocolError):
        spdy.decode_header_block(b"\x00\x00\x00\x01\x00\x00\x00\x05ab")


def test_unknown_control_frames_are_tolerated():
    f = spdy.SpdyFramer()
    frames = f.receive_data(bytes.fromhex("8003000a 00000002 abcd"))
    assert frames == [spdy.UnknownControl(10, b"\xab\xcd", 0)]


def _client_syn(client: spdy.SpdyFramer, sid: int, stype: str, fin: bool = False) -> bytes:
    return client.serialize(spdy.SynStream(sid, {"streamtype": [stype]}, spdy.FLAG_FIN if fin else 0))


def test_session_ping_echo_by_parity():
    client, session = spdy.SpdyFramer(), spdy.SpdySession()
    assert session.receive_data(client.serialize(spdy.Ping(3)) + client.serialize(spdy.Ping(4))) == []
    assert client.receive_data(session.data_to_send()) == [spdy.Ping(3)]


def test_session_streams_data_fin_reset_goaway():
    client, session = spdy.SpdyFramer(), spdy.SpdySession()
    ev = session.receive_data(_client_syn(client, 1, "stdin") + _client_syn(client, 3, "error", fin=True)
                              + client.serialize(spdy.DataFrame(1, b"in", spdy.FLAG_FIN)))
    assert ev == [spdy.StreamOpened(1, {"streamtype": ["stdin"]}, False),
                  spdy.StreamOpened(3, {"streamtype": ["error"]}, True), spdy.StreamEnded(3),
                  spdy.StreamData(1, b"in"), spdy.StreamEnded(1)]
    session.reply(1)
    session.send_data(3, b"x" * 70000, fin=True)
    got = client.receive_data(session.data_to_send())
    assert got[0] == spdy.SynReply(1, {})
    assert b"".join(f.data for f in got[1:]) == b"x" * 70000 and got[-1].fin and not got[1].fin
    assert session.receive_data(client.serialize(spdy.RstStream(1, spdy.CANCEL))) == [spdy.StreamReset(1, spdy.CANCEL)]
    assert 1 not in session.open_streams
    # Settings and window updates are parsed and ignored, never stall.
    assert session.receive_data(client.serialize(spdy.Settings([(0, 7, 1)])) + client.serialize(spdy.WindowUpdate(3, 5))) == []
    session.goaway()
    assert client.receive_data(session.data_to_send()) == [spdy.GoAway(3, 0)]
    # After GOAWAY new streams are refused.
    assert session.receive_data(_client_syn(client, 5, "stdout")) == []
    assert client.receive_data(session.data_to_send()) == [spdy.RstStream(5, spdy.REFUSED_STREAM)]
    assert session.receive_data(client.serialize(spdy.GoAway(0))) == [spdy.ConnectionClosing(0)]


def test_session_headers_frame_with_fin_ends_an_open_stream():
    # A client may half-close a stream with a HEADERS frame instead of an
    # empty DATA frame; the session must treat both alike.
    client, session = spdy.SpdyFramer(), spdy.SpdySession()
    session.receive_data(_client_syn(client, 1, "stdin"))
    assert session.receive_data(client.serialize(spdy.Headers(1, {"a": ["b"]}, spdy.FLAG_FIN))) == [spdy.StreamEnded(1)]
    assert session.receive_data(client.serialize(spdy.Headers(1, {"a": ["b"]}))) == []
    # On a stream the session does not know it is ignored, as late DATA is.
    assert session.receive_data(client.serialize(spdy.Headers(9, {}, spdy.FLAG_FIN))) == []


def test_session_rejects_even_and_duplicate_ids():
    client, session = spdy.SpdyFramer(), spdy.SpdySession()
    session.receive_data(_client_syn(client, 1, "a"))
    session.receive_data(_client_syn(client, 1, "a"))
    assert client.receive_data(session.data_to_send()) == [spdy.RstStream(1, spdy.STREAM_IN_USE)]
    with pytest.raises(spdy.ProtocolError):
        session.receive_data(_client_syn(client, 2, "a"))
