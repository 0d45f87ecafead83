"""HTTP upgrade, remotecommand, port-forward pairing, tokens, WebSocket:
the sans-IO cores, bytes only."""

from __future__ import annotations

import base64
import json
import struct

import pytest

from cri.streaming import http_upgrade, portforward, remotecommand, websocket
from cri.streaming.http_upgrade import HttpError
from cri.streaming.tokens import TokenCache, TooManyInFlight

# ---- HTTP upgrade --------------------------------------------------------

def _req(lines: list[str], trailing: bytes = b"") -> tuple[http_upgrade.Request, bytes]:
    p = http_upgrade.RequestParser()
    raw = ("\r\n".join(lines) + "\r\n\r\n").encode() + trailing
    assert p.feed(raw[:10]) is None
    req = p.feed(raw[10:])
    assert req is not None
    return req, p.trailing


def test_parses_upgrade_request_with_repeated_and_comma_protocols():
    req, trailing = _req(["POST /exec/abcdEFGH?x=1&port=80,81 HTTP/1.1", "Host: h", "Connection: Upgrade",
                          "Upgrade: SPDY/3.1", "X-Stream-Protocol-Version: v4.channel.k8s.io, v3.channel.k8s.io",
                          "X-Stream-Protocol-Version: channel.k8s.io"], b"\x80\x03")
    assert req.method == "POST" and req.path == "/exec/abcdEFGH" and req.query["port"] == ["80,81"]
    assert req.upgrade_to() == "spdy" and trailing == b"\x80\x03"
    assert req.tokens("x-stream-protocol-version") == ["v4.channel.k8s.io", "v3.channel.k8s.io", "channel.k8s.io"]
    assert http_upgrade.negotiate(req, remotecommand.SPDY_PROTOCOLS) == "v4.channel.k8s.io"


def test_negotiation_picks_first_client_choice_and_fails_with_400():
    req, _ = _req(["GET /x HTTP/1.1", "X-Stream-Protocol-Version: v2.channel.k8s.io,v4.channel.k8s.io"])
    assert http_upgrade.negotiate(req, remotecommand.SPDY_PROTOCOLS) == "v2.channel.k8s.io"
    req, _ = _req(["GET /x HTTP/1.1", "X-Stream-Protocol-Version: v9.channel.k8s.io"])
    with pytest.raises(HttpError) as e:
        http_upgrade.negotiate(req, remotecommand.SPDY_PROTOCOLS)
    assert e.value.status == 400
    resp = http_upgrade.error_response(e.value).decode()
    assert resp.startswith("HTTP/1.1 400 Bad Request\r\n")
    assert resp.count("X-Accepted-Stream-Protocol-Versions: ") == 4
    req, _ = _req(["GET /x HTTP/1.1"])
    assert http_upgrade.negotiate(req, remotecommand.SPDY_PROTOCOLS) == ""


def test_switching_protocols_response():
    assert http_upgrade.spdy_switching_protocols("v4.channel.k8s.io") == (
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
        b"X-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n")


def test_bad_requests():
    with pytest.raises(HttpError):
        http_upgrade.parse_head(b"GARBAGE")
    with pytest.raises(HttpError):
        http_upgrade.parse_head(b"GET / HTTP/1.1\r\nno colon here")
    with pytest.raises(HttpError) as e:
        http_upgrade.RequestParser().feed(b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 5000)
    assert e.value.status == 431
    req = http_upgrade.parse_head(b"GET / HTTP/1.1\r\nUpgrade: SPDY/3.1")
    assert req.upgrade_to() == ""  # no Connection: upgrade


# ---- remotecommand -----------------------------------------------------------

def test_expected_streams_per_version():
    o = remotecommand.StreamOptions
    assert remotecommand.expected_streams(o(True, True, True, False), remotecommand.V4) == {"error", "stdin", "stdout", "stderr"}
    assert remotecommand.expected_streams(o(True, True, False, True), remotecommand.V4) == {"error", "stdin", "stdout", "resize"}
    assert remotecommand.expected_streams(o(True, True, False, True), remotecommand.V2) == {"error", "stdin", "stdout"}
    assert remotecommand.expected_streams(o(False, True, True, True), remotecommand.V3) == {"error", "stdout", "resize"}


def test_v4_status_shapes():
    ok = json.loads(remotecommand.error_stream_payload(remotecommand.V4, remotecommand.success_status()))
    assert ok == {"metadata": {}, "status": "Success"}
    fail = json.loads(remotecommand.error_stream_payload(remotecommand.V4, remotecommand.exit_code_status(3, ["sh", "-c", "exit 3"])))
    assert fail["status"] == "Failure" and fail["reason"] == "NonZeroExitCode"
    assert fail["details"] == {"causes": [{"reason": "ExitCode", "message": "3"}]}
    assert fail["message"].startswith("command terminated with non-zero exit code: ")
    internal = json.loads(remotecommand.error_stream_payload(remotecommand.V4, remotecommand.internal_error_status("boom")))
    assert internal["reason"] == "InternalError" and internal["code"] == 500 and "boom" in internal["message"]


