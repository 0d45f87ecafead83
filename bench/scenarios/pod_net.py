"""RunPodSandbox with a pod network through the bench's CNI conflist
(bridge + host-local + portmap). The share spent in CNI is measured for
crispy from its debug log (each plugin call's duration), and estimated for
every runtime as this scenario's p50 minus pod_start's (same pod, host
network)."""

from __future__ import annotations

from bench.scenarios.base import Context, Metric, Samples, Scenario
from bench.scenarios.pod_start import pod_cycle
from bench.target import Target


class PodStartNetworked(Scenario):
    name = "pod_net"
    title = "Pod sandbox start and removal with CNI networking"
    metrics = {
        "run_pod_net_s": Metric("s", "lower", "RunPodSandbox, pod network"),
        "stop_remove_pod_net_s": Metric("s", "lower", "StopPodSandbox+RemovePodSandbox, pod network"),
        # Only crispy logs its plugin calls; for containerd the report falls
        # back to the estimate below.
        "cni_add_s": Metric("s", "lower", "CNI ADD inside RunPodSandbox (from crispy's log)"),
    }

    def iterate(self, ctx: Context, target: Target, state: object, out: Samples) -> None:
        pod_cycle(target, out, host_network=False, suffix="_net")
