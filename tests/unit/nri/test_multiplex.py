"""The NRI connection multiplexer, with bytes."""

from __future__ import annotations

import pytest

from runtime.nri import multiplex
from runtime.nri.multiplex import Demultiplexer, MuxError, MuxFrame, encode_frame, encode_message


def test_conn_ids_are_the_ones_containerd_nri_reserves() -> None:
    assert (multiplex.RESERVED_CONN, multiplex.PLUGIN_SERVICE_CONN, multiplex.RUNTIME_SERVICE_CONN) == (0, 1, 2)


def test_frame_is_conn_id_then_length_big_endian() -> None:
    assert encode_frame(2, b"abc") == b"\x00\x00\x00\x02\x00\x00\x00\x03abc"
    assert encode_frame(1, b"") == b"\x00\x00\x00\x01\x00\x00\x00\x00"


def test_reserved_conn_and_oversized_frames_are_refused() -> None:
    with pytest.raises(MuxError, match="reserved"):
        encode_frame(0, b"x")
    with pytest.raises(MuxError, match="exceeds"):
        encode_frame(1, bytes(multiplex.MAX_FRAME_PAYLOAD + 1))
    with pytest.raises(MuxError, match="exceeds"):
        Demultiplexer().feed(b"\x00\x00\x00\x01" + (multiplex.MAX_FRAME_PAYLOAD + 1).to_bytes(4, "big"))


def test_demultiplexer_reassembles_frames_split_anywhere() -> None:
    wire = encode_frame(1, b"hello") + encode_frame(2, b"") + encode_frame(2, b"world!")
    for cut in range(len(wire) + 1):
        d = Demultiplexer()
        frames = d.feed(wire[:cut]) + d.feed(wire[cut:])
        assert frames == [MuxFrame(1, b"hello"), MuxFrame(2, b""), MuxFrame(2, b"world!")]
        assert d.pending == 0


def test_truncated_frame_stays_pending() -> None:
    d = Demultiplexer()
    assert d.feed(encode_frame(1, b"hello")[:-1]) == []
    assert d.pending == 12


def test_small_message_goes_in_one_frame() -> None:
    msg = bytes(range(256)) * 16  # exactly 4096
    assert encode_message(1, msg) == encode_frame(1, msg)


@pytest.mark.parametrize("size", [4097, 4096 + 4095, 4096 + 4096, 1 << 20, 10 + (4 << 20)])
def test_large_message_split_so_a_go_bufio_reader_can_take_each_frame(size: int) -> None:
    msg = bytes(i % 251 for i in range(size))
    frames = Demultiplexer().feed(encode_message(2, msg))
    assert b"".join(f.payload for f in frames) == msg
    assert [f.conn_id for f in frames] == [2, 2]
    # First frame fills the 4096-byte read buffer exactly; the rest is one
    # frame, read either into that buffer (< 4096) or straight into the
    # message buffer of exactly its size.
    assert len(frames[0].payload) == multiplex.GO_READ_BUFFER
    assert len(frames[1].payload) == size - multiplex.GO_READ_BUFFER
