"""A small HTTP server on 127.0.0.1 that stands in front of the real
docker-registry to inject what a real registry rarely does on cue: Bearer
token auth with a token endpoint, 5xx answers, stalls, bodies dripped a
byte at a time, truncated or corrupted blobs, dropped connections,
redirects (loops, to other schemes). Everything else is forwarded."""

from __future__ import annotations

import base64
import http.server
import secrets
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field


@dataclass
class Faults:
    # path substring -> remaining number of 500 answers
    errors_500: dict[str, int] = field(default_factory=dict)
    # path substring -> seconds to sleep before answering (after headers if stall_body)
    stall: dict[str, float] = field(default_factory=dict)
    stall_body: bool = True
    # share of the body sent before a body stall
    stall_fraction: float = 0.0
    # path substring -> remaining number of times to send only half the body then close
    truncate: dict[str, int] = field(default_factory=dict)
    # path substring -> flip a byte of the body (always)
    corrupt: set[str] = field(default_factory=set)
    # path substring -> answer 404 (always)
    missing: set[str] = field(default_factory=set)
    # serve schema 1 for manifests
    schema1: bool = False
    ignore_range: bool = False
    # path substring -> bytes per second the body is sent at, one byte at a
    # time, after its first drip_head bytes went at full speed
    drip: dict[str, float] = field(default_factory=dict)
    drip_head: int = 0
    # path substring -> Location of a 302 answer; "SELF" redirects to the
    # same URL (a loop), "CHAIN" to the same path with an ever new query
    redirect: dict[str, str] = field(default_factory=dict)


