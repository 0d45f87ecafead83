"""A real OCI registry for tests: Debian's docker-registry on 127.0.0.1 with
throwaway storage, optionally behind htpasswd Basic auth, plus a minimal
push client (distribution API: monolithic blob upload, manifest PUT)."""

from __future__ import annotations

import base64
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.imagebuild import Image, Index

REGISTRY_BIN = "/usr/bin/docker-registry"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalRegistry:
    def __init__(self, username: str | None = None, password: str | None = None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="crispy-reg-"))
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.host}"
        self.username, self.password = username, password
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> "LocalRegistry":
        auth = ""
        if self.username:
            import bcrypt  # docker-registry only accepts bcrypt htpasswd entries
            hashed = bcrypt.hashpw(self.password.encode(), bcrypt.gensalt(rounds=5)).decode()
            (self.dir / "htpasswd").write_text(f"{self.username}:{hashed}\n")
            auth = f"auth:\n  htpasswd:\n    realm: crispy-test\n    path: {self.dir / 'htpasswd'}\n"
        (self.dir / "config.yml").write_text(
            "version: 0.1\nlog:\n  level: warn\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.dir / 'data'}\n  delete:\n    enabled: true\n"
            f"http:\n  addr: 127.0.0.1:{self.port}\n{auth}")
        self._log = open(self.dir / "registry.log", "wb")
        self.proc = subprocess.Popen([REGISTRY_BIN, "serve", str(self.dir / "config.yml")],
                                     stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(self.url + "/v2/", timeout=1)
                break
            except urllib.error.HTTPError:
                break  # 401 from an auth-protected registry: it is up
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("docker-registry did not start: "
                                       + (self.dir / "registry.log").read_text()) from None
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
        return urllib.request.urlopen(req, timeout=60)

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
