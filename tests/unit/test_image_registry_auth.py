"""Sans-IO registry auth and endpoint selection: strings in, values out."""

from __future__ import annotations

import base64
import json
from urllib.parse import parse_qs, urlsplit

import pytest

from cri.config import RegistryHostConfig
from images import manifest as mf
from images.platform import Platform, host_platform, select_manifest
from images.registry.auth import (
    Challenge,
    Credentials,
    credentials_from,
    credentials_from_json,
    parse_challenges,
    parse_token_response,
    token_request,
)
from images.registry.hosts import endpoints_for, is_loopback, parse_mirror
from runtime.errors import FailedPrecondition, InvalidArgument


def test_parse_bearer_challenge():
    (ch,) = parse_challenges('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
                             'scope="repository:library/busybox:pull"')
    assert ch == Challenge("bearer", {"realm": "https://auth.docker.io/token", "service": "registry.docker.io",
                                      "scope": "repository:library/busybox:pull"})


def test_parse_several_challenges_quotes_and_odd_spacing():
    chs = parse_challenges('Basic realm="a \\"quoted\\" realm" ,  BEARER realm=https://t/x , service = "s,v" , Negotiate')
    assert [c.scheme for c in chs] == ["basic", "bearer", "negotiate"]
    assert chs[0].params == {"realm": 'a "quoted" realm'}
    assert chs[1].params == {"realm": "https://t/x", "service": "s,v"}
    assert chs[2].params == {}


@pytest.mark.parametrize("junk", ["", "   ", ",,,", '="x"', 'Bearer realm="unterminated', "Bearer ==,=\""])
def test_parse_junk_does_not_crash(junk):
    parse_challenges(junk)


def test_scope_with_multiple_actions_survives():
    (ch,) = parse_challenges('Bearer realm="https://r",scope="repository:a/b:pull,push"')
    assert ch.params["scope"] == "repository:a/b:pull,push"


def test_token_request_get_with_basic_and_scopes():
    ch = Challenge("bearer", {"realm": "https://auth.example/token?x=1", "service": "reg"})
    req = token_request(ch, ["repository:a:pull", "repository:b:pull"], Credentials("u", "p"))
    assert req.method == "GET"
    q = parse_qs(urlsplit(req.url).query)
    assert q == {"x": ["1"], "service": ["reg"], "scope": ["repository:a:pull", "repository:b:pull"]}
    assert req.headers["Authorization"] == "Basic " + base64.b64encode(b"u:p").decode()
    anon = token_request(ch, ["repository:a:pull"], Credentials())
    assert "Authorization" not in anon.headers


def test_token_request_identity_token_is_oauth_post():
    ch = Challenge("bearer", {"realm": "https://auth.example/token", "service": "reg"})
    req = token_request(ch, ["repository:a:pull"], Credentials(identity_token="rt"))
    assert req.method == "POST"
    form = parse_qs(req.body.decode())
    assert form["grant_type"] == ["refresh_token"] and form["refresh_token"] == ["rt"] and form["service"] == ["reg"]


def test_token_request_rejects_bad_realm():
    with pytest.raises(InvalidArgument):
        token_request(Challenge("bearer", {"realm": "file:///etc/passwd"}), [], Credentials())


def test_token_response():
    t = parse_token_response(json.dumps({"access_token": "abc", "expires_in": 300}).encode(), now=1000.0)
    assert t.value == "abc" and t.valid(1200.0) and not t.valid(1300.0)
    assert parse_token_response(b'{"token": "x"}', now=0.0).expires_at == 55.0
    for bad in (b"nope", b"{}", b'{"token": ""}', b"[]"):
        with pytest.raises(InvalidArgument):
            parse_token_response(bad)


