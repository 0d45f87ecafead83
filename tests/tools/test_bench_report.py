"""bench/report.py and bench/runner.py: summaries, ratios, failure
reporting, the markdown table and the chart; the runner's interleaving and
its handling of a runtime that fails (on fake targets and scenarios)."""

import json

import grpc
import pytest

from bench import report
from bench.report import RuntimeResult
from bench.runner import rotated, run_scenario
from bench.scenarios.base import Context, Metric, Samples, Scenario
from bench.target import describe_error

METRICS = {"run_pod_s": Metric("s", "lower", "RunPodSandbox"),
           "churn_c1_pods_s": Metric("pods/s", "higher", "churn")}


def _entry():
    return report.scenario_entry("Pod start", METRICS, {
        "crispy": RuntimeResult(samples={"run_pod_s": [0.010, 0.020, 0.030], "churn_c1_pods_s": [20.0]}),
        "containerd-runc": RuntimeResult(samples={"run_pod_s": [0.040, 0.050, 0.060], "churn_c1_pods_s": [10.0]}),
        "containerd-crun": RuntimeResult(error="setup: UNKNOWN: crun refused"),
    })


def test_entry_summarises_and_compares_crispy_with_each_containerd():
    e = _entry()
    m = e["metrics"]["run_pod_s"]
    assert m["runtimes"]["crispy"]["p50"] == pytest.approx(0.020)
    assert m["runtimes"]["containerd-runc"]["max"] == pytest.approx(0.060)
    assert m["runtimes"]["crispy"]["samples"] == [0.010, 0.020, 0.030]
    assert "containerd-crun" not in m["runtimes"]
    assert m["ratios"]["crispy/containerd-runc"]["p50"] == pytest.approx(0.4)
    assert set(m["ratios"]) == {"crispy/containerd-runc"}
    assert e["metrics"]["churn_c1_pods_s"]["ratios"]["crispy/containerd-runc"]["p50"] == pytest.approx(2.0)
    assert e["status"] == {"crispy": "ok", "containerd-runc": "ok",
                           "containerd-crun": "failed: setup: UNKNOWN: crun refused"}


def _results(scenarios):
    return {"date": "2026-11-28 14:40 UTC", "command": "make bench", "host": {"summary": "test host"},
            "runtimes": {"crispy": {"version": "crispy 0.1.0", "oci_runtime": "auto", "error": None},
                         "containerd-runc": {"version": "containerd 1.6", "oci_runtime": "runc", "error": None},
                         "containerd-crun": {"version": "", "oci_runtime": "crun", "error": "did not start"}},
            "host_changes": ["mounted hugetlb"], "scenarios": scenarios,
            "derived": {"cni_share": report.cni_share(scenarios)}}


def test_markdown_has_values_ratios_and_failures():
    md = report.markdown(_results({"pod_start": _entry()}))
    row = next(line for line in md.splitlines() if "RunPodSandbox" in line)
    assert "20.0 ms / 29.0 ms / 30.0 ms" in row
    assert "0.40×" in row
    assert "failed (UNKNOWN)" in row
    assert "2.00×" in md  # throughput ratio
    assert "- pod_start on containerd-crun: setup: UNKNOWN: crun refused" in md
    assert "mounted hugetlb" in md


def test_cni_share_is_net_minus_host_over_net():
    host = report.scenario_entry("h", {"run_pod_s": Metric("s")},
                                 {"a": RuntimeResult(samples={"run_pod_s": [0.1]}), "b": RuntimeResult(error="x")})
    net = report.scenario_entry("n", {"run_pod_net_s": Metric("s")},
                                {"a": RuntimeResult(samples={"run_pod_net_s": [0.4]}),
                                 "b": RuntimeResult(samples={"run_pod_net_s": [0.4]})})
    assert report.cni_share({"pod_start": host, "pod_net": net}) == {"a": pytest.approx(0.75)}
    assert report.cni_share({"pod_net": net}) == {}


def test_json_round_trips(tmp_path):
    results = _results({"pod_start": _entry()})
    report.write_json(results, tmp_path / "out" / "r.json")
    assert json.loads((tmp_path / "out" / "r.json").read_text()) == results


