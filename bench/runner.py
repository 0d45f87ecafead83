"""Runs one scenario on every runtime, interleaved: iteration i visits the
runtimes in an order rotated by i, so each sees the same machine noise and
none is always first. A runtime that fails is recorded with its error and
skipped for the rest of the scenario; the others go on."""

from __future__ import annotations

from typing import Callable

from bench.fleet import drop_fleet
from bench.report import RuntimeResult
from bench.scenarios.base import Context, Samples, Scenario
from bench.target import Target, describe_error


def rotated(items: list, i: int) -> list:
    if not items:
        return []
    k = i % len(items)
    return items[k:] + items[:k]


def run_scenario(scenario: Scenario, ctx: Context, targets: list[Target],
                 say: Callable[[str], None] = print) -> dict[str, RuntimeResult]:
    results = {t.name: RuntimeResult(error=t.start_error) for t in targets}
    live = [t for t in targets if t.start_error is None]
    if not scenario.uses_fleet:
        for t in live:
            drop_fleet(t)
    states: dict[str, object] = {}
    for t in live:
        try:
            states[t.name] = scenario.setup(ctx, t)
        except Exception as e:  # noqa: BLE001 - reported per runtime
            results[t.name].error = f"setup: {describe_error(e)}"
            gone = t.exited()
            if gone:
                results[t.name].error += f" ({gone})"
                t.start_error = gone
    for i in range(scenario.iterations(ctx)):
        for t in rotated(live, i):
            res = results[t.name]
            if res.error is not None:
                continue
            out = Samples()
            try:
                scenario.iterate(ctx, t, states.get(t.name), out)
            except Exception as e:  # noqa: BLE001
                res.error = f"iteration {i + 1}: {describe_error(e)}"
                gone = t.exited()
                if gone:
                    # Later scenarios must say why, not fail with "connection refused".
                    res.error += f" ({gone})"
                    t.start_error = gone
            for metric, values in out.values.items():
                res.samples.setdefault(metric, []).extend(values)
            res.extra.update(out.extra)
    for t in live:
        if t.exited():
            continue
        try:
            scenario.teardown(ctx, t, states.get(t.name))
        except Exception as e:  # noqa: BLE001
            results[t.name].extra.setdefault("teardown_errors", []).append(describe_error(e))
        if scenario.uses_fleet and results[t.name].error is None:
            continue  # the fleet stays for the next loaded-node scenario
        # Whatever a failed iteration left behind must not leak into the next scenario.
        t.fleet = None
        leftovers = t.remove_all_pods()
        if leftovers:
            results[t.name].extra.setdefault("cleanup_errors", []).extend(leftovers)
    for name, res in results.items():
        say(f"  {scenario.name:16s} {name:16s} " + ("ok" if res.error is None else f"FAILED {res.error}"))
    return results
