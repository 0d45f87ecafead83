"""The whole bench on the real parts, kept small: containerd with runc, one
scenario, one iteration. Checks the results files and that nothing the run
started is left: no helper process, mount, bridge or temp root."""

import json
import os
import shutil
import signal
from pathlib import Path

import pytest

from bench import measure, network, run
from bench.target import mounts_under


def _static_gcc() -> bool:
    return shutil.which("gcc") is not None and any(Path(d, "libc.a").exists() for d in (
        "/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib"))


pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not Path("/usr/bin/containerd").exists(), reason="Debian's containerd is not installed"),
              # make bench installs them; make test does not need them otherwise
              pytest.mark.skipif(not _static_gcc(), reason="gcc and libc6-dev are needed to build the pause image")]


def test_one_scenario_on_containerd_writes_results_and_leaves_nothing(tmp_path, capsys):
    handlers_before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    rc = run.main(["--runtimes", "containerd-runc", "--scenarios", "pod_start,memory_idle",
                   "--iterations", "2", "--out-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0, out
    # Later tests' children inherit our dispositions: the run must give them back.
    assert {sig: signal.getsignal(sig) for sig in handlers_before} == handlers_before

    [json_path] = tmp_path.glob("*.json")
    results = json.loads(json_path.read_text())
    scen = results["scenarios"]["pod_start"]
    assert scen["status"] == {"containerd-runc": "ok"}
    run_pod = scen["metrics"]["run_pod_s"]["runtimes"]["containerd-runc"]
    assert run_pod["n"] == 2 and 0 < run_pod["p50"] <= run_pod["max"]
    assert results["scenarios"]["memory_idle"]["metrics"]["daemon_rss_idle_kib"]["runtimes"]["containerd-runc"]["p50"] > 1000
    assert results["runtimes"]["containerd-runc"]["version"].startswith("containerd")
    assert results["cleanup"] == []
    shared = scen["metrics"]["run_pod_sharedpid_s"]["runtimes"]["containerd-runc"]
    assert shared["n"] == 2 and 0 < shared["p50"]
    assert json_path.with_suffix(".md").read_text().count("| pod_start |") == 4
    if json_path.with_suffix(".png").exists():
        assert json_path.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"

    root = out.split("bench: temp root ", 1)[1].split()[0]
    assert not Path(root).exists(), "the run's temp root was not removed"
    assert measure.helper_pids(root + "/", {os.getpid()}) == set()
    assert mounts_under(Path(root)) == []
    assert not network.bridge_exists(network.BenchNetwork().bridge)
