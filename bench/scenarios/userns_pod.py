"""A pod with its own user namespace (kubelet's `hostUsers: false`):
RunPodSandbox+CreateContainer+StartContainer, beside the same steps for a
plain pod in the same iteration. Both have a pod network, as a user
namespace needs one. The goal is judged against crispy's own plain pod
(≤ 1.3×): containerd 1.6 cannot run such pods, so it is reported as
failing setup."""

from __future__ import annotations

import time

from bench import workload
from bench.scenarios.base import Context, Metric, Samples, Scenario
from bench.target import Target
from cri.proto import api_pb2 as pb

# Where kubelet would put a pod's range: a multiple of 65536 above the
# node's own users. Pods of one iteration never overlap in time, so they
# may reuse it.
HOST_ID = 65536 * 48
LENGTH = 65536


def userns_pod_config(target: Target) -> pb.PodSandboxConfig:
    cfg = workload.pod_config(target.name, target.log_root, host_network=False)
    userns = cfg.linux.security_context.namespace_options.userns_options
    userns.mode = pb.POD
    userns.uids.add(container_id=0, host_id=HOST_ID, length=LENGTH)
    userns.gids.add(container_id=0, host_id=HOST_ID, length=LENGTH)
    return cfg


def pod_with_container(ctx: Context, target: Target, cfg: pb.PodSandboxConfig, metric: str,
                       out: Samples) -> None:
    c = target.client
    config = workload.sleeper_config(ctx.images.busybox)
    # kubelet copies the pod's namespace options into each container's.
    config.linux.security_context.namespace_options.CopyFrom(cfg.linux.security_context.namespace_options)
    t0 = time.perf_counter()
    pod_id = c.run_pod_sandbox(cfg)
    try:
        cid = c.create_container(pod_id, config, cfg)
        c.start_container(cid)
        out.add(metric, time.perf_counter() - t0)
    finally:
        workload.remove_pod_quietly(c, pod_id)


class UsernsPodStart(Scenario):
    name = "userns_pod_start"
    title = "Pod start (pod + container) with a user namespace, and a plain one"
    metrics = {
        "plain_pod_start_s": Metric("s", "lower", "RunPodSandbox+CreateContainer+StartContainer, plain pod"),
        "userns_pod_start_s": Metric("s", "lower",
                                     "RunPodSandbox+CreateContainer+StartContainer, hostUsers: false"),
    }

    def setup(self, ctx: Context, target: Target) -> None:
        if target.kind != "crispy":
            raise RuntimeError(f"{target.name} is not judged here: containerd 1.6 cannot run user-namespaced pods")
        workload.ensure_image(target, ctx.images.busybox, ctx.images.busybox_image)

    def iterate(self, ctx: Context, target: Target, state: None, out: Samples) -> None:
        plain = workload.pod_config(target.name, target.log_root, host_network=False)
        pod_with_container(ctx, target, plain, "plain_pod_start_s", out)
        pod_with_container(ctx, target, userns_pod_config(target), "userns_pod_start_s", out)
