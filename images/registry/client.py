"""The HTTP shell of the OCI distribution client: sends requests to one
endpoint with the right scheme, authentication and retries, and streams
manifests and blobs into the content store with size and digest checks.

The auth logic itself (challenge parsing, token requests) is sans-IO in
auth.py; this module only moves bytes. httpx's per-read timeout is the
stall detector: a read that waits longer than images.pull_stall_timeout
cancels the transfer; the minimum-rate rule (rate.py) cancels one that
drips. Redirects are followed here, hop by hop, so that loops and
non-http(s) targets end in a clear error."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import os
import random
import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING, AsyncIterator, Callable, TypeVar

from images.content_store import BlobWriter, ContentStore
from images.digests import ContentMismatch
from images.manifest import ACCEPT
from images.registry.auth import Challenge, Credentials, Token, parse_challenges, parse_token_response, token_request
from images.registry.errors import (
    AccessDenied,
    AuthenticationFailed,
    PullStalled,
    PullTooSlow,
    RegistryUnavailable,
    clip,
)
from images.registry.hosts import Endpoint
from images.registry.rate import RateGuard
from runtime.errors import InvalidArgument, NotFound, ResourceExhausted
from runtime.lazy_module import on_first_use

# httpx and what it imports (http.client, email, idna) are ~3.5 MiB of a
# daemon that has not pulled yet: loaded with the first pull.
if TYPE_CHECKING:
    import httpx
else:
    httpx = on_first_use("httpx")

T = TypeVar("T")

log = logging.getLogger("crispy.images.registry")

RETRY_STATUS = {429, 500, 502, 503, 504}
MAX_ATTEMPTS = 5
BACKOFF_BASE_S = 0.2
BACKOFF_MAX_S = 5.0
# Downloaded bytes are written (one writev, no join: BlobWriter.write_chunks)
# in batches of about this many, one thread hop each.
WRITE_CHUNK = 1 << 20
# Registries redirect blobs to storage (S3, a CDN) once, sometimes twice.
MAX_REDIRECTS = 10


@functools.cache
def _transient() -> tuple[type[Exception], ...]:
    """Failures worth another attempt (a function, so that naming them does
    not load httpx)."""
    return (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError, httpx.ReadError,
            httpx.WriteError, httpx.WriteTimeout, httpx.PoolTimeout)


async def settled_in_thread(fn: Callable[..., T], *args: object) -> T:
    """asyncio.to_thread for work on a file the caller closes when it is
    cancelled: a cancelled caller first waits for the thread to let go of
    the file. Otherwise the cleanup could close the descriptor under the
    thread, which would then write into whatever file gets that number next."""
    job = asyncio.ensure_future(asyncio.to_thread(fn, *args))
    try:
        return await asyncio.shield(job)
    except asyncio.CancelledError:
        await asyncio.wait([job])
        raise


def backoff_delay(attempt: int) -> float:
    # Jitter keeps parallel layer downloads from retrying in lock step.
    return min(BACKOFF_MAX_S, BACKOFF_BASE_S * (2 ** attempt)) * (0.5 + random.random() / 2)


def _is_certificate_error(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return False
        if isinstance(seen, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _stamps(paths: tuple[str, ...]) -> tuple[int, ...]:
    out = []
    for p in paths:
        if p:
            try:
                out.append(os.stat(p).st_mtime_ns)
            except OSError:
                out.append(0)  # missing: loading it says so
    return tuple(out)


def _settings_of(ep: Endpoint, what: str) -> str:
    """Where an operator sets `what` ("ca", "client") for this endpoint."""
    if ep.source.endswith(".toml"):
        return f"{ep.source} ({what} = ...)"
    if ep.source:
        return f"{ep.source} ({'ca.crt' if what == 'ca' else 'client.cert and client.key'})"
    return f'registries."{ep.config_key}".ca_file' if what == "ca" else "its hosts.toml (client = ...)"


@dataclass
class Target:
    """One endpoint as this pull talks to it."""
    endpoint: Endpoint
    creds: Credentials
    scope: str


class RegistryClient:
    """Long-lived: connection pools, schemes and tokens are shared by pulls."""

    def __init__(self, stall_timeout: float, user_agent: str = "crispy", min_rate: float = 0,
                 rate_window: float = 60.0) -> None:
        self.stall_timeout = stall_timeout
        self.min_rate = min_rate
        self.rate_window = rate_window
        self.user_agent = user_agent
        self._clients: dict[tuple[bool, str, tuple[str, ...], tuple[str, str] | None, tuple[int, ...]],
                            httpx.AsyncClient] = {}
        self._schemes: dict[str, str] = {}
        self._auth: dict[tuple[str, str, Credentials], str | Token] = {}

    async def close(self) -> None:
        for c in self._clients.values():
            await c.aclose()
        self._clients.clear()

    def _client(self, verify: bool, ca_file: str, extra_cas: tuple[str, ...] = (),
                client_cert: tuple[str, str] | None = None) -> httpx.AsyncClient:
        # The files' mtimes are part of the key: a CA or client certificate
        # rotated in place gets a fresh TLS context on the next request.
        key = (verify, ca_file, extra_cas, client_cert,
               _stamps((ca_file, *extra_cas, *(client_cert or ()))))
        c = self._clients.get(key)
        if c is None:
            if not verify and client_cert is None:
                tls: ssl.SSLContext | bool = False
            else:
                tls = ssl.create_default_context()
                if not verify:
                    tls.check_hostname = False
                    tls.verify_mode = ssl.CERT_NONE
                for ca in ((ca_file,) if ca_file else ()) + extra_cas:
                    try:
                        tls.load_verify_locations(cafile=ca)
                    except (OSError, ssl.SSLError) as e:
                        raise InvalidArgument(f"registry CA file {ca} cannot be loaded: {e}") from None
                if client_cert is not None:
                    cert, keyfile = client_cert
                    try:
                        tls.load_cert_chain(cert, keyfile or None)
                    except (OSError, ssl.SSLError) as e:
                        raise InvalidArgument(f"registry client certificate {cert} (key {keyfile or cert}) cannot "
                                              f"be loaded: {e}") from None
            timeout = httpx.Timeout(connect=30.0, read=self.stall_timeout, write=30.0, pool=None)
            c = httpx.AsyncClient(verify=tls, timeout=timeout, follow_redirects=True, max_redirects=MAX_REDIRECTS,
                                  headers={"User-Agent": self.user_agent},
                                  limits=httpx.Limits(max_connections=64, max_keepalive_connections=16))
            self._clients[key] = c
        return c

    # ---- scheme -------------------------------------------------------------

    async def base_url(self, ep: Endpoint) -> str:
        if not ep.http_fallback:
            # A scheme the config spelled out is taken at its word, even for
            # a host another endpoint found speaking the other one (a hosts
            # file edited from http:// to https://).
            return f"{ep.scheme}://{ep.host}{ep.base_path}"
        scheme = self._schemes.get(ep.host)
        if scheme is None:
            scheme = ep.scheme
            if ep.http_fallback:
                try:
                    resp = await self._client(False, "").get(f"https://{ep.host}/v2/", timeout=10.0)
                    await resp.aclose()
                except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError, httpx.ReadTimeout,
                        httpx.ConnectTimeout, ssl.SSLError):
                    scheme = "http"
                    log.info("registry speaks plain http", extra={"fields": {"registry": ep.host}})
            self._schemes[ep.host] = scheme
        return f"{scheme}://{ep.host}{ep.base_path}"

    def _http(self, ep: Endpoint) -> httpx.AsyncClient:
        return self._client(ep.verify, ep.ca_file, ep.extra_cas, ep.client_cert)

    # ---- authentication --------------------------------------------------------

    def _cached_auth(self, t: Target) -> str | None:
        if t.creds.registry_token:
            return f"Bearer {t.creds.registry_token}"
        got = self._auth.get((t.endpoint.host, t.scope, t.creds))
        if isinstance(got, Token):
            return f"Bearer {got.value}" if got.valid() else None
        return got

    async def _answer_challenge(self, t: Target, challenges: list[Challenge]) -> bool:
        """Stores an Authorization for `t`; False if no challenge can be met."""
        key = (t.endpoint.host, t.scope, t.creds)
        for ch in challenges:
            if ch.scheme == "bearer":
                scopes = [ch.params["scope"]] if ch.params.get("scope") else [t.scope]
                req = token_request(ch, scopes, t.creds)
                client = self._http(t.endpoint)
                try:
                    resp = await client.request(req.method, req.url, headers=req.headers, content=req.body or None)
                except _transient() + (httpx.ReadTimeout,) as e:
                    raise RegistryUnavailable(f"token server {clip(req.url.split('?')[0])} unreachable: "
                                              f"{clip(e)}") from None
                except httpx.TooManyRedirects:
                    raise RegistryUnavailable(f"token server {clip(req.url.split('?')[0])} redirected more than "
                                              f"{MAX_REDIRECTS} times (a redirect loop?)") from None
                except (httpx.UnsupportedProtocol, httpx.InvalidURL) as e:
                    raise RegistryUnavailable(f"token server {clip(req.url.split('?')[0])} sent crispy to a URL it "
                                              f"does not fetch (only http and https are followed): {clip(e)}") from None
                if resp.status_code in (401, 403):
                    raise AuthenticationFailed(
                        f"registry {t.endpoint.host} refused the credentials at its token server "
                        f"({resp.status_code}); check the username/password or token")
                if resp.status_code != 200:
                    raise RegistryUnavailable(f"token server {clip(req.url.split('?')[0])} answered {resp.status_code}")
                self._auth[key] = parse_token_response(resp.content)
                return True
            if ch.scheme == "basic":
                if not t.creds.has_basic:
                    raise AuthenticationFailed(
                        f"registry {t.endpoint.host} requires a username and password (Basic auth); pass them in "
                        f"the pull's AuthConfig or set registries.\"{t.endpoint.config_key}\".auth_file")
                self._auth[key] = t.creds.basic_header()
                return True
        return False

    # ---- requests ------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def open(self, t: Target, path: str, headers: dict[str, str] | None = None,
                   what: str = "") -> AsyncIterator[httpx.Response]:
        """A streaming response whose status is final: 401s were answered,
        5xx and dropped connections retried with backoff."""
        base = await self.base_url(t.endpoint)
        client = self._http(t.endpoint)
        url = base + t.endpoint.api_path(path)
        attempt = 0
        answered = False
        while True:
            hdrs = dict(t.endpoint.headers)
            hdrs.update(headers or {})
            authz = self._cached_auth(t)
            if authz:
                hdrs["Authorization"] = authz
            try:
                resp = await self._send_following(t, client, client.build_request("GET", url, headers=hdrs),
                                                  what or path)
            except httpx.ReadTimeout:
                raise PullStalled(f"registry {t.endpoint.host} sent nothing for {self.stall_timeout:g} s while "
                                  f"fetching {what or path}; pull cancelled (images.pull_stall_timeout)") from None
            except httpx.UnsupportedProtocol as e:
                raise RegistryUnavailable(f"registry {t.endpoint} cannot be reached: {clip(e)}") from None
            except ssl.SSLError as e:
                # With TLS 1.3 a server's refusal of our (missing) client
                # certificate arrives as an alert on the first read.
                raise RegistryUnavailable(
                    f"registry {t.endpoint} ended the TLS session ({e.reason or clip(e)}); if it wants a client "
                    f"certificate, give one in {_settings_of(t.endpoint, 'client')}") from None
            except _transient() as e:
                if _is_certificate_error(e):
                    raise RegistryUnavailable(
                        f"registry {t.endpoint} presented a certificate crispy cannot verify ({e}); give its CA in "
                        f"{_settings_of(t.endpoint, 'ca')}, or mark it insecure") from None
                attempt += 1
                if attempt >= MAX_ATTEMPTS:
                    raise RegistryUnavailable(f"registry {t.endpoint} unreachable after {attempt} attempts "
                                              f"({type(e).__name__}: {clip(e)})") from None
                await asyncio.sleep(backoff_delay(attempt))
                continue
            if resp.status_code == 401 and not answered and not t.creds.registry_token:
                await resp.aclose()
                answered = True
                if await self._answer_challenge(t, parse_challenges(resp.headers.get("www-authenticate", ""))):
                    continue
                raise AuthenticationFailed(f"registry {t.endpoint.host} demands authentication crispy cannot provide "
                                           f"({clip(resp.headers.get('www-authenticate', 'no challenge'))})")
            if resp.status_code in RETRY_STATUS and attempt + 1 < MAX_ATTEMPTS:
                await resp.aclose()
                attempt += 1
                log.info("registry error, retrying",
                         extra={"fields": {"registry": t.endpoint.host, "status": resp.status_code,
                                                                      "attempt": attempt, "what": what or path}})
                await asyncio.sleep(backoff_delay(attempt))
                continue
            try:
                yield resp
            finally:
                await resp.aclose()
            return

    async def _send_following(self, t: Target, client: httpx.AsyncClient, req: httpx.Request,
                              what: str) -> httpx.Response:
        """Sends `req`, following up to MAX_REDIRECTS redirects to http(s)
        URLs (httpx builds each next request: relative Locations, and
        Authorization dropped when the origin changes)."""
        seen = {str(req.url)}
        for _ in range(MAX_REDIRECTS + 1):
            try:
                resp = await client.send(req, stream=True, follow_redirects=False)
            except httpx.InvalidURL as e:
                # httpx could not even build the next request (data:, javascript:, ...).
                raise RegistryUnavailable(
                    f"registry {t.endpoint.host} redirected {what} to a URL crispy cannot use ({clip(e)}); "
                    f"crispy follows redirects to http and https URLs only") from None
            nxt = resp.next_request
            if nxt is None:
                return resp
            await resp.aclose()
            target = str(nxt.url)
            if nxt.url.scheme not in ("http", "https"):
                raise RegistryUnavailable(
                    f"registry {t.endpoint.host} redirected {what} to {clip(target)}; crispy follows redirects "
                    f"to http and https URLs only")
            if target in seen:
                raise RegistryUnavailable(f"registry {t.endpoint.host} redirected {what} in a loop "
                                          f"(back to {clip(target)})")
            seen.add(target)
            req = nxt
        raise RegistryUnavailable(f"registry {t.endpoint.host} redirected {what} more than {MAX_REDIRECTS} times "
                                  f"(last to {clip(target)})")

    def check_status(self, t: Target, resp: httpx.Response, what: str) -> None:
        code = resp.status_code
        if code in (200, 206):
            return
        if code == 404:
            raise NotFound(f"{what} not found on registry {t.endpoint}")
        if code == 401:
            raise AuthenticationFailed(f"registry {t.endpoint.host} refused access to {what} (401); "
                                       "check the credentials")
        if code == 403:
            raise AccessDenied(f"registry {t.endpoint.host} denied access to {what} (403)")
        if code in RETRY_STATUS or code >= 500:
            raise RegistryUnavailable(f"registry {t.endpoint.host} answered {code} for {what} after {MAX_ATTEMPTS} "
                                      "attempts")
        raise RegistryUnavailable(f"registry {t.endpoint.host} answered {code} for {what}")

    async def _read_capped(self, t: Target, resp: httpx.Response, limit: int, what: str, setting: str) -> bytes:
        declared = resp.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise ResourceExhausted(f"{what} is {declared} bytes, over the {limit}-byte limit ({setting})")
        buf = bytearray()
        guard = self._rate_guard(int(declared) if declared and declared.isdigit() else None)
        try:
            async with asyncio.timeout(guard.deadline()) as window:
                async for chunk in resp.aiter_raw():
                    buf += chunk
                    if len(buf) > limit:
                        raise ResourceExhausted(f"{what} is over the {limit}-byte limit ({setting})")
                    guard.add(len(chunk), asyncio.get_running_loop().time())
                    window.reschedule(guard.deadline())
        except TimeoutError:
            raise self._too_slow(t, guard, what, "") from None
        except httpx.ReadTimeout:
            raise PullStalled(f"registry {t.endpoint.host} stalled sending {what}; pull cancelled") from None
        except _transient() as e:
            raise RegistryUnavailable(f"registry {t.endpoint.host} dropped the connection sending {what}: "
                                      f"{clip(e)}") from None
        return bytes(buf)

    async def get_manifest(self, t: Target, repo: str, ref: str, limit: int,
                           expected: tuple[str, int] | None = None) -> tuple[bytes, str, str]:
        """(bytes, media type, digest). By digest the bytes must match it."""
        what = f"manifest {repo}:{ref}" if not ref.startswith("sha256:") else f"manifest {repo}@{ref}"
        if expected and expected[1] > limit:
            raise ResourceExhausted(f"{what} is {expected[1]} bytes, over the {limit}-byte limit "
                                    "(images.max_manifest_bytes)")
        for attempt in range(MAX_ATTEMPTS):
            async with self.open(t, f"/v2/{repo}/manifests/{ref}", {"Accept": ACCEPT}, what) as resp:
                self.check_status(t, resp, what)
                try:
                    data = await self._read_capped(t, resp, limit, what, "images.max_manifest_bytes")
                except RegistryUnavailable:
                    if attempt + 1 < MAX_ATTEMPTS:
                        await asyncio.sleep(backoff_delay(attempt))
                        continue
                    raise
                media_type = resp.headers.get("content-type", "")
                header_digest = resp.headers.get("docker-content-digest", "")
            digest = "sha256:" + hashlib.sha256(data).hexdigest()
            if expected:
                if len(data) != expected[1] or digest != expected[0]:
                    raise ContentMismatch(f"{what} from {t.endpoint.host} does not match its descriptor "
                                          f"({digest}, {len(data)} bytes; expected {expected[0]}, {expected[1]} bytes)")
            elif ref.startswith("sha256:") and digest != ref:
                raise ContentMismatch(f"{what} from {t.endpoint.host} has digest {digest}")
            elif header_digest.startswith("sha256:") and header_digest != digest:
                raise ContentMismatch(f"{what} from {t.endpoint.host} has digest {digest} but the registry says "
                                      f"{header_digest}")
            return data, media_type, digest
        raise AssertionError("unreachable")

    def _rate_guard(self, remaining: int | None) -> RateGuard:
        return RateGuard(self.min_rate, self.rate_window, remaining, asyncio.get_running_loop().time())

    def _too_slow(self, t: Target, guard: RateGuard, what: str, detail: str) -> PullTooSlow:
        now = asyncio.get_running_loop().time()
        return PullTooSlow(
            f"registry {t.endpoint.host} sent {what} at {guard.rate(now):.0f} B/s over the last "
            f"{now - guard.started:.0f} s, "
            f"below the minimum of {self.min_rate:g} B/s over {self.rate_window:g} s "
            f"(images.pull_min_rate, images.pull_rate_window); download cancelled{detail}")

    async def fetch_blob(self, t: Target, repo: str, digest: str, size: int, store: ContentStore,
                         at: Callable[[int], None]) -> None:
        """Downloads a blob into the store, resuming a partial download with
        Range after a dropped connection (or from an earlier pull). `at` is
        told how many bytes of the blob crispy has, as that grows."""
        what = f"blob {digest}"
        w = await _open_writer(store, digest, size)
        if w.complete:
            w.finish_existing()
            return
        ok = False
        try:
            if w.offset:
                at(w.offset)
                log.info("resuming partial download",
                         extra={"fields": {"blob": digest, "offset": w.offset, "size": size}})
            attempt = 0
            while w.offset < size or size == 0:
                headers = {"Range": f"bytes={w.offset}-"} if w.offset else {}
                guard: RateGuard | None = None
                try:
                    async with self.open(t, f"/v2/{repo}/blobs/{digest}", headers, what) as resp:
                        if resp.status_code == 416 and w.offset:
                            await settled_in_thread(w.restart)
                            continue
                        self.check_status(t, resp, what)
                        if resp.status_code == 200 and w.offset:
                            # The server ignored Range: start over.
                            await settled_in_thread(w.restart)
                            at(0)
                        elif (resp.status_code == 206
                              and not resp.headers.get("content-range", "").startswith(f"bytes {w.offset}-")):
                            raise RegistryUnavailable(f"registry {t.endpoint.host} answered a Range request for {what} "
                                                      "with the wrong range "
                                                      f"({clip(resp.headers.get('content-range'))})")
                        guard = self._rate_guard(size - w.offset if size else None)
                        # Chunks are joined in the writer thread, in one copy: every
                        # copy on the event loop's thread holds up the other
                        # downloads (and the GIL). What is buffered when the
                        # transfer ends early is written too, so a resume
                        # (by this pull or a later one) starts after it.
                        pending: list[bytes] = []
                        pending_bytes = 0
                        try:
                            async with asyncio.timeout(guard.deadline()) as window:
                                async for chunk in resp.aiter_raw():
                                    pending.append(chunk)
                                    pending_bytes += len(chunk)
                                    at(w.offset + pending_bytes)
                                    guard.add(len(chunk), asyncio.get_running_loop().time())
                                    window.reschedule(guard.deadline())
                                    if pending_bytes >= WRITE_CHUNK:
                                        batch, pending, pending_bytes = pending, [], 0
                                        await settled_in_thread(w.write_chunks, batch)
                            if pending:
                                batch, pending = pending, []
                                await settled_in_thread(w.write_chunks, batch)
                        finally:
                            if pending:
                                batch, pending = pending, []
                                await _write_leftover(w, batch)
                except TimeoutError:
                    if guard is None:
                        raise
                    raise self._too_slow(t, guard, what, f"; {w.offset} of {size} bytes kept to resume") from None
                except httpx.ReadTimeout:
                    raise PullStalled(f"registry {t.endpoint.host} sent nothing for {self.stall_timeout:g} s while "
                                      f"downloading {what} ({w.offset} of {size} bytes); pull cancelled "
                                      f"(images.pull_stall_timeout)") from None
                except _transient() as e:
                    attempt += 1
                    if attempt >= MAX_ATTEMPTS:
                        raise RegistryUnavailable(f"download of {what} from {t.endpoint.host} kept failing "
                                                  f"({type(e).__name__}: {clip(e)}); "
                                                  f"{w.offset} of {size} bytes kept for a retry") from None
                    log.info("blob download interrupted, resuming", extra={"fields": {
                        "blob": digest, "offset": w.offset, "size": size, "attempt": attempt, "error": str(e)}})
                    await asyncio.sleep(backoff_delay(attempt))
                    continue
                if size == 0 or w.offset >= size:
                    break
                # The body ended early without a protocol error: resume.
                attempt += 1
                if attempt >= MAX_ATTEMPTS:
                    raise RegistryUnavailable(f"registry {t.endpoint.host} keeps ending {what} early "
                                              f"({w.offset} of {size} bytes)")
                await asyncio.sleep(backoff_delay(attempt))
            await settled_in_thread(w.commit)
            ok = True
        finally:
            if not ok:
                w.close()


async def _open_writer(store: ContentStore, digest: str, size: int) -> BlobWriter:
    """store.writer in a thread (it may wait for another writer's lock);
    a caller cancelled meanwhile leaves the writer to be closed when the
    thread returns it, so the partial's lock is not held forever."""
    job = asyncio.ensure_future(asyncio.to_thread(store.writer, digest, size))
    try:
        return await asyncio.shield(job)
    except asyncio.CancelledError:
        job.add_done_callback(lambda j: None if j.cancelled() or j.exception() else j.result().close())
        raise


async def _write_leftover(w: BlobWriter, chunks: list[bytes]) -> None:
    """Writes what arrived before a transfer ended early. Runs while an
    exception (or a cancellation) is on its way: a failure here must not
    replace it, the prefix is only an optimisation for the resume."""
    try:
        await settled_in_thread(w.write_chunks, chunks)
    except (OSError, ContentMismatch) as e:
        log.info("could not keep the partial download", extra={"fields": {"blob": w.digest, "error": str(e)}})
