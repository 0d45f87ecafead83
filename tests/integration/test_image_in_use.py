"""RemoveImage against real containers: an image a container was created
from cannot be deleted (FAILED_PRECONDITION naming the container), one of
its tags can still be removed, and once the container is gone so can it."""

from __future__ import annotations

import grpc
import pytest

from cri.proto import api_pb2 as pb
from tests.pods_fixtures import *  # noqa: F403
from tests.pods_fixtures import container_config, load_image, pod_config

pytestmark = pytest.mark.integration


def test_image_in_use_cannot_be_removed(clean_pods):
    d = clean_pods
    image_id = load_image(d, "crispy.test/inuse:1")
    assert load_image(d, "crispy.test/inuse:2") == image_id
    with d.client() as c:
        cfg = pod_config("inuse")
        pod = c.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg)).pod_sandbox_id
        ctr = c.runtime.CreateContainer(pb.CreateContainerRequest(
            pod_sandbox_id=pod, config=container_config("c", ["/bin/true"], image="crispy.test/inuse:1"),
            sandbox_config=cfg)).container_id
        # One tag of two: only untagged, allowed while in use.
        c.image.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image="crispy.test/inuse:2")))
        st = c.image.ImageStatus(pb.ImageStatusRequest(image=pb.ImageSpec(image=image_id))).image
        assert list(st.repo_tags) == ["crispy.test/inuse:1"]
        for name in ("crispy.test/inuse:1", image_id):
            with pytest.raises(grpc.RpcError) as e:
                c.image.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image=name)))
            assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert ctr in e.value.details()
        assert c.image.ImageStatus(pb.ImageStatusRequest(image=pb.ImageSpec(image=image_id))).image.id == image_id
        c.runtime.RemoveContainer(pb.RemoveContainerRequest(container_id=ctr))
        c.image.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image="crispy.test/inuse:1")))
        assert not c.image.ImageStatus(pb.ImageStatusRequest(image=pb.ImageSpec(image=image_id))).HasField("image")
        c.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod))
        c.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod))
