"""Memory: daemon RSS and PSS idle (read right after the daemon started,
before any scenario) and with N running pods of one `sleep` container each, and memory
per pod: daemon growth plus every helper process the runtime keeps per pod
(shims, conmon, pause/infra), from /proc. PSS is used for sums so shared
libraries are not counted once per process; RSS is reported as well."""

from __future__ import annotations

import time
from dataclasses import dataclass

from bench import measure, workload
from bench.fleet import drop_fleet, ensure_fleet
from bench.scenarios.base import Context, Metric, Samples, Scenario
from bench.target import Target

WORKLOAD_COMMS = frozenset({"sleep"})


@dataclass
class MemoryState:
    # The daemon with no pods, just before this scenario: per-pod growth is
    # measured from here, not from start-up, so earlier scenarios' caches
    # (pulled images, warmed code paths) are not charged to the pods.
    baseline: measure.MemorySnapshot


class IdleMemory(Scenario):
    name = "memory_idle"
    title = "Daemon memory, idle"
    metrics = {
        "daemon_rss_idle_kib": Metric("KiB", "lower", "daemon RSS, idle"),
        "daemon_pss_idle_kib": Metric("KiB", "lower", "daemon PSS, idle"),
    }

    def iterations(self, ctx: Context) -> int:
        return 1

    def iterate(self, ctx: Context, target: Target, state: object, out: Samples) -> None:
        idle = target.idle
        if idle is None or idle.daemon is None:
            raise RuntimeError("the daemon's /proc entry could not be read at start-up")
        out.add("daemon_rss_idle_kib", idle.daemon.rss_kib)
        out.add("daemon_pss_idle_kib", idle.daemon.pss_kib)


class Memory(Scenario):
    uses_fleet = True
    name = "memory"
    title = "Daemon and per-pod memory"
    metrics = {
        "daemon_rss_loaded_kib": Metric("KiB", "lower", "daemon RSS with N pods"),
        "daemon_pss_loaded_kib": Metric("KiB", "lower", "daemon PSS with N pods"),
        "helper_pss_per_pod_kib": Metric("KiB", "lower", "helper PSS per pod (shim/conmon/pause)"),
        "memory_per_pod_kib": Metric("KiB", "lower", "memory per pod (daemon growth + helpers, PSS)"),
        "helper_rss_per_pod_kib": Metric("KiB", "lower", "helper RSS per pod"),
    }

    def iterations(self, ctx: Context) -> int:
        return 1

    def setup(self, ctx: Context, target: Target) -> MemoryState:
        workload.ensure_image(target, ctx.images.busybox, ctx.images.busybox_image)
        drop_fleet(target)  # the baseline is a node without pods
        time.sleep(1.0)
        return MemoryState(measure.snapshot(target.process.pid, target.marker))

    def iterate(self, ctx: Context, target: Target, state: MemoryState, out: Samples) -> None:
        ensure_fleet(target, ctx.images.busybox, ctx.pods)
        time.sleep(2.0)  # let lazily started helpers and allocator caches settle
        snap = measure.snapshot(target.process.pid, target.marker)
        idle, base = target.idle, state.baseline
        if snap.daemon is None or idle is None or idle.daemon is None or base.daemon is None:
            raise RuntimeError("the daemon's /proc entry could not be read")
        n = ctx.pods
        helpers_pss = snap.helper_total("pss", WORKLOAD_COMMS)
        helpers_rss = snap.helper_total("rss", WORKLOAD_COMMS)
        growth = max(0, snap.daemon.pss_kib - base.daemon.pss_kib)
        out.add("daemon_rss_loaded_kib", snap.daemon.rss_kib)
        out.add("daemon_pss_loaded_kib", snap.daemon.pss_kib)
        out.add("helper_pss_per_pod_kib", helpers_pss / n)
        out.add("helper_rss_per_pod_kib", helpers_rss / n)
        out.add("memory_per_pod_kib", (growth + helpers_pss) / n)
        out.extra = {
            "pods": n,
            "daemon_pss_idle_kib": idle.daemon.pss_kib,
            "daemon_pss_before_pods_kib": base.daemon.pss_kib,
            "daemon_pss_loaded_kib": snap.daemon.pss_kib,
            "processes_by_name_pss_kib": snap.by_comm("pss"),
        }
