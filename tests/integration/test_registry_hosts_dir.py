"""Registries configured only through a hosts directory, against real
registries on loopback: Debian's docker-registry serving TLS and demanding
a client certificate (tests/registry.py, certificates from tests/pki.py),
reached with containerd's hosts.toml and with docker's certs.d files; a
mirror that exists only in hosts.toml serving a pull; headers sent; a change
to the directory picked up by the next pull, no restart."""

from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
import tempfile
from pathlib import Path

import pytest

from cri.config import Config
from images.manager import ImageManager
from runtime.errors import CrispyError
from tests import imagebuild as ib
from tests.pki import make_pki
from tests.registry import LocalRegistry
from tests.stub_registry import StubRegistry

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


@pytest.fixture(scope="module")
def world():
    pki_dir = Path(tempfile.mkdtemp(prefix="crispy-pki-"))
    try:
        pki = make_pki(pki_dir)
        with LocalRegistry() as plain:
            img = ib.busybox_image()
            plain.push("app/one", "v1", img)
            # The same storage over TLS, demanding a client certificate signed by the test CA.
            with LocalRegistry(tls=pki, require_client_cert=True, storage=plain.data) as tls:
                yield pki, plain, tls, img
    finally:
        shutil.rmtree(pki_dir, ignore_errors=True)


@pytest.fixture
def tmp():
    d = Path(tempfile.mkdtemp(prefix="crispy-hosts-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _manager(tmp: Path) -> ImageManager:
    cfg = Config()
    cfg.registry.config_path = str(tmp / "certs.d")
    return ImageManager(cfg, tmp / "data", lambda _id: [])


def _pull(m: ImageManager, *refs: str) -> list:
    async def go():
        await m.open()
        try:
            out = []
            for r in refs:
                try:
                    out.append(await m.pull(r, None))
                except CrispyError as e:
                    out.append(e)
            return out
        finally:
            await m.close()
    return asyncio.run(go())


def _hosts(tmp: Path, host: str, text: str) -> Path:
    d = tmp / "certs.d" / host
    d.mkdir(parents=True, exist_ok=True)
    (d / "hosts.toml").write_text(text)
    return d


def test_tls_registry_with_client_certificate_from_hosts_toml(world, tmp):
    pki, _, tls, img = world
    _hosts(tmp, tls.host, f'server = "https://{tls.host}"\nca = "{pki.ca}"\n'
                          f'client = [["{pki.client_cert}", "{pki.client_key}"]]\n')
    (rec,) = _pull(_manager(tmp), f"{tls.host}/app/one:v1")
    assert not isinstance(rec, Exception), rec
    assert rec.id == img.config_digest


def test_without_the_client_certificate_the_registry_refuses(world, tmp):
    pki, _, tls, _ = world
    _hosts(tmp, tls.host, f'server = "https://{tls.host}"\nca = "{pki.ca}"\n')
    (err,) = _pull(_manager(tmp), f"{tls.host}/app/one:v1")
    assert isinstance(err, CrispyError)
    assert "client certificate" in err.message and "hosts.toml" in err.message
    # Proof the client certificate is what the first test's pull needed:
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
        with socket.create_connection(("127.0.0.1", tls.port)) as s, ctx.wrap_socket(s, server_hostname="127.0.0.1") as t:
            t.sendall(b"GET /v2/ HTTP/1.0\r\n\r\n")
            t.recv(100)


def test_docker_certs_d_files(world, tmp):
    pki, _, tls, img = world
    d = tmp / "certs.d" / tls.host
    d.mkdir(parents=True)
    shutil.copy(pki.ca, d / "ca.crt")
    shutil.copy(pki.client_cert, d / "client.cert")
    shutil.copy(pki.client_key, d / "client.key")
    (rec,) = _pull(_manager(tmp), f"{tls.host}/app/one:v1")
    assert not isinstance(rec, Exception), rec
    assert rec.id == img.config_digest


def test_a_mirror_only_in_hosts_toml_serves_the_pull_with_its_headers(world, tmp):
    _, plain, _, img = world
    with StubRegistry(plain.url) as mirror:
        # The registry itself is a closed loopback port: only the mirror can serve.
        _hosts(tmp, "registry.example.test",
               'server = "https://127.0.0.1:9"\n'
               f'[host."http://{mirror.host}"]\ncapabilities = ["pull", "resolve"]\n'
               f'[host."http://{mirror.host}".header]\nx-crispy-node = "node-1"\nx-multi = ["a", "b"]\n')
        (rec,) = _pull(_manager(tmp), "registry.example.test/app/one:v1")
        assert not isinstance(rec, Exception), rec
        assert rec.id == img.config_digest
        assert mirror.count("/v2/app/one/manifests/v1") >= 1
        headers = [h for _, p, h in mirror.requests if "/manifests/" in p]
        assert headers and all(h.get("x-crispy-node") == "node-1" and h.get("x-multi") == "a, b" for h in headers)


def test_a_pull_only_mirror_serves_blobs_but_not_tags(world, tmp):
    _, plain, _, img = world
    with StubRegistry(plain.url) as blobs, StubRegistry(plain.url) as resolver:
        _hosts(tmp, "registry.example.test",
               'server = "https://127.0.0.1:9"\n'
               f'[host."http://{blobs.host}"]\ncapabilities = ["pull"]\n'
               f'[host."http://{resolver.host}"]\ncapabilities = ["pull", "resolve"]\n')
        (rec,) = _pull(_manager(tmp), "registry.example.test/app/one:v1")
        assert not isinstance(rec, Exception), rec
        assert blobs.count("/manifests/v1") == 0 and resolver.count("/manifests/v1") >= 1
        assert blobs.count("/blobs/") >= 1


def test_changes_are_picked_up_by_the_next_pull(world, tmp):
    _, plain, _, img = world
    m = _manager(tmp)
    _hosts(tmp, "registry.example.test", 'server = "https://127.0.0.1:9"\n')

    async def go():
        await m.open()
        try:
            out = []
            try:
                await m.pull("registry.example.test/app/one:v1", None)
                out.append(None)
            except CrispyError as e:
                out.append(e)
            _hosts(tmp, "registry.example.test",
                   f'server = "https://127.0.0.1:9"\n[host."http://{plain.host}"]\n')
            out.append(await m.pull("registry.example.test/app/one:v1", None))
            return out
        finally:
            await m.close()
    first, second = asyncio.run(go())
    assert isinstance(first, CrispyError)
    assert second.id == img.config_digest
