"""The test kit itself: images built here really push to and come back from
a real registry, so image and runtime tests can trust them."""

import json
import urllib.request

import pytest

from tests import imagebuild as ib
from tests.registry import LocalRegistry

pytestmark = pytest.mark.integration


def test_push_and_fetch_back():
    img = ib.busybox_image()
    with LocalRegistry() as reg:
        digest = reg.push("library/busybox", "1.0", img)
        req = urllib.request.Request(f"{reg.url}/v2/library/busybox/manifests/1.0",
                                     headers={"Accept": ib.OCI_MANIFEST})
        resp = urllib.request.urlopen(req)
        body = resp.read()
        assert ib.digest_of(body) == digest
        layer = json.loads(body)["layers"][0]["digest"]
        blob = urllib.request.urlopen(f"{reg.url}/v2/library/busybox/blobs/{layer}").read()
        assert ib.digest_of(blob) == layer


def test_basic_auth_registry_refuses_anonymous():
    with LocalRegistry("alice", "s3cret") as reg:
        reg.push("team/app", "v1", ib.busybox_image())
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"{reg.url}/v2/team/app/manifests/v1")
        assert e.value.code == 401