def test_older_versions_send_text_only_on_failure():
    assert remotecommand.error_stream_payload(remotecommand.V3, remotecommand.success_status()) == b""
    assert remotecommand.error_stream_payload(remotecommand.V1, remotecommand.exit_code_status(2)).startswith(
        b"command terminated with non-zero exit code")


def test_resize_decoder_handles_split_and_concatenated_json():
    d = remotecommand.ResizeDecoder()
    assert list(d.feed(b'{"Width":80,')) == []
    assert list(d.feed(b'"Height":24}{"Width":100,"Height":50}\n{"Wid')) == [
        remotecommand.TerminalSize(80, 24), remotecommand.TerminalSize(100, 50)]
    assert list(d.feed(b'th":1,"Height":2}')) == [remotecommand.TerminalSize(1, 2)]
    with pytest.raises(ValueError):
        list(d.feed(b'{"Width":70000,"Height":1}'))
    # A character split across reads waits; bytes that are never UTF-8 fail.
    d = remotecommand.ResizeDecoder()
    assert list(d.feed('{"Width":1,"Height":2}é'.encode()[:-1])) == [remotecommand.TerminalSize(1, 2)]
    with pytest.raises(ValueError):
        list(remotecommand.ResizeDecoder().feed(b"\xff\xfe{}{}{}"))


# ---- port-forward ----------------------------------------------------------

def test_pairs_by_request_id_and_derived_ids():
    t = portforward.PairTracker()
    assert t.add(1, {"streamtype": ["error"], "port": ["80"], "requestid": ["7"]}, 0) is None
    assert t.add(5, {"streamtype": ["error"], "port": ["81"]}, 0) is None
    pair = t.add(3, {"streamtype": ["data"], "port": ["80"], "requestid": ["7"]}, 0)
    assert pair is not None and (pair.data_id, pair.error_id, pair.port) == (3, 1, 80)
    # No request id: error stream 5 pairs with data stream 7 (= 5 + 2).
    pair = t.add(7, {"streamtype": ["data"], "port": ["81"]}, 0)
    assert pair is not None and (pair.data_id, pair.error_id, pair.request_id) == (7, 5, "5")
    assert t.pending == {}


def test_pairing_errors_and_expiry():
    t = portforward.PairTracker()
    for headers in ({"streamtype": ["bogus"], "port": ["80"]}, {"streamtype": ["data"], "port": ["0"]},
                    {"streamtype": ["data"], "port": ["http"]}, {"streamtype": ["data"]}):
        with pytest.raises(portforward.PortForwardError):
            t.add(1, headers, 0)
    t.add(9, {"streamtype": ["data"], "port": ["80"], "requestid": ["a"]}, 10.0)
    with pytest.raises(portforward.PortForwardError):
        t.add(11, {"streamtype": ["data"], "port": ["80"], "requestid": ["a"]}, 10.0)
    with pytest.raises(portforward.PortForwardError):
        t.add(13, {"streamtype": ["error"], "port": ["81"], "requestid": ["a"]}, 10.0)
    assert t.expired(20.0, 30.0) == []
    assert [p.request_id for p in t.expired(40.0, 30.0)] == ["a"]


def test_websocket_port_query_and_prefix():
    assert portforward.ports_from_query({"port": ["80,443", "8080"]}) == [80, 443, 8080]
    with pytest.raises(portforward.PortForwardError):
        portforward.ports_from_query({})
    assert portforward.port_prefix(8080) == b"\x90\x1f"
    assert (portforward.data_channel(1), portforward.error_channel(1)) == (2, 3)


# ---- tokens -------------------------------------------------------------

def test_tokens_single_use_expiry_and_cap():
    now = [0.0]
    c = TokenCache(ttl=60, max_in_flight=3, clock=lambda: now[0])
    tok = c.insert("exec", "req")
    assert len(tok) == 8 and base64.urlsafe_b64decode(tok)
    assert c.consume("attach", tok) is None  # wrong kind does not take it
    assert c.consume("exec", tok) == "req"
    assert c.consume("exec", tok) is None
    t2 = c.insert("exec", "r2")
    c.insert("exec", "r3"), c.insert("exec", "r4")
    with pytest.raises(TooManyInFlight):
        c.insert("exec", "r5")
    now[0] = 61.0
    assert c.consume("exec", t2) is None
    assert len(c) == 0
    c.insert("exec", "r6")


# ---- WebSocket ------------------------------------------------------------

