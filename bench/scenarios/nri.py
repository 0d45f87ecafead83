"""What one no-op NRI plugin, subscribed to every event, costs crispy:
CreateContainer+StartContainer and RunPodSandbox with the plugin connected
against the same without it, in the same iteration. The plugin is
tests/nri_plugin.py run as a process of its own on the target's NRI socket.
containerd is not compared here (its NRI differs by version and config)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from bench import workload
from bench.scenarios.base import Context, Metric, Samples, Scenario
from bench.scenarios.container_start import PodState, start_pod, stop_pod
from bench.target import Target

REPO = Path(__file__).resolve().parents[2]
PLUGIN_NAME = "bench-noop"


def _plugins(target: Target) -> list[str]:
    info = target.client.status(verbose=True).info.get("nri", "{}")
    return [p["name"] for p in json.loads(info).get("plugins", [])]


class _Plugin:
    def __init__(self, target: Target) -> None:
        self.target = target
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.nri_plugin", "--socket", str(target.base / "nri" / "nri.sock"),
             "--name", PLUGIN_NAME, "--idx", "50"],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while PLUGIN_NAME not in _plugins(target):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the no-op NRI plugin did not connect to crispy")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        deadline = time.monotonic() + 5
        while PLUGIN_NAME in _plugins(self.target) and time.monotonic() < deadline:
            time.sleep(0.02)


def _create_start(ctx: Context, target: Target, state: PodState) -> float:
    c = target.client
    t0 = time.perf_counter()
    cid = c.create_container(state.pod_id, workload.sleeper_config(ctx.images.busybox), state.config)
    c.start_container(cid)
    took = time.perf_counter() - t0
    c.stop_container(cid, timeout=0)
    c.remove_container(cid)
    return took


def _run_pod(target: Target) -> float:
    cfg = workload.pod_config(target.name, target.log_root, host_network=True)
    t0 = time.perf_counter()
    pod_id = target.client.run_pod_sandbox(cfg)
    took = time.perf_counter() - t0
    workload.remove_pod_quietly(target.client, pod_id)
    return took


class NriOverhead(Scenario):
    name = "nri_overhead"
    title = "One no-op NRI plugin on every event vs none (crispy)"
    metrics = {
        "create_start_s": Metric("s", "lower", "CreateContainer+StartContainer, no plugin"),
        "create_start_nri_s": Metric("s", "lower", "CreateContainer+StartContainer, one no-op plugin"),
        "run_pod_s": Metric("s", "lower", "RunPodSandbox, no plugin"),
        "run_pod_nri_s": Metric("s", "lower", "RunPodSandbox, one no-op plugin"),
    }

    def setup(self, ctx: Context, target: Target) -> PodState:
        if target.kind != "crispy":
            raise RuntimeError(f"{target.name}: this scenario compares crispy with and without a plugin")
        return start_pod(ctx, target)

    def iterate(self, ctx: Context, target: Target, state: PodState, out: Samples) -> None:
        out.add("create_start_s", _create_start(ctx, target, state))
        out.add("run_pod_s", _run_pod(target))
        plugin = _Plugin(target)
        try:
            # A fresh plugin process answers its first events slowly (its
            # code paths are cold); that is start-up, not the per-event cost.
            _create_start(ctx, target, state)
            _run_pod(target)
            out.add("create_start_nri_s", _create_start(ctx, target, state))
            out.add("run_pod_nri_s", _run_pod(target))
        finally:
            plugin.stop()

    def teardown(self, ctx: Context, target: Target, state: PodState | None) -> None:
        stop_pod(target, state)
