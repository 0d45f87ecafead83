"""CreateContainer+StartContainer of a container with an image volume
(`Mount.image`, KEP-4639), beside a plain one in the same pod and
iteration: the goal is the volume costing at most 10% of a plain start.
containerd 1.6 has no image volumes; it is reported as failing setup."""

from __future__ import annotations

import time

from bench import workload
from bench.scenarios.base import Context, Metric, Samples, Scenario
from bench.scenarios.container_start import PodState, start_pod, stop_pod
from bench.target import Target
from cri.proto import api_pb2 as pb

VOLUME_PATH = "/mnt/image-volume"


def volume_config(image: str) -> pb.ContainerConfig:
    config = workload.sleeper_config(image, name="image-volume")
    config.mounts.append(pb.Mount(container_path=VOLUME_PATH, readonly=True, image=pb.ImageSpec(image=image)))
    return config


class ImageVolumeStart(Scenario):
    name = "image_volume_start"
    title = "Container create+start with an image volume, and a plain one"
    metrics = {
        "plain_create_start_s": Metric("s", "lower", "CreateContainer+StartContainer, no volume"),
        "image_volume_create_start_s": Metric("s", "lower", "CreateContainer+StartContainer with an image volume"),
    }

    def setup(self, ctx: Context, target: Target) -> PodState:
        if target.kind != "crispy":
            raise RuntimeError(f"{target.name} does not implement image volumes (CRI Mount.image)")
        return start_pod(ctx, target)

    def iterate(self, ctx: Context, target: Target, state: PodState, out: Samples) -> None:
        c = target.client
        for metric, config in (("plain_create_start_s", workload.sleeper_config(ctx.images.busybox)),
                               ("image_volume_create_start_s", volume_config(ctx.images.busybox))):
            t0 = time.perf_counter()
            cid = c.create_container(state.pod_id, config, state.config)
            c.start_container(cid)
            out.add(metric, time.perf_counter() - t0)
            c.stop_container(cid, timeout=0)
            c.remove_container(cid)

    def teardown(self, ctx: Context, target: Target, state: PodState | None) -> None:
        stop_pod(target, state)
