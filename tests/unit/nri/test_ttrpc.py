"""ttrpc framing and the client/server cores, with bytes."""

from __future__ import annotations

import pytest

from runtime.nri import ttrpc
from runtime.nri.proto import ttrpc_pb2
from runtime.nri.ttrpc import (
    Call,
    ClientCore,
    Code,
    Frame,
    FrameDecoder,
    MessageType,
    Reply,
    ServerCore,
    TtrpcError,
    encode_frame,
)


def test_header_is_length_stream_type_flags() -> None:
    assert encode_frame(3, MessageType.REQUEST, 0, b"ab") == b"\x00\x00\x00\x02\x00\x00\x00\x03\x01\x00ab"
    assert encode_frame(4, MessageType.DATA, ttrpc.FLAG_REMOTE_CLOSED | ttrpc.FLAG_NO_DATA, b"")[-2:] == b"\x03\x05"


def test_request_envelope_bytes() -> None:
    # Hand-encoded: 1:"svc" 2:"M" 3:b"\x08\x01" 4:varint 5
    payload = b"\x0a\x03svc\x12\x01M\x1a\x02\x08\x01\x20\x05"
    req = ttrpc_pb2.Request.FromString(payload)
    assert (req.service, req.method, req.payload, req.timeout_nano) == ("svc", "M", b"\x08\x01", 5)
    _, data = ClientCore().request("svc", "M", b"\x08\x01", timeout_ns=5)
    assert data == b"\x00\x00\x00\x0e\x00\x00\x00\x01\x01\x00" + payload


def test_message_size_limit() -> None:
    encode_frame(1, MessageType.REQUEST, 0, bytes(ttrpc.MAX_MESSAGE))
    with pytest.raises(TtrpcError) as e:
        encode_frame(1, MessageType.REQUEST, 0, bytes(ttrpc.MAX_MESSAGE + 1))
    assert e.value.code == Code.RESOURCE_EXHAUSTED


def test_decoder_handles_any_split_and_skips_oversized_messages() -> None:
    big = ttrpc.MAX_MESSAGE + 3
    wire = (
        encode_frame(1, MessageType.REQUEST, 0, b"one")
        + big.to_bytes(4, "big") + b"\x00\x00\x00\x03\x01\x00" + bytes(big)
        + encode_frame(5, MessageType.REQUEST, 0, b"")
    )
    for cut in (0, 5, 13, 20, len(wire) - 5, len(wire)):
        d = FrameDecoder()
        frames = d.feed(wire[:cut]) + d.feed(wire[cut:])
        assert frames == [
            Frame(1, 1, 0, b"one"),
            Frame(3, 1, 0, b"", oversized=big),
            Frame(5, 1, 0, b""),
        ]


def test_client_stream_ids_are_odd_and_increasing() -> None:
    c = ClientCore()
    ids = [c.request("s", "m", b"")[0] for _ in range(4)]
    assert ids == [1, 3, 5, 7]
    assert c.pending == {1, 3, 5, 7}


def _response(stream_id: int, payload: bytes = b"", code: int = 0, message: str = "") -> Frame:
    resp = ttrpc_pb2.Response(status=ttrpc_pb2.Status(code=code, message=message), payload=payload)
    return Frame(stream_id, MessageType.RESPONSE, 0, resp.SerializeToString())


def test_client_matches_replies_and_errors_to_calls() -> None:
    c = ClientCore()
    a, _ = c.request("s", "m", b"")
    b, _ = c.request("s", "m", b"")
    # Replies may come back in any order.
    rb = c.receive(_response(b, code=Code.UNIMPLEMENTED, message="method m"))
    assert rb is not None and rb.stream_id == b and rb.error is not None and rb.payload == b""
    assert c.receive(_response(a, b"ok")) == Reply(a, b"ok")
    assert c.pending == frozenset()
    assert c.receive(_response(a, b"again")) is None  # no longer open


