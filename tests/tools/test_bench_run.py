"""bench/run.py's command line."""

import pytest

from bench import run
from bench.scenarios import REGISTRY


def test_defaults_run_every_scenario_on_crispy_and_both_containerds():
    args = run.parse_args([])
    assert args.scenario_list == list(REGISTRY)
    assert args.runtime_list == ["crispy", "containerd-runc", "containerd-crun"]
    assert args.iterations >= 1 and args.pods == 100


def test_lists_are_parsed():
    args = run.parse_args(["--scenarios", "pod_start,exec_sync", "--runtimes", "crispy,containerd-runc",
                           "--iterations", "3", "--pods", "7"])
    assert args.scenario_list == ["pod_start", "exec_sync"]
    assert args.runtime_list == ["crispy", "containerd-runc"]
    assert (args.iterations, args.pods) == (3, 7)


@pytest.mark.parametrize("argv", [["--scenarios", "nope"], ["--runtimes", "docker"], ["--iterations", "0"]])
def test_bad_arguments_are_refused(argv, capsys):
    with pytest.raises(SystemExit) as e:
        run.parse_args(argv)
    assert e.value.code == 2
    assert "bench.run" in capsys.readouterr().err


def test_every_registered_scenario_declares_metrics():
    for name, scenario in REGISTRY.items():
        assert scenario.name == name and scenario.title and scenario.metrics
        for metric in scenario.metrics.values():
            assert metric.unit in ("s", "MB/s", "pods/s", "KiB") and metric.better in ("lower", "higher")
