"""Observability costs: how soon an events subscriber hears that a
container exited, and ListPodSandboxMetrics with N running pods (beside
containerd's ListContainerStats, as containerd 1.6 has no CRI metrics)."""

from __future__ import annotations

import json
import os
import queue
import select
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from bench import workload
from bench.fleet import Fleet
from bench.scenarios.base import Context, Metric, Samples, Scenario
from bench.scenarios.container_start import PodState, start_pod, stop_pod
from bench.scenarios.relist import Relist
from bench.target import Target
from cri.proto import api_pb2 as pb


@dataclass
class EventsState:
    pod: PodState
    stream: Any = None
    # (container id, perf_counter at arrival) of each STOPPED event
    stopped: queue.Queue[tuple[str, float]] = field(default_factory=queue.Queue)
    reader: threading.Thread | None = None


def _read(state: EventsState) -> None:
    try:
        for ev in state.stream:
            if ev.container_event_type == pb.CONTAINER_STOPPED_EVENT:
                state.stopped.put((ev.container_id, time.perf_counter()))
    except Exception:  # noqa: BLE001 - cancelled at teardown, or the runtime has no events
        pass


class EventsLatency(Scenario):
    name = "events_latency"
    title = "Container exit to its CONTAINER_STOPPED event"
    metrics = {"exit_to_stopped_event_s": Metric("s", "lower", "exit (pidfd) to STOPPED event at the subscriber")}

    def setup(self, ctx: Context, target: Target) -> EventsState:
        state = EventsState(start_pod(ctx, target))
        state.stream = target.client.runtime.GetContainerEvents(pb.GetEventsRequest())
        state.reader = threading.Thread(target=_read, args=(state,), daemon=True)
        state.reader.start()
        return state

    def iterate(self, ctx: Context, target: Target, state: EventsState, out: Samples) -> None:
        c = target.client
        cid = c.create_container(state.pod.pod_id, workload.sleeper_config(ctx.images.busybox), state.pod.config)
        c.start_container(cid)
        info = c.runtime.ContainerStatus(pb.ContainerStatusRequest(container_id=cid, verbose=True)).info
        pid = int(json.loads(info.get("info", "{}")).get("pid") or 0)
        if not pid:
            raise RuntimeError("ContainerStatus reported no pid")
        fd = os.pidfd_open(pid)
        try:
            os.kill(pid, signal.SIGKILL)
            select.select([fd], [], [], 30)
            exited = time.perf_counter()
        finally:
            os.close(fd)
        deadline = time.monotonic() + 30
        while True:
            try:
                got, arrived = state.stopped.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise RuntimeError("no CONTAINER_STOPPED event within 30 s of the exit") from None
            if got == cid:
                break
        out.add("exit_to_stopped_event_s", max(0.0, arrived - exited))
        c.remove_container(cid)

    def teardown(self, ctx: Context, target: Target, state: EventsState | None) -> None:
        if state is None:
            return
        if state.stream is not None:
            state.stream.cancel()
        if state.reader is not None:
            state.reader.join(5)
        stop_pod(target, state.pod)


class PodMetrics(Relist):
    name = "pod_metrics"
    title = "CRI metrics with N running pods"
    metrics = {"pod_metrics_s": Metric("s", "lower", "ListPodSandboxMetrics (containerd: ListContainerStats), N pods")}

    def iterate(self, ctx: Context, target: Target, state: Fleet, out: Samples) -> None:
        rt = target.client.runtime
        t0 = time.perf_counter()
        if target.kind == "crispy":
            pods = rt.ListPodSandboxMetrics(pb.ListPodSandboxMetricsRequest(), timeout=60).pod_metrics
            n = sum(len(p.container_metrics) for p in pods)
        else:
            n = len(rt.ListContainerStats(pb.ListContainerStatsRequest(), timeout=60).stats)
        out.add("pod_metrics_s", time.perf_counter() - t0)
        if n < len(state.container_ids):
            raise RuntimeError(f"metrics of {n} containers, expected {len(state.container_ids)}")