def test_chart_is_a_png_with_a_panel_per_latency_metric(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "r.png"
    assert report.chart(_results({"pod_start": _entry()}), path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_chart_without_latency_metrics_writes_nothing(tmp_path):
    pytest.importorskip("matplotlib")
    entry = report.scenario_entry("churn", {"churn_c1_pods_s": METRICS["churn_c1_pods_s"]},
                                  {"crispy": RuntimeResult(samples={"churn_c1_pods_s": [1.0]})})
    assert not report.chart(_results({"churn": entry}), tmp_path / "r.png")
    assert not (tmp_path / "r.png").exists()


# ---- runner --------------------------------------------------------------------

class FakeTarget:
    def __init__(self, name, start_error=None):
        self.name, self.start_error = name, start_error
        self.cleaned = 0
        self.fleet, self.client = None, None

    def exited(self):
        return None

    def remove_all_pods(self):
        self.cleaned += 1
        return []


class Recording(Scenario):
    name = "fake"
    metrics = {"t_s": Metric("s")}

    def __init__(self, fail_on=None, fail_setup=None):
        self.calls, self.fail_on, self.fail_setup, self.torn_down = [], fail_on, fail_setup, []

    def setup(self, ctx, target):
        if target.name == self.fail_setup:
            raise RuntimeError("no image")
        return f"state-{target.name}"

    def iterate(self, ctx, target, state, out: Samples):
        assert state == f"state-{target.name}"
        self.calls.append(target.name)
        if (target.name, len([c for c in self.calls if c == target.name])) == self.fail_on:
            raise _Unimplemented()
        out.add("t_s", 0.5)

    def teardown(self, ctx, target, state):
        self.torn_down.append(target.name)


class _Unimplemented(grpc.RpcError):
    def code(self):
        return grpc.StatusCode.UNIMPLEMENTED

    def details(self):
        return "RunPodSandbox is not implemented yet"


CTX = Context(images=None, iterations=3, pods=1)


def test_rotation_alternates_who_goes_first():
    assert rotated(["a", "b", "c"], 0) == ["a", "b", "c"]
    assert rotated(["a", "b", "c"], 1) == ["b", "c", "a"]
    assert rotated(["a", "b", "c"], 5) == ["c", "a", "b"]
    assert rotated([], 3) == []


def test_runner_interleaves_runtimes_and_collects_samples():
    scen = Recording()
    targets = [FakeTarget("crispy"), FakeTarget("containerd-runc")]
    res = run_scenario(scen, CTX, targets, say=lambda m: None)
    assert scen.calls == ["crispy", "containerd-runc", "containerd-runc", "crispy", "crispy", "containerd-runc"]
    assert res["crispy"].samples == {"t_s": [0.5, 0.5, 0.5]} and res["crispy"].error is None
    assert scen.torn_down == ["crispy", "containerd-runc"]
    assert [t.cleaned for t in targets] == [1, 1]


def test_a_failing_runtime_is_reported_and_the_others_go_on():
    said = []
    scen = Recording(fail_on=("crispy", 2), fail_setup="containerd-crun")
    targets = [FakeTarget("crispy"), FakeTarget("containerd-runc"), FakeTarget("containerd-crun"),
               FakeTarget("gone", start_error="did not start: boom")]
    res = run_scenario(scen, CTX, targets, say=said.append)
    assert res["crispy"].error == "iteration 2: UNIMPLEMENTED: RunPodSandbox is not implemented yet"
    assert res["crispy"].samples == {"t_s": [0.5]}
    assert scen.calls.count("crispy") == 2
    assert res["containerd-runc"].error is None and len(res["containerd-runc"].samples["t_s"]) == 3
    assert res["containerd-crun"].error == "setup: RuntimeError: no image"
    assert res["gone"].error == "did not start: boom"
    assert "gone" not in scen.calls and "gone" not in scen.torn_down
    assert any("crispy" in line and "FAILED iteration 2: UNIMPLEMENTED" in line for line in said)


def test_describe_error_is_one_line():
    assert describe_error(_Unimplemented()) == "UNIMPLEMENTED: RunPodSandbox is not implemented yet"
    assert describe_error(ValueError("bad\nmore")) == "ValueError: bad"


def test_markdown_lists_helper_processes_per_pod():
    entry = report.scenario_entry("Memory", {}, {
        "crispy": RuntimeResult(extra={"pods": 4, "processes_by_name_pss_kib": {
            "conmon": {"count": 4, "kib": 2000}, "sleep": {"count": 4, "kib": 400}}})})
    md = report.markdown(_results({"memory": entry}))
    assert "- crispy (4 pods): conmon ×1 500 KiB, sleep ×1 100 KiB" in md


def test_goals_compare_against_the_named_containerd():
    results = _results({"pod_start": _entry()})
    lines = report.goals(results)
    # pod start is judged against containerd-crun, which failed in this fixture
    assert lines == ["- RunPodSandbox at most half of containerd's, both on crun: not measured "
                     "(crispy or containerd-crun has no result)"]
    entry = report.scenario_entry("Pod start", METRICS, {
        "crispy": RuntimeResult(samples={"run_pod_s": [0.010]}),
        "containerd-crun": RuntimeResult(samples={"run_pod_s": [0.040]})})
    assert report.goals(_results({"pod_start": entry})) == [
        "- RunPodSandbox at most half of containerd's, both on crun: crispy/containerd-crun = 0.25× — met"]
    md = report.markdown(_results({"pod_start": entry}))
    assert "Goals set by the issues (crispy's OCI runtime in this run: auto)" in md


def test_fleet_scenarios_keep_the_running_pods_and_others_drop_them():
    class FleetScenario(Recording):
        uses_fleet = True

    t = FakeTarget("crispy")
    t.fleet = object()
    run_scenario(FleetScenario(), CTX, [t], say=lambda m: None)
    assert t.fleet is not None and t.cleaned == 0

    failing = FleetScenario(fail_on=("crispy", 1))
    run_scenario(failing, CTX, [t], say=lambda m: None)
    assert t.fleet is None and t.cleaned == 1  # a failed loaded-node scenario cleans up

    t.fleet = object()
    run_scenario(Recording(), CTX, [t], say=lambda m: None)
    assert t.fleet is None and t.cleaned == 2


def test_cni_share_measured_uses_the_logged_plugin_time():
    net = report.scenario_entry("n", {"run_pod_net_s": Metric("s"), "cni_add_s": Metric("s")}, {
        "crispy": RuntimeResult(samples={"run_pod_net_s": [0.1, 0.1], "cni_add_s": [0.04, 0.04]}),
        "containerd-runc": RuntimeResult(samples={"run_pod_net_s": [0.2]})})
    assert report.cni_share_measured({"pod_net": net}) == {"crispy": pytest.approx(0.4)}
    row = next(line for line in report.markdown(_results({"pod_net": net})).splitlines() if "| pod_net | cni_add_s" in line)
    assert "| n/a |" in row  # containerd ran fine but does not log plugin timings


def test_cni_time_is_read_from_crispys_json_log(tmp_path):
    from pathlib import Path

    from bench.target import Target

    class Proc:
        log_path = tmp_path / "crispy.log"

    Proc.log_path.write_text('{"msg": "CNI plugin call", "command": "ADD", "ms": 5.0}\n')
    t = Target("crispy", "crispy", "auto", Path(tmp_path))
    t.process = Proc()
    offset = t.log_offset()
    with open(Proc.log_path, "a") as f:
        f.write('{"msg": "RunPodSandbox", "ms": 50}\n'
                '{"msg": "CNI plugin call", "command": "ADD", "plugin": "bridge", "ms": 12.5}\n'
                'not json CNI plugin call\n'
                '{"msg": "CNI plugin call", "command": "DEL", "ms": 7}\n'
                '{"msg": "CNI plugin call", "command": "ADD", "plugin": "portmap", "ms": 2.5}\n')
    assert t.cni_ms_since(offset) == 15.0
    assert t.cni_ms_since(0) == 20.0
    t.kind = "containerd"
    assert t.cni_ms_since(0) is None


def test_self_goals_judge_a_feature_against_crispys_own_plain_run():
    metrics = {"plain_pod_start_s": Metric("s"), "userns_pod_start_s": Metric("s")}
    entry = report.scenario_entry("Userns", metrics, {
        "crispy": RuntimeResult(samples={"plain_pod_start_s": [0.040], "userns_pod_start_s": [0.060]}),
        "containerd-crun": RuntimeResult(error="setup: RuntimeError: cannot")})
    assert report.self_goals(_results({"userns_pod_start": entry})) == [
        "- pod start with a user namespace at most 1.3× a plain pod's: "
        "crispy userns_pod_start_s/plain_pod_start_s = 1.50× — not met"]
    ok = report.scenario_entry("Userns", metrics, {
        "crispy": RuntimeResult(samples={"plain_pod_start_s": [0.040], "userns_pod_start_s": [0.050]})})
    assert report.self_goals(_results({"userns_pod_start": ok}))[0].endswith("= 1.25× — met")
    md = report.markdown(_results({"userns_pod_start": ok}))
    assert "pod start with a user namespace at most 1.3× a plain pod's" in md
