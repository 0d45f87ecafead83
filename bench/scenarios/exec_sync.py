"""ExecSync of `/bin/true` in a running container."""

from __future__ import annotations

import time
from dataclasses import dataclass

from bench import workload
from bench.scenarios.base import Context, Metric, Samples, Scenario
from bench.scenarios.container_start import PodState, start_pod, stop_pod
from bench.target import Target


@dataclass
class ExecState:
    pod: PodState
    container_id: str = ""


class ExecSync(Scenario):
    name = "exec_sync"
    title = "ExecSync in a running container"
    metrics = {"exec_sync_s": Metric("s", "lower", "ExecSync /bin/true")}

    def setup(self, ctx: Context, target: Target) -> ExecState:
        pod = start_pod(ctx, target)
        try:
            cid = target.client.create_container(pod.pod_id, workload.sleeper_config(ctx.images.busybox), pod.config)
            target.client.start_container(cid)
        except Exception:
            stop_pod(target, pod)
            raise
        return ExecState(pod, cid)

    def iterate(self, ctx: Context, target: Target, state: ExecState, out: Samples) -> None:
        t0 = time.perf_counter()
        resp = target.client.exec_sync(state.container_id, ["/bin/true"], timeout=30)
        out.add("exec_sync_s", time.perf_counter() - t0)
        if resp.exit_code != 0:
            raise RuntimeError(f"ExecSync /bin/true exited {resp.exit_code}: {resp.stderr[:200]!r}")

    def teardown(self, ctx: Context, target: Target, state: ExecState | None) -> None:
        if state is not None:
            stop_pod(target, state.pod)