def test_accept_key_rfc_example():
    assert websocket.accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def _ws_request(protocols: list[str]) -> http_upgrade.Request:
    lines = ["GET /exec/tok HTTP/1.1", "Connection: Upgrade", "Upgrade: websocket",
             "Sec-WebSocket-Version: 13", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="]
    if protocols:
        lines.append("Sec-WebSocket-Protocol: " + ", ".join(protocols))
    return http_upgrade.parse_head("\r\n".join(lines).encode())


def test_websocket_handshake_and_subprotocols():
    hs = websocket.server_handshake(_ws_request(["v9.channel.k8s.io", "v4.base64.channel.k8s.io"]),
                                    websocket.REMOTECOMMAND_PROTOCOLS)
    assert hs.protocol == "v4.base64.channel.k8s.io"
    assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in hs.response
    assert websocket.server_handshake(_ws_request([]), websocket.REMOTECOMMAND_PROTOCOLS).protocol == ""
    with pytest.raises(HttpError):
        websocket.server_handshake(_ws_request(["nope"]), websocket.REMOTECOMMAND_PROTOCOLS)


def test_masking_fragments_ping_close():
    mask = b"\x01\x02\x03\x04"
    wire = (websocket.encode_frame(websocket.OP_BINARY, b"\x00hel", fin=False, mask=mask)
            + websocket.encode_frame(websocket.OP_PING, b"p", mask=mask)
            + websocket.encode_frame(websocket.OP_CONTINUATION, b"lo", mask=mask)
            + websocket.encode_frame(websocket.OP_CLOSE, struct.pack(">H", 1000) + b"bye", mask=mask))
    assert websocket.apply_mask(b"abcd", mask) != b"abcd"
    s = websocket.WebSocketSession()
    events = []
    for i in range(len(wire)):
        events += s.receive_data(wire[i:i + 1])
    assert events == [websocket.Message(websocket.OP_BINARY, b"\x00hello"), websocket.Close(1000, "bye")]
    client = websocket.FrameDecoder(require_mask=False)
    assert client.receive_data(s.data_to_send()) == [websocket.Pong(b"p"), websocket.Close(1000, "")]


def test_large_frames_and_unmasked_client_rejected():
    s = websocket.WebSocketSession()
    big = bytes(range(256)) * 300
    assert s.receive_data(websocket.encode_frame(websocket.OP_BINARY, big, mask=b"abcd")) == [
        websocket.Message(websocket.OP_BINARY, big)]
    s.send(websocket.OP_BINARY, big)
    assert websocket.FrameDecoder(require_mask=False).receive_data(s.data_to_send()) == [
        websocket.Message(websocket.OP_BINARY, big)]
    with pytest.raises(websocket.WebSocketError):
        s.receive_data(websocket.encode_frame(websocket.OP_BINARY, b"x"))
    assert websocket.FrameDecoder(require_mask=False).receive_data(s.data_to_send())[0].code == 1002


def test_channel_framing_binary_and_base64():
    assert websocket.encode_channel(1, b"hi", False) == (websocket.OP_BINARY, b"\x01hi")
    assert websocket.encode_channel(1, b"hi", True) == (websocket.OP_TEXT, b"1aGk=")
    assert websocket.decode_channel(websocket.Message(websocket.OP_TEXT, b"0aGk="), True) == (0, b"hi")
    assert websocket.decode_channel(websocket.Message(websocket.OP_BINARY, b"\x04{}"), False) == (4, b"{}")


def test_garbage_never_escapes_as_anything_but_protocol_errors():
    """Random bytes into every parser: they may reject, never crash."""
    import random

    from cri.streaming import spdy
    rng = random.Random(1234)
    valid_spdy = spdy.SpdyFramer().serialize(spdy.SynStream(1, {"streamtype": ["error"]})) + \
        spdy.SpdyFramer().serialize(spdy.Ping(1))
    valid_ws = websocket.encode_frame(websocket.OP_BINARY, b"\x00abc", mask=b"abcd")
    for _ in range(3000):
        n = rng.randrange(0, 64)
        junk = bytes(rng.randrange(256) for _ in range(n))
        # Half the time, corrupt a valid stream instead of pure noise.
        if rng.random() < 0.5:
            base = bytearray(valid_spdy)
            for _ in range(rng.randrange(1, 4)):
                base[rng.randrange(len(base))] = rng.randrange(256)
            junk = bytes(base)
        try:
            spdy.SpdySession().receive_data(junk)
        except spdy.ProtocolError:
            pass
        wjunk = bytearray(valid_ws + junk)
        wjunk[rng.randrange(len(wjunk))] ^= 1 << rng.randrange(8)
        try:
            websocket.FrameDecoder().receive_data(bytes(wjunk))
        except websocket.WebSocketError:
            pass
        try:
            http_upgrade.RequestParser().feed(b"GET / HTTP/1.1\r\n" + junk.replace(b"\r\n\r\n", b"") + b"\r\n\r\n")
        except HttpError:
            pass
        try:
            list(remotecommand.ResizeDecoder().feed(junk))
        except ValueError:
            pass
