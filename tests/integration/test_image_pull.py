"""Pulling from the real docker-registry on loopback (anonymous and htpasswd
Basic), and through a stub in front of it for Bearer tokens and injected
failures: 500s, stalls, truncated and corrupted blobs, mirrors."""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from cri.config import Config, RegistryHostConfig
from images.digests import ContentMismatch
from images.manager import ImageManager
from images.registry.errors import AuthenticationFailed, PullStalled, RegistryUnavailable
from runtime.errors import FailedPrecondition, NotFound, ResourceExhausted
from tests import imagebuild as ib
from tests.pki import make_pki
from tests.registry import LocalRegistry
from tests.stub_registry import StubRegistry

pytestmark = pytest.mark.integration


def auth(**kw: str) -> SimpleNamespace:
    base = dict(username="", password="", auth="", server_address="", identity_token="", registry_token="")
    return SimpleNamespace(**{**base, **kw})


def layered(tag: str, n: int = 3, compression: str = "gzip", docker: bool = False) -> ib.Image:
    layers = [ib.make_layer(ib.busybox_entries())]
    for i in range(1, n):
        layers.append(ib.make_layer({f"layer{i}": ib.File(os.urandom(300_000) + tag.encode()), "etc": ib.Dir(),
                                     f"etc/{tag}": ib.File(tag.encode()), ".wh.home": ib.File(b"")}))
    return ib.build_image(layers, config={"Cmd": ["/bin/sh"], "Env": [f"TAG={tag}"]}, compression=compression,
                          docker=docker)


@pytest.fixture(scope="module")
def registry():
    with LocalRegistry() as reg:
        reg.images = {}
        for name, img in {
            "app/gzip": layered("gzip"),
            "app/zstd": layered("zstd", compression="zstd"),
            "app/plain": layered("plain", compression="none"),
            "app/docker": layered("docker", docker=True),
        }.items():
            reg.push(name, "v1", img)
            reg.images[name] = img
        amd, arm = layered("amd"), layered("arm")
        arm = ib.build_image([ib.make_layer({"arm": ib.File(b"a")})], arch="arm64")
        idx = ib.build_index([(arm, {"os": "linux", "architecture": "arm64", "variant": "v8"}),
                              (amd, {"os": "linux", "architecture": "amd64"})], docker=True)
        reg.push("app/multi", "v1", idx)
        reg.images["app/multi"] = idx
        reg.images["amd"] = amd
        s390 = ib.build_index([(ib.busybox_image(arch="s390x"), {"os": "linux", "architecture": "s390x"})])
        reg.push("app/alien", "v1", s390)
        yield reg


