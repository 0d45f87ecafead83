"""A real OCI registry for tests: Debian's docker-registry on 127.0.0.1 with
throwaway storage, optionally behind htpasswd Basic auth, optionally over TLS
(certificates from tests/pki.py) demanding a client certificate, plus a
minimal push client (distribution API: monolithic blob upload, manifest PUT)."""

from __future__ import annotations

import base64
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.imagebuild import Image, Index
from tests.pki import TlsFiles

REGISTRY_BIN = "/usr/bin/docker-registry"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalRegistry:
    """`tls` makes it serve https with the server certificate, and with
    `require_client_cert` refuse clients without a certificate signed by the
    CA. `storage` serves another registry's data (left to its owner) instead
    of a fresh directory."""

    def __init__(self, username: str | None = None, password: str | None = None, *,
                 tls: TlsFiles | None = None, require_client_cert: bool = False,
                 storage: Path | None = None) -> None:
        if require_client_cert and tls is None:
            raise ValueError("require_client_cert needs tls")
        self.dir = Path(tempfile.mkdtemp(prefix="crispy-reg-"))
        self.data = storage or self.dir / "data"
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"{'https' if tls else 'http'}://{self.host}"
        self.username, self.password = username, password
        self.tls, self.require_client_cert = tls, require_client_cert
        self.proc: subprocess.Popen[bytes] | None = None

    def ssl_context(self) -> ssl.SSLContext | None:
        """What a client needs to talk to this registry (None for http)."""
        if self.tls is None:
            return None
        ctx = ssl.create_default_context(cafile=str(self.tls.ca))
        if self.require_client_cert:
            ctx.load_cert_chain(self.tls.client_cert, self.tls.client_key)
        return ctx

    def _config(self) -> str:
        auth = tls = ""
        if self.username:
            import bcrypt  # docker-registry only accepts bcrypt htpasswd entries
            hashed = bcrypt.hashpw(self.password.encode(), bcrypt.gensalt(rounds=5)).decode()
            (self.dir / "htpasswd").write_text(f"{self.username}:{hashed}\n")
            auth = f"auth:\n  htpasswd:\n    realm: crispy-test\n    path: {self.dir / 'htpasswd'}\n"
        if self.tls:
            tls = f"  tls:\n    certificate: {self.tls.server_cert}\n    key: {self.tls.server_key}\n"
            if self.require_client_cert:
                tls += f"    clientcas:\n      - {self.tls.ca}\n"
        return ("version: 0.1\nlog:\n  level: warn\n"
                f"storage:\n  filesystem:\n    rootdirectory: {self.data}\n  delete:\n    enabled: true\n"
                f"http:\n  addr: 127.0.0.1:{self.port}\n{tls}{auth}")

    def start(self) -> "LocalRegistry":
        (self.dir / "config.yml").write_text(self._config())
        self._log = open(self.dir / "registry.log", "wb")
        self.proc = subprocess.Popen([REGISTRY_BIN, "serve", str(self.dir / "config.yml")],
                                     stdout=self._log, stderr=subprocess.STDOUT)
        # An HTTP answer over the same TLS a client uses proves it serves.
        ctx = self.ssl_context()
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(self.url + "/v2/", timeout=1, context=ctx)
                break
            except urllib.error.HTTPError:
                break  # 401 from an auth-protected registry: it is up
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    log = (self.dir / "registry.log").read_text()
                    self.stop()  # a `with` block never entered would not
                    raise RuntimeError("docker-registry did not start: " + log) from None
                time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc:
            self._log.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "LocalRegistry":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- push -----------------------------------------------------------

    def _request(self, method: str, path: str, data: bytes | None = None,
                 headers: dict[str, str] | None = None) -> urllib.request.addinfourl:
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers or {})
        if self.username:
            token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
            req.add_header("Authorization", f"Basic {token}")
        return urllib.request.urlopen(req, timeout=60, context=self.ssl_context())

    def push_blob(self, repo: str, digest: str, data: bytes) -> None:
        try:
            self._request("HEAD", f"/v2/{repo}/blobs/{digest}")
            return
        except urllib.error.HTTPError as e:
            if e.code != 404:
                raise
        resp = self._request("POST", f"/v2/{repo}/blobs/uploads/")
        location = resp.headers["Location"]
        if location.startswith(self.url):
            location = location[len(self.url):]
        sep = "&" if "?" in location else "?"
        self._request("PUT", f"{location}{sep}digest={digest}", data,
                      {"Content-Type": "application/octet-stream", "Content-Length": str(len(data))})

    def push_manifest(self, repo: str, ref: str, body: bytes, media_type: str) -> None:
        self._request("PUT", f"/v2/{repo}/manifests/{ref}", body, {"Content-Type": media_type})

    def push(self, repo: str, tag: str, image: Image | Index) -> str:
        """Pushes `image` as repo:tag; returns the top manifest's digest."""
        for img in (image.images if isinstance(image, Index) else [image]):
            for digest, data in img.blobs.items():
                self.push_blob(repo, digest, data)
            self.push_manifest(repo, img.digest, img.manifest, img.media_type)
        self.push_manifest(repo, tag, image.manifest, image.media_type)
        return image.digest
