"""Pod churn: pods started and removed per second (RunPodSandbox, then
StopPodSandbox+RemovePodSandbox, host network) by 1, 4 and 8 concurrent
clients, as kubelet's pod workers do on a busy node."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from bench import workload
from bench.scenarios.base import Context, Metric, Samples, Scenario
from bench.target import Target


def _worker(target: Target, pods: int) -> None:
    c = target.client
    for _ in range(pods):
        pod_id = c.run_pod_sandbox(workload.pod_config(target.name, target.log_root, host_network=True))
        try:
            c.stop_pod_sandbox(pod_id)
            c.remove_pod_sandbox(pod_id)
        except Exception:
            workload.remove_pod_quietly(c, pod_id)
            raise


def churn_rate(target: Target, concurrency: int, pods_per_worker: int) -> float:
    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        for f in [pool.submit(_worker, target, pods_per_worker) for _ in range(concurrency)]:
            f.result()
    return concurrency * pods_per_worker / (time.perf_counter() - t0)


class Churn(Scenario):
    name = "churn"
    title = "Pod churn (pods/s, run+stop+remove)"
    metrics = {f"churn_c{n}_pods_s": Metric("pods/s", "higher", f"churn, concurrency {n}") for n in (1, 4, 8)}

    def iterate(self, ctx: Context, target: Target, state: object, out: Samples) -> None:
        for n in ctx.churn_levels:
            out.add(f"churn_c{n}_pods_s", churn_rate(target, n, ctx.churn_pods_per_worker))