def test_credentials_from_auth_config_forms():
    b64 = base64.b64encode(b"user:pa:ss").decode()
    assert credentials_from(auth=b64) == Credentials("user", "pa:ss")
    assert credentials_from(username="x", password="y", auth=b64) == Credentials("x", "y")
    with pytest.raises(InvalidArgument):
        credentials_from(auth="!!!")
    with pytest.raises(InvalidArgument):
        credentials_from(auth=base64.b64encode(b"nocolon").decode())
    assert credentials_from_json(b'{"username": "a", "password": "b"}', "f") == Credentials("a", "b")
    with pytest.raises(InvalidArgument):
        credentials_from_json(b"[1]", "f")


def test_loopback_detection():
    for h in ["localhost", "localhost:5000", "127.0.0.1", "127.1.2.3:80", "[::1]:5000", "[::1]"]:
        assert is_loopback(h), h
    for h in ["example.com", "10.0.0.1:5000", "[fe80::1]:5000", "docker.io"]:
        assert not is_loopback(h), h


def test_endpoints_mirrors_then_upstream():
    regs = {"docker.io": RegistryHostConfig(mirrors=["https://m1.example/v2/", "m2.example:5000/prefix"]),
            "m2.example:5000": RegistryHostConfig(insecure=True)}
    eps = endpoints_for("docker.io", regs)
    assert [str(e) for e in eps] == ["https://m1.example", "https://m2.example:5000/prefix", "https://registry-1.docker.io"]
    assert [e.mirror for e in eps] == [True, True, False]
    assert eps[1].http_fallback and not eps[1].verify
    assert not eps[0].http_fallback and eps[2].verify
    (local,) = endpoints_for("127.0.0.1:5000", {})
    assert local.http_fallback and str(local) == "https://127.0.0.1:5000"
    (plain,) = endpoints_for("reg.example", {"reg.example": RegistryHostConfig(insecure=True, ca_file="/x")})
    assert plain.http_fallback and plain.ca_file == "/x"
    assert parse_mirror("http://h:1/p/") == ("h:1", "/p", "http")
    with pytest.raises(InvalidArgument):
        parse_mirror("ftp://h")


def test_platform_selection():
    manifests = [
        {"mediaType": mf.OCI_MANIFEST, "digest": "a", "platform": {"os": "linux", "architecture": "arm", "variant": "v6"}},
        {"mediaType": mf.OCI_MANIFEST, "digest": "b", "platform": {"os": "linux", "architecture": "arm", "variant": "v7"}},
        {"mediaType": "application/vnd.in-toto+json", "digest": "c", "platform": {"os": "linux", "architecture": "amd64"}},
        {"mediaType": mf.DOCKER_MANIFEST, "digest": "d", "platform": {"os": "linux", "architecture": "amd64"}},
        {"mediaType": mf.OCI_MANIFEST, "digest": "e", "platform": {"os": "linux", "architecture": "arm64"}},
    ]
    pick = lambda p: select_manifest(manifests, p, mf.MANIFEST_TYPES, "x")["digest"]  # noqa: E731
    assert pick(Platform("linux", "arm", "v7")) == "b"
    assert pick(Platform("linux", "amd64")) == "d"  # attestation type skipped
    assert pick(Platform("linux", "arm64", "v8")) == "e"  # unstated variant matches
    assert host_platform("aarch64") == Platform("linux", "arm64", "v8")
    assert host_platform("x86_64") == Platform("linux", "amd64", "")


def test_manifest_media_types():
    with pytest.raises(FailedPrecondition):
        mf.media_type_of(b'{"schemaVersion": 1, "fsLayers": []}')
    assert mf.media_type_of(b'{"schemaVersion": 2, "manifests": []}') == mf.OCI_INDEX
    with pytest.raises(Exception):  # noqa: B017 - any rejection of the malformed digest will do
        mf.parse_manifest(b'{"schemaVersion": 2, "config": {"digest": "sha256:xyz", "size": 1}, "layers": []}')
    with pytest.raises(InvalidArgument):
        mf.parse_manifest(json.dumps({"schemaVersion": 2, "mediaType": mf.OCI_MANIFEST,
                                      "config": {"digest": "sha256:" + "a" * 64, "size": 1},
                                      "layers": [{"mediaType": "application/x-foreign", "digest": "sha256:" + "b" * 64,
                                                  "size": 1}]}).encode())
