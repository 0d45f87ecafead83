"""RunPodSandbox, then StopPodSandbox+RemovePodSandbox, for a host-network
pod (no CNI in the path: the sandbox machinery alone), as kubelet sends it
for a plain pod and for one with shareProcessNamespace."""

from __future__ import annotations

import time

from bench import workload
from bench.scenarios.base import Context, Metric, Samples, Scenario
from bench.target import Target


def pod_cycle(target: Target, out: Samples, host_network: bool, suffix: str = "",
              share_process_namespace: bool = False) -> None:
    cfg = workload.pod_config(target.name, target.log_root, host_network, share_process_namespace)
    offset = target.log_offset()
    t0 = time.perf_counter()
    pod_id = target.client.run_pod_sandbox(cfg)
    out.add(f"run_pod{suffix}_s", time.perf_counter() - t0)
    if not host_network:
        cni_ms = target.cni_ms_since(offset)
        if cni_ms:
            out.add("cni_add_s", cni_ms / 1000)
    try:
        t0 = time.perf_counter()
        target.client.stop_pod_sandbox(pod_id)
        target.client.remove_pod_sandbox(pod_id)
        out.add(f"stop_remove_pod{suffix}_s", time.perf_counter() - t0)
    except Exception:
        workload.remove_pod_quietly(target.client, pod_id)
        raise


class PodStart(Scenario):
    name = "pod_start"
    title = "Pod sandbox start and removal (host network)"
    metrics = {
        "run_pod_s": Metric("s", "lower", "RunPodSandbox"),
        "stop_remove_pod_s": Metric("s", "lower", "StopPodSandbox+RemovePodSandbox"),
        # shareProcessNamespace: one PID namespace for the pod, which needs
        # a live init (crispy's catatonit; containerd's pause does it anyway).
        "run_pod_sharedpid_s": Metric("s", "lower", "RunPodSandbox, shared PID namespace"),
        "stop_remove_pod_sharedpid_s": Metric("s", "lower", "StopPodSandbox+RemovePodSandbox, shared PID namespace"),
    }

    def iterate(self, ctx: Context, target: Target, state: object, out: Samples) -> None:
        pod_cycle(target, out, host_network=True)
        pod_cycle(target, out, host_network=True, suffix="_sharedpid", share_process_namespace=True)
