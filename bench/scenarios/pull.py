"""Image pull of a ~50 MB, five-layer image from the loopback registry:
cold (image and its blobs removed before each pull) and warm (present)."""

from __future__ import annotations

import time

from bench.scenarios.base import Context, Metric, Samples, Scenario
from bench.target import Target


def _remove_if_present(target: Target, image: str) -> None:
    if target.client.image_status(image) is not None:
        target.client.remove_image(image)


class PullCold(Scenario):
    name = "pull_cold"
    title = "Image pull, cold (50 MB, 5 layers)"
    metrics = {
        "pull_cold_s": Metric("s", "lower", "PullImage, cold"),
        "pull_cold_mb_s": Metric("MB/s", "higher", "cold pull throughput"),
    }

    def iterate(self, ctx: Context, target: Target, state: object, out: Samples) -> None:
        image = ctx.images.big
        _remove_if_present(target, image)
        t0 = time.perf_counter()
        target.client.pull_image(image)
        seconds = time.perf_counter() - t0
        out.add("pull_cold_s", seconds)
        out.add("pull_cold_mb_s", ctx.images.big_bytes / 1e6 / seconds)

    def teardown(self, ctx: Context, target: Target, state: object) -> None:
        _remove_if_present(target, ctx.images.big)


class PullWarm(Scenario):
    name = "pull_warm"
    title = "Image pull, warm (already present)"
    metrics = {"pull_warm_s": Metric("s", "lower", "PullImage, warm")}

    def setup(self, ctx: Context, target: Target) -> None:
        target.client.pull_image(ctx.images.big)

    def iterate(self, ctx: Context, target: Target, state: object, out: Samples) -> None:
        t0 = time.perf_counter()
        target.client.pull_image(ctx.images.big)
        out.add("pull_warm_s", time.perf_counter() - t0)

    def teardown(self, ctx: Context, target: Target, state: object) -> None:
        _remove_if_present(target, ctx.images.big)