@pytest.fixture
def tmp():
    d = Path(tempfile.mkdtemp(prefix="crispy-pull-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def manager(tmp: Path, registries: dict | None = None, **images_cfg) -> ImageManager:
    cfg = Config()
    for k, v in images_cfg.items():
        setattr(cfg.images, k, v)
    cfg.registries = registries or {}
    m = ImageManager(cfg, tmp / "data", lambda _id: [])
    return m


def pull(m: ImageManager, *refs: str, creds=None):
    async def go():
        await m.open()
        try:
            return await asyncio.gather(*(m.pull(r, creds) for r in refs))
        finally:
            await m.close()
    return asyncio.run(go())


@pytest.mark.parametrize("name", ["app/gzip", "app/zstd", "app/plain", "app/docker"])
def test_pull_anonymous_every_compression(registry, tmp, name):
    m = manager(tmp)
    img = registry.images[name]
    (rec,) = pull(m, f"{registry.host}/{name}:v1")
    assert rec.id == img.config_digest
    assert rec.repo_tags == [f"{registry.host}/{name}:v1"]
    assert rec.repo_digests == [f"{registry.host}/{name}@{img.digest}"]
    top = Path(m.layer_dirs(rec)[-1])
    assert (top / "etc" / name.split("/")[1]).read_bytes() == name.split("/")[1].encode()
    assert os.lstat(top / "home").st_rdev == 0  # whiteout in overlay form
    assert (Path(m.layer_dirs(rec)[0]) / "bin/busybox").is_file()


def test_pull_index_selects_host_platform_and_by_digest(registry, tmp):
    m = manager(tmp)
    idx = registry.images["app/multi"]
    a, b = pull(m, f"{registry.host}/app/multi:v1", f"localhost:{registry.port}/app/multi@{idx.digest}")
    assert a.id == b.id == registry.images["amd"].config_digest
    assert f"{registry.host}/app/multi@{idx.digest}" in a.repo_digests
    assert not m.content.has(idx.images[0].config_digest)  # the arm64 config was never fetched
    with pytest.raises(NotFound) as e:
        pull(manager(tmp / "x"), f"{registry.host}/app/alien:v1")
    assert "linux/s390x" in e.value.message and "amd64" in e.value.message


def test_missing_image_and_bad_reference(registry, tmp):
    m = manager(tmp)
    with pytest.raises(NotFound) as e:
        pull(m, f"{registry.host}/app/nothere:v1")
    assert "not found" in e.value.message


def test_concurrent_pulls_share_one_download(registry, tmp):
    with StubRegistry(registry.url) as stub:
        m = manager(tmp)
        img = registry.images["app/gzip"]
        recs = pull(m, *[f"{stub.host}/app/gzip:v1"] * 3, f"{stub.host}/app/gzip@{img.digest}")
        assert len({r.id for r in recs}) == 1
        for d in list(img.blobs):
            assert stub.count(f"/blobs/{d}") == 1, d
        # Warm pull: only the manifest is fetched again.
        before = len(stub.requests)
        pull(m, f"{stub.host}/app/gzip:v1")
        assert all("/blobs/" not in p for _, p, _ in stub.requests[before:])


def test_basic_auth_registry(tmp):
    img = layered("basic", n=2)
    with LocalRegistry(username="alice", password="s3cret") as reg:
        reg.push("priv/app", "v1", img)
        ref = f"{reg.host}/priv/app:v1"
        with pytest.raises(AuthenticationFailed) as e:
            pull(manager(tmp / "a"), ref)
        assert "auth_file" in e.value.message
        with pytest.raises(AuthenticationFailed):
            pull(manager(tmp / "b"), ref, creds=auth(username="alice", password="wrong"))
        (rec,) = pull(manager(tmp / "c"), ref, creds=auth(username="alice", password="s3cret"))
        assert rec.id == img.config_digest
        b64 = base64.b64encode(b"alice:s3cret").decode()
        (rec,) = pull(manager(tmp / "d"), ref, creds=auth(auth=b64, server_address=reg.host))
        assert rec.id == img.config_digest
        # Credentials from the registry's auth_file in crispy.toml.
        af = tmp / "auth.json"
        af.write_text(f'{{"auth": "{b64}"}}')
        (rec,) = pull(manager(tmp / "e", {reg.host: RegistryHostConfig(auth_file=str(af))}), ref)
        assert rec.id == img.config_digest


def test_bearer_token_flow(registry, tmp):
    with StubRegistry(registry.url, bearer=("bob", "pw")) as stub:
        ref = f"{stub.host}/app/zstd:v1"
        with pytest.raises(AuthenticationFailed):
            pull(manager(tmp / "a"), ref)
        (rec,) = pull(manager(tmp / "b"), ref, creds=auth(username="bob", password="pw"))
        assert rec.id == registry.images["app/zstd"].config_digest
        tr = [t for t in stub.token_requests if t["_authorization"][0].startswith("Basic")]
        assert tr and tr[-1]["service"] == ["stub-registry"] and tr[-1]["scope"] == ["repository:app/zstd:pull"]
        # identity_token is an OAuth2 refresh token, POSTed to the realm.
        (rec,) = pull(manager(tmp / "c"), ref, creds=auth(identity_token="identity-bob"))
        assert stub.token_requests[-1]["grant_type"] == ["refresh_token"]
        # registry_token is sent as the bearer token itself.
        token = next(iter(stub.tokens))
        n_tokens = len(stub.token_requests)
        (rec,) = pull(manager(tmp / "d"), ref, creds=auth(registry_token=token))
        assert len(stub.token_requests) == n_tokens


def test_500_then_success_and_dropped_connection_resume(registry, tmp):
    img = registry.images["app/gzip"]
    big = max((d for d in img.blobs if d != img.config_digest), key=lambda d: len(img.blobs[d]))
    with StubRegistry(registry.url) as stub:
        stub.faults.errors_500 = {"/manifests/": 2, f"/blobs/{img.config_digest}": 1}
        stub.faults.truncate = {f"/blobs/{big}": 1}
        (rec,) = pull(manager(tmp), f"{stub.host}/app/gzip:v1")
        assert rec.id == img.config_digest
        assert all(left == 0 for left in stub.faults.errors_500.values())
        assert stub.count("/manifests/v1") == 3
        # The drop mid-body was retried (resuming from what was written).
        assert stub.count(f"/blobs/{big}") == 2


def test_partial_blob_is_resumed_with_range(registry, tmp):
    img = registry.images["app/plain"]
    big = max((d for d in img.blobs if d != img.config_digest), key=lambda d: len(img.blobs[d]))
    m = manager(tmp)
    # An earlier, interrupted pull left the first 100000 bytes.
    m.content.ingest_dir.mkdir(parents=True)
    (m.content.ingest_dir / f"{big.split(':')[1]}.partial").write_bytes(img.blobs[big][:100_000])
    with StubRegistry(registry.url) as stub:
        (rec,) = pull(m, f"{stub.host}/app/plain:v1")
        hdrs = [h for _, p, h in stub.requests if f"/blobs/{big}" in p]
        assert len(hdrs) == 1 and hdrs[0].get("Range") == "bytes=100000-"
    assert rec.id == img.config_digest


def test_server_ignoring_range_restarts_cleanly(registry, tmp):
    img = registry.images["app/plain"]
    big = max((d for d in img.blobs if d != img.config_digest), key=lambda d: len(img.blobs[d]))
    m = manager(tmp)
    m.content.ingest_dir.mkdir(parents=True)
    (m.content.ingest_dir / f"{big.split(':')[1]}.partial").write_bytes(img.blobs[big][:100_000])
    with StubRegistry(registry.url) as stub:
        stub.faults.ignore_range = True
        (rec,) = pull(m, f"{stub.host}/app/plain:v1")
    assert rec.id == img.config_digest


def test_corrupt_blob_is_refused_and_leaves_no_image(registry, tmp):
    img = registry.images["app/gzip"]
    layer = [d for d in img.blobs if d != img.config_digest][1]
    with StubRegistry(registry.url) as stub:
        stub.faults.corrupt = {f"/blobs/{layer}"}
        m = manager(tmp)
        with pytest.raises(ContentMismatch) as e:
            pull(m, f"{stub.host}/app/gzip:v1")
        assert layer in e.value.message
        assert m.list() == []
        assert not m.content.has(layer)
        # Partials of the cancelled sibling downloads may stay for a resume; the bad one may not.
        assert not (m.content.ingest_dir / f"{layer.split(':')[1]}.partial").exists()


def test_truncated_blob_every_time_fails_clearly(registry, tmp):
    img = registry.images["app/gzip"]
    layer = [d for d in img.blobs if d != img.config_digest][1]
    with StubRegistry(registry.url) as stub:
        stub.faults.truncate = {f"/blobs/{layer}": 100}
        m = manager(tmp)
        with pytest.raises(RegistryUnavailable) as e:
            pull(m, f"{stub.host}/app/gzip:v1")
        assert layer in e.value.message
        assert m.list() == []


def test_stalled_registry_is_cancelled(registry, tmp):
    img = registry.images["app/gzip"]
    layer = [d for d in img.blobs if d != img.config_digest][1]
    with StubRegistry(registry.url) as stub:
        stub.faults.stall = {f"/blobs/{layer}": 4.0}
        m = manager(tmp, pull_stall_timeout=1.0)
        with pytest.raises(PullStalled) as e:
            pull(m, f"{stub.host}/app/gzip:v1")
        assert "sent nothing for 1 s" in e.value.message
        assert m.list() == []


def test_schema1_refused_and_manifest_cap(registry, tmp):
    with StubRegistry(registry.url) as stub:
        stub.faults.schema1 = True
        with pytest.raises(FailedPrecondition) as e:
            pull(manager(tmp / "a"), f"{stub.host}/app/gzip:v1")
        assert "schema 1" in e.value.message
    with pytest.raises(ResourceExhausted) as e:
        pull(manager(tmp / "b", max_manifest_bytes=100), f"{registry.host}/app/gzip:v1")
    assert "images.max_manifest_bytes" in e.value.message
    with pytest.raises(ResourceExhausted):
        pull(manager(tmp / "c", max_config_bytes=100), f"{registry.host}/app/gzip:v1")


def test_mirrors_in_order_with_fallback(registry, tmp):
    with StubRegistry(registry.url) as broken, StubRegistry(registry.url) as good:
        broken.faults.missing = {"/v2/app"}
        regs = {"docker.io": RegistryHostConfig(mirrors=[f"http://{broken.host}", f"http://{good.host}/v2"])}
        (rec,) = pull(manager(tmp, regs), "app/gzip:v1")
        assert rec.id == registry.images["app/gzip"].config_digest
        assert rec.repo_tags == ["docker.io/app/gzip:v1"]
        assert broken.count("/manifests/v1") == 1 and good.count("/manifests/v1") == 1


@pytest.mark.parametrize("limit", [1, 2])
def test_blob_downloads_are_bounded(registry, tmp, limit):
    with StubRegistry(registry.url) as stub:
        stub.faults.stall = {"/blobs/": 0.3}
        stub.faults.stall_body = False
        m = manager(tmp, max_concurrent_downloads=limit)
        (rec,) = pull(m, f"{stub.host}/app/gzip:v1")
        assert rec.id == registry.images["app/gzip"].config_digest
        # Three layers wait 0.3 s each at the server: with room for two, two overlap.
        assert stub.max_blobs_in_flight == limit


def test_long_pulls_log_progress(registry, tmp, monkeypatch, caplog):
    from images.registry import puller
    monkeypatch.setattr(puller, "PROGRESS_INTERVAL_S", 0.1)
    with StubRegistry(registry.url) as stub:
        stub.faults.stall = {"/blobs/": 0.3}
        stub.faults.stall_body = False
        with caplog.at_level("INFO", logger="crispy.images.pull"):
            pull(manager(tmp, max_concurrent_downloads=1), f"{stub.host}/app/gzip:v1")
    lines = [r for r in caplog.records if r.getMessage() == "pulling"]
    assert lines, [r.getMessage() for r in caplog.records]
    fields = lines[-1].fields
    assert fields["total"] > 600_000 and 0 <= fields["bytes"] <= fields["total"] and "mb_per_s" in fields
    done = [r for r in caplog.records if r.getMessage() == "image pulled"]
    assert done and done[-1].fields["bytes"] == done[-1].fields["total"]


def test_hostile_layer_fails_the_pull_and_leaves_nothing(registry, tmp):
    evil = ib.make_layer({"etc": ib.Symlink("/tmp"), "etc/crispy-escaped": ib.File(b"!")})
    img = ib.build_image([ib.make_layer(ib.busybox_entries()), evil])
    registry.push("app/evil", "v1", img)
    m = manager(tmp)
    with pytest.raises(Exception) as e:
        pull(m, f"{registry.host}/app/evil:v1")
    assert "symlink" in str(e.value) and "outside its layer" in str(e.value)
    assert not Path("/tmp/crispy-escaped").exists()
    assert m.list() == []
    assert not [p for p in m.snapshots.dir.iterdir() if p.name.startswith(".tmp-")]


def test_tls_registry_with_custom_ca(registry, tmp):
    pki, other = make_pki(tmp / "pki"), make_pki(tmp / "other")
    with StubRegistry(registry.url, tls=(str(pki.server_cert), str(pki.server_key))) as stub:
        ref = f"{stub.host}/app/gzip:v1"
        # Loopback without settings: https without certificate checks.
        (rec,) = pull(manager(tmp / "a"), ref)
        assert rec.id == registry.images["app/gzip"].config_digest
        # With a CA configured the certificate is checked, against that CA.
        (rec,) = pull(manager(tmp / "b", {stub.host: RegistryHostConfig(ca_file=str(pki.ca))}), ref)
        assert rec.id == registry.images["app/gzip"].config_digest
        with pytest.raises(RegistryUnavailable) as e:
            pull(manager(tmp / "c", {stub.host: RegistryHostConfig(ca_file=str(other.ca))}), ref)
        assert "ca_file" in e.value.message and "certificate" in e.value.message
