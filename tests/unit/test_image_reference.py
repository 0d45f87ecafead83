import pytest

from images import reference
from images.digests import chain_ids, sha256_of
from runtime.errors import InvalidArgument

D = "sha256:" + "a" * 64


@pytest.mark.parametrize("given,want", [
    ("busybox", "docker.io/library/busybox:latest"),
    ("busybox:1.36", "docker.io/library/busybox:1.36"),
    ("library/busybox", "docker.io/library/busybox:latest"),
    ("docker.io/busybox", "docker.io/library/busybox:latest"),
    ("index.docker.io/library/busybox", "docker.io/library/busybox:latest"),
    ("user/app:v1", "docker.io/user/app:v1"),
    ("localhost/app", "localhost/app:latest"),
    ("localhost:5000/x", "localhost:5000/x:latest"),
    ("127.0.0.1:5000/a/b/c:t", "127.0.0.1:5000/a/b/c:t"),
    ("[::1]:5000/x", "[::1]:5000/x:latest"),
    ("quay.io/coreos/etcd:v3.5", "quay.io/coreos/etcd:v3.5"),
    (f"busybox@{D}", f"docker.io/library/busybox@{D}"),
    (f"busybox:1.36@{D}", f"docker.io/library/busybox:1.36@{D}"),
    ("my-reg.example.com:443/a_b__c/d-e.f:TAG_1.2-x", "my-reg.example.com:443/a_b__c/d-e.f:TAG_1.2-x"),
])
def test_normalises_like_docker(given, want):
    assert str(reference.parse(given)) == want


@pytest.mark.parametrize("bad", [
    "", " busybox", "Busybox", "busybox:", "busybox@sha256:abc", "busybox@md5:" + "a" * 32,
    "a//b", "-x", "x-", "busybox:bad tag", "busybox:" + "t" * 129, "/busybox", "a/" * 200 + "b",
    "host:5000/UPPER", ":tag",
])
def test_invalid_references_are_invalid_argument(bad):
    with pytest.raises(InvalidArgument):
        reference.parse(bad)


def test_parts_and_api_host():
    r = reference.parse("busybox")
    assert (r.domain, r.path, r.tag, r.digest) == ("docker.io", "library/busybox", "latest", "")
    assert r.api_host == "registry-1.docker.io"
    assert reference.parse("localhost:5000/x").api_host == "localhost:5000"
    assert r.with_digest(D).digested == f"docker.io/library/busybox@{D}"
    # A colon before the last slash is a port, not a tag.
    assert reference.parse("host:5000/x").tag == "latest"


def test_chain_ids_follow_the_oci_formula():
    a, b, c = (sha256_of(x) for x in (b"a", b"b", b"c"))
    ab = sha256_of(f"{a} {b}".encode())
    assert chain_ids([a, b, c]) == [a, ab, sha256_of(f"{ab} {c}".encode())]
    assert chain_ids([]) == []