def test_client_reply_error_fields() -> None:
    c = ClientCore()
    a, _ = c.request("s", "m", b"")
    reply = c.receive(_response(a, code=Code.UNIMPLEMENTED, message="method m"))
    assert reply is not None and reply.error is not None
    assert (reply.error.code, reply.error.message) == (Code.UNIMPLEMENTED, "method m")
    # A response without any status is success (older peers may omit it).
    b, _ = c.request("s", "m", b"")
    assert c.receive(Frame(b, MessageType.RESPONSE, 0, ttrpc_pb2.Response(payload=b"p").SerializeToString())) == Reply(b, b"p")


def test_client_forgotten_call_drops_late_reply() -> None:
    c = ClientCore()
    a, _ = c.request("s", "m", b"")
    c.forget(a)
    assert c.receive(_response(a, b"late")) is None


def test_client_oversized_or_garbled_reply_fails_the_call() -> None:
    c = ClientCore()
    a, _ = c.request("s", "m", b"")
    b, _ = c.request("s", "m", b"")
    d, _ = c.request("s", "m", b"")
    ra = c.receive(Frame(a, MessageType.RESPONSE, 0, b"", oversized=5 << 20))
    rb = c.receive(Frame(b, MessageType.RESPONSE, 0, b"\xff\xff"))
    rd = c.receive(Frame(d, MessageType.DATA, 0, b""))
    assert ra and ra.error and ra.error.code == Code.RESOURCE_EXHAUSTED
    assert rb and rb.error and rb.error.code == Code.INTERNAL
    assert rd and rd.error and rd.error.code == Code.INTERNAL


def _request(stream_id: int, service: str = "svc", method: str = "M", payload: bytes = b"x") -> Frame:
    req = ttrpc_pb2.Request(service=service, method=method, payload=payload, timeout_nano=7)
    req.metadata.add(key="k", value="v")
    return Frame(stream_id, MessageType.REQUEST, 0, req.SerializeToString())


def _status(data: bytes) -> tuple[int, int, str]:
    (frame,) = FrameDecoder().feed(data)
    assert frame.type == MessageType.RESPONSE
    resp = ttrpc_pb2.Response.FromString(frame.payload)
    return frame.stream_id, resp.status.code, resp.status.message


def test_server_turns_requests_into_calls_and_answers_them() -> None:
    s = ServerCore()
    assert s.receive(_request(1)) == Call(1, "svc", "M", b"x", 7, {"k": "v"})
    (frame,) = FrameDecoder().feed(s.reply(1, b"answer"))
    resp = ttrpc_pb2.Response.FromString(frame.payload)
    assert (frame.stream_id, resp.HasField("status"), resp.status.code, resp.payload) == (1, True, 0, b"answer")
    assert _status(s.fail(3, Code.NOT_FOUND, "no such container")) == (3, 5, "no such container")


def test_server_refuses_what_ttrpc_servers_refuse() -> None:
    s = ServerCore()
    assert _status(s.receive(_request(2))) == (2, Code.INVALID_ARGUMENT, "StreamID must be odd for client initiated streams")  # type: ignore[arg-type]
    assert isinstance(s.receive(_request(5)), Call)
    assert _status(s.receive(_request(3)))[1] == Code.INVALID_ARGUMENT  # type: ignore[arg-type]
    assert _status(s.receive(_request(5)))[1] == Code.INVALID_ARGUMENT  # type: ignore[arg-type]
    assert _status(s.receive(Frame(7, MessageType.REQUEST, 0, b"\xff")))[1] == Code.INVALID_ARGUMENT  # type: ignore[arg-type]
    assert _status(s.receive(Frame(9, MessageType.DATA, 0, b"")))[1] == Code.INVALID_ARGUMENT  # type: ignore[arg-type]
    assert _status(s.receive(Frame(11, MessageType.REQUEST, 0, b"", oversized=5 << 20)))[1] == Code.RESOURCE_EXHAUSTED  # type: ignore[arg-type]
    assert s.receive(Frame(13, MessageType.RESPONSE, 0, b"")) is None