class StubRegistry:
    def __init__(self, upstream: str, bearer: tuple[str, str] | None = None,
                 tls: tuple[str, str] | None = None) -> None:
        self.upstream = upstream.rstrip("/")
        self.bearer = bearer  # (username, password) the token endpoint accepts
        self.faults = Faults()
        self.tokens: set[str] = set()
        self.token_requests: list[dict[str, list[str]]] = []
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.blobs_in_flight = 0
        self.max_blobs_in_flight = 0
        # bodies being dripped now; drips the client ended by closing the connection
        self.dripping = 0
        self.drips_hung_up = 0
        self.lock = threading.Lock()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        # Clients that hang up mid-answer (cancelled pulls) are expected here.
        self.server.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
        if tls is not None:
            import ssl
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*tls)
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.scheme = "https" if tls else "http"
        self.port = self.server.server_address[1]
        self.host = f"127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "StubRegistry":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)

    def count(self, substring: str, method: str = "GET") -> int:
        return sum(1 for m, p, _ in self.requests if m == method and substring in p)

    def _take(self, table: dict[str, int], path: str) -> bool:
        with self.lock:
            for key, left in table.items():
                if key in path and left > 0:
                    table[key] = left - 1
                    return True
        return False

    def _handler(self) -> type:
        stub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: object) -> None:
                pass

            def _send(self, code: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
                self.send_response(code)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def do_HEAD(self) -> None:
                self.do_GET()

            def do_POST(self) -> None:
                self.do_GET()

            def do_GET(self) -> None:
                if "/blobs/" not in self.path:
                    return self._get()
                with stub.lock:
                    stub.blobs_in_flight += 1
                    stub.max_blobs_in_flight = max(stub.max_blobs_in_flight, stub.blobs_in_flight)
                try:
                    self._get()
                finally:
                    with stub.lock:
                        stub.blobs_in_flight -= 1

            def _get(self) -> None:
                path = self.path
                with stub.lock:
                    stub.requests.append((self.command, path, dict(self.headers)))
                if path.startswith("/token"):
                    return self._token()
                if stub.bearer and path.startswith("/v2/"):
                    authz = self.headers.get("Authorization", "")
                    if not (authz.startswith("Bearer ") and authz[7:] in stub.tokens):
                        realm = f"{stub.scheme}://{stub.host}/token"
                        repo = path[4:].split("/manifests/")[0].split("/blobs/")[0]
                        scope = f',scope="repository:{repo}:pull"' if repo else ""
                        return self._send(401, b'{"errors":[{"code":"UNAUTHORIZED"}]}', {
                            "WWW-Authenticate": f'Bearer realm="{realm}",service="stub-registry"{scope}'})
                f = stub.faults
                if any(k in path for k in f.missing):
                    return self._send(404, b'{"errors":[{"code":"MANIFEST_UNKNOWN"}]}')
                if stub._take(f.errors_500, path):
                    return self._send(500, b"injected failure")
                for key, secs in f.stall.items():
                    if key in path and not f.stall_body:
                        time.sleep(secs)
                for key, location in f.redirect.items():
                    if key in path:
                        if location == "SELF":
                            location = path
                        elif location == "CHAIN":
                            base, _, hop = path.partition("?hop=")
                            location = f"{base}?hop={int(hop or 0) + 1}"
                        return self._send(302, b"", {"Location": location})
                if f.schema1 and "/manifests/" in path:
                    return self._send(200, b'{"schemaVersion": 1, "name": "x", "tag": "y", "fsLayers": []}',
                                      {"Content-Type": "application/vnd.docker.distribution.manifest.v1+prettyjws"})
                headers = {k: v for k, v in self.headers.items() if k.lower() in ("accept", "range")}
                if f.ignore_range:
                    headers.pop("Range", None)
                    headers.pop("range", None)
                req = urllib.request.Request(stub.upstream + path, headers=headers, method=self.command)
                try:
                    resp = urllib.request.urlopen(req, timeout=30)
                    code, body, rh = resp.status, resp.read(), resp.headers
                except urllib.error.HTTPError as e:
                    code, body, rh = e.code, e.read(), e.headers
                out = {k: v for k, v in rh.items() if k.lower() in ("content-type", "docker-content-digest", "content-range")}
                if any(k in path for k in f.corrupt) and body:
                    body = bytes([body[0] ^ 0xFF]) + body[1:]
                if stub._take(f.truncate, path) and len(body) > 1:
                    self.send_response(code)
                    for k, v in out.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                for key, rate in f.drip.items():
                    if key in path:
                        return self._drip(code, out, body, f.drip_head, rate)
                for key, secs in f.stall.items():
                    if key in path and f.stall_body:
                        self.send_response(code)
                        for k, v in out.items():
                            self.send_header(k, v)
                        self.send_header("Content-Length", str(len(body)))
                        self.end_headers()
                        self.wfile.write(body[:max(10, int(len(body) * f.stall_fraction))])
                        self.wfile.flush()
                        time.sleep(secs)
                        self.close_connection = True
                        return
                self._send(code, body, out)

            def _drip(self, code: int, headers: dict[str, str], body: bytes, head: int, rate: float) -> None:
                self.send_response(code)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.close_connection = True
                with stub.lock:
                    stub.dripping += 1
                try:
                    self.wfile.write(body[:head])
                    self.wfile.flush()
                    for i in range(head, len(body)):
                        time.sleep(1 / rate)
                        self.wfile.write(body[i:i + 1])
                        self.wfile.flush()
                except OSError:
                    with stub.lock:
                        stub.drips_hung_up += 1
                finally:
                    with stub.lock:
                        stub.dripping -= 1

            def _token(self) -> None:
                q = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                if self.command == "POST":
                    n = int(self.headers.get("Content-Length", "0"))
                    q = urllib.parse.parse_qs(self.rfile.read(n).decode())
                with stub.lock:
                    stub.token_requests.append({**q, "_authorization": [self.headers.get("Authorization", "")]})
                user, pw = stub.bearer or ("", "")
                authz = self.headers.get("Authorization", "")
                ok = authz == "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()
                ok = ok or (self.command == "POST" and q.get("refresh_token") == ["identity-" + user])
                if not ok:
                    return self._send(401, b'{"details":"bad credentials"}')
                token = secrets.token_hex(8)
                stub.tokens.add(token)
                self._send(200, f'{{"access_token": "{token}", "expires_in": 300}}'.encode(),
                           {"Content-Type": "application/json"})

        return Handler
