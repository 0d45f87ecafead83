"""CreateContainer+StartContainer in a running pod, then StopContainer+
RemoveContainer."""

from __future__ import annotations

import time
from dataclasses import dataclass

from bench import workload
from bench.scenarios.base import Context, Metric, Samples, Scenario
from bench.target import Target
from cri.proto import api_pb2 as pb


@dataclass
class PodState:
    pod_id: str
    config: pb.PodSandboxConfig


def start_pod(ctx: Context, target: Target) -> PodState:
    workload.ensure_image(target, ctx.images.busybox, ctx.images.busybox_image)
    cfg = workload.pod_config(target.name, target.log_root, host_network=True)
    return PodState(target.client.run_pod_sandbox(cfg), cfg)


def stop_pod(target: Target, state: PodState | None) -> None:
    if state is not None:
        workload.remove_pod_quietly(target.client, state.pod_id)


class ContainerStart(Scenario):
    name = "container_start"
    title = "Container create+start and stop+remove"
    metrics = {
        "create_start_s": Metric("s", "lower", "CreateContainer+StartContainer"),
        "stop_remove_container_s": Metric("s", "lower", "StopContainer+RemoveContainer"),
    }

    def setup(self, ctx: Context, target: Target) -> PodState:
        return start_pod(ctx, target)

    def iterate(self, ctx: Context, target: Target, state: PodState, out: Samples) -> None:
        c = target.client
        t0 = time.perf_counter()
        cid = c.create_container(state.pod_id, workload.sleeper_config(ctx.images.busybox), state.config)
        c.start_container(cid)
        out.add("create_start_s", time.perf_counter() - t0)
        t0 = time.perf_counter()
        c.stop_container(cid, timeout=0)
        c.remove_container(cid)
        out.add("stop_remove_container_s", time.perf_counter() - t0)

    def teardown(self, ctx: Context, target: Target, state: PodState | None) -> None:
        stop_pod(target, state)
