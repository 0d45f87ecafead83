"""Slow and hostile registries against the real docker-registry (behind the
fault-injecting stub): a blob dripped at 1 byte/s is cancelled by the
minimum-rate rule and resumed later with Range; a registry dripping three
blobs does not hold up a pull from a healthy one; a pull whose gRPC caller
cancels stops downloading; redirect loops, endless redirect chains and
file:// redirects get a clear UNAVAILABLE; a 1000-platform index without
this host's platform is NOT_FOUND with a short message."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import grpc
import pytest

from cri.config import Config
from cri.proto import api_pb2 as pb
from cri.rpc import status_for
from images.manager import ImageManager
from images.registry.errors import PullTooSlow
from tests import imagebuild as ib
from tests.daemon_proc import DaemonProcess
from tests.registry import LocalRegistry
from tests.stub_registry import StubRegistry

pytestmark = pytest.mark.integration

# How long a test waits for an outcome that, with the bug, never comes.
NEVER_S = 45.0


def layered(tag: str, n: int = 3) -> ib.Image:
    layers = [ib.make_layer({f"layer{i}": ib.File(os.urandom(200_000) + tag.encode())}) for i in range(n)]
    return ib.build_image(layers, config={"Cmd": ["/bin/sh"], "Env": [f"TAG={tag}"]}, compression="none")


def layer_digests(img: ib.Image) -> list[str]:
    return [d for d in img.blobs if d != img.config_digest]


@pytest.fixture(scope="module")
def registry():
    with LocalRegistry() as reg:
        reg.images = {}
        for name in ("app/slow", "app/healthy", "app/resume"):
            img = layered(name.split("/")[1])
            reg.push(name, "v1", img)
            reg.images[name] = img
        big = ib.build_image([ib.make_layer({"big": ib.File(os.urandom(2_000_000))})], compression="none")
        reg.push("app/big", "v1", big)
        reg.images["app/big"] = big
        # An index of 1000 platforms, none of them this host's.
        alien = ib.busybox_image(arch="s390x")
        reg.push("app/alien", "base", alien)
        entries = [{"mediaType": alien.media_type, "digest": alien.digest, "size": len(alien.manifest),
                    "platform": {"os": "plan9", "architecture": f"arch{i:04d}"}} for i in range(1000)]
        index = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                            "manifests": entries}).encode()
        reg.push_manifest("app/alien", "v1", index, "application/vnd.oci.image.index.v1+json")
        yield reg


@pytest.fixture
def tmp():
    d = Path(tempfile.mkdtemp(prefix="crispy-slow-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def manager(tmp: Path, **images_cfg) -> ImageManager:
    cfg = Config()
    for k, v in images_cfg.items():
        setattr(cfg.images, k, v)
    return ImageManager(cfg, tmp / "data", lambda _id: [])


async def within(aw, what: str):
    try:
        return await asyncio.wait_for(aw, NEVER_S)
    except TimeoutError:
        raise AssertionError(f"{what} did not finish within {NEVER_S:g} s") from None


async def until(cond, what: str) -> None:
    deadline = time.monotonic() + NEVER_S
    while not cond():
        assert time.monotonic() < deadline, f"never: {what}"
        await asyncio.sleep(0.05)


def test_dripping_blob_is_cancelled_by_min_rate_and_resumed_later(registry, tmp):
    img = registry.images["app/resume"]
    layer = layer_digests(img)[0]
    with StubRegistry(registry.url) as stub:
        stub.faults.drip = {f"/blobs/{layer}": 1.0}
        stub.faults.drip_head = 50_000
        m = manager(tmp, pull_min_rate=1000, pull_rate_window=1.0, pull_stall_timeout=30.0)

        async def go():
            await m.open()
            try:
                with pytest.raises(PullTooSlow) as e:
                    await within(m.pull(f"{stub.host}/app/resume:v1", None), "the dripping pull")
                assert m.list() == []
                stub.faults.drip = {}
                before = len(stub.requests)
                rec = await within(m.pull(f"{stub.host}/app/resume:v1", None), "the second pull")
                return e.value, rec, [h.get("Range") for _, p, h in stub.requests[before:] if layer in p]
            finally:
                await m.close()
        err, rec, ranges = asyncio.run(go())
    assert status_for(err)[0] == grpc.StatusCode.DEADLINE_EXCEEDED
    msg = err.message
    assert layer in msg and stub.host in msg and "B/s" in msg and "images.pull_min_rate" in msg, msg
    assert rec.id == img.config_digest
    # The second pull asked only for what the first did not get.
    assert len(ranges) == 1 and ranges[0] is not None, ranges
    assert int(ranges[0].removeprefix("bytes=").rstrip("-")) >= 50_000, ranges


def test_healthy_registry_pulls_while_another_drips_three_blobs(registry, tmp):
    slow_img = registry.images["app/slow"]
    with StubRegistry(registry.url) as slow, StubRegistry(registry.url) as healthy:
        slow.faults.drip = {f"/blobs/{d}": 1.0 for d in layer_digests(slow_img)}
        # No minimum rate: only the sharing of slots can let the healthy pull through.
        m = manager(tmp, max_concurrent_downloads=3, pull_min_rate=0, pull_stall_timeout=60.0)

        async def go():
            await m.open()
            try:
                dripping = asyncio.ensure_future(m.pull(f"{slow.host}/app/slow:v1", None))
                await until(lambda: slow.dripping == 3, "three blobs dripping")
                rec = await within(m.pull(f"{healthy.host}/app/healthy:v1", None), "the healthy pull")
                still = slow.dripping
                dripping.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await dripping
                await until(lambda: slow.dripping == 0, "the dripping downloads stop")
                return rec, still
            finally:
                await m.close()
        rec, still = asyncio.run(go())
    assert rec.id == registry.images["app/healthy"].config_digest
    assert still >= 2  # the healthy pull did not wait for the slow registry to finish or fail
    assert slow.drips_hung_up >= 3  # crispy hung up (one of them also when it yielded its slot)


def test_pull_cancelled_by_its_client_stops_and_resumes_with_range(registry, daemon_base: Path):
    img = registry.images["app/big"]
    (big,) = layer_digests(img)
    head = 1_500_000
    with StubRegistry(registry.url) as stub:
        stub.faults.drip = {f"/blobs/{big}": 1.0}
        stub.faults.drip_head = head
        d = DaemonProcess(daemon_base).start()
        try:
            c = d.client()
            ref = f"{stub.host}/app/big:v1"
            call = c.image.PullImage.future(pb.PullImageRequest(image=pb.ImageSpec(image=ref)), timeout=120)
            asyncio.run(until(lambda: stub.dripping == 1, "the blob dripping"))
            # The stub having sent the head only means it sits in socket buffers;
            # wait until crispy has read and written at least its first 1 MiB piece.
            partial = Path(d.data_root) / "images" / "ingest" / f"{big.split(':', 1)[1]}.partial"
            asyncio.run(until(lambda: partial.exists() and partial.stat().st_size >= 1 << 20, "the first MiB on disk"))
            kept = partial.stat().st_size
            call.cancel()
            # crispy hangs up on the registry: nobody waits for this pull any more.
            asyncio.run(until(lambda: stub.dripping == 0, "the download stops after the client cancelled"))
            assert stub.drips_hung_up == 1
            assert "pull cancelled" in d.log()
            stub.faults.drip = {}
            before = len(stub.requests)
            resp = c.image.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=ref)), timeout=120)
            assert resp.image_ref == img.config_digest
            ranges = [h.get("Range") for _, p, h in stub.requests[before:] if big in p]
            assert len(ranges) == 1 and ranges[0] is not None, ranges
            # What was on disk at the cancel was kept (and what was buffered was
            # written too, so the resume point is never behind it).
            assert int(ranges[0].removeprefix("bytes=").rstrip("-")) >= kept, ranges
            c.close()
        finally:
            d.stop()


def test_redirect_loops_and_foreign_schemes_are_unavailable(registry, daemon):
    img = registry.images["app/healthy"]
    layer = layer_digests(img)[1]
    c = daemon.client()
    with StubRegistry(registry.url) as stub:
        ref = f"{stub.host}/app/healthy:v1"
        for location, words in [("SELF", "loop"), ("CHAIN", "more than 10"),
                                ("file:///etc/passwd", "http and https"), ("ftp://127.0.0.1/x", "http and https"),
                                ("data:text/plain,hello", "http and https")]:
            stub.faults.redirect = {f"/blobs/{layer}": location}
            with pytest.raises(grpc.RpcError) as e:
                c.image.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=ref)), timeout=60)
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE, (location, e.value.details())
            assert words in e.value.details() and layer in e.value.details(), e.value.details()
        # A redirect within the registry is followed.
        stub.faults.redirect = {f"/v2/app/healthy/blobs/{layer}": f"{registry.url}/v2/app/healthy/blobs/{layer}"}
        resp = c.image.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=ref)), timeout=60)
        assert resp.image_ref == img.config_digest
    c.close()


def test_thousand_platform_index_without_ours_is_not_found_briefly(registry, daemon):
    c = daemon.client()
    with pytest.raises(grpc.RpcError) as e:
        c.image.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=f"{registry.host}/app/alien:v1")), timeout=60)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND, e.value.details()
    details = e.value.details()
    assert len(details.encode()) < 1024, len(details)
    assert "plan9/arch0000" in details and "992 more platforms" in details, details
    c.close()
