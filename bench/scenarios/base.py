"""What a scenario is: per runtime, a setup, a number of timed iterations
that each return samples per metric, and a teardown. The runner interleaves
the runtimes iteration by iteration."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bench.images import BenchImages
from bench.target import Target


@dataclass(frozen=True)
class Metric:
    unit: str                   # "s", "MB/s", "pods/s", "KiB"
    better: str = "lower"       # "lower" or "higher"
    title: str = ""


@dataclass
class Context:
    images: BenchImages
    iterations: int
    pods: int                   # running pods for the memory scenario
    churn_levels: tuple[int, ...] = (1, 4, 8)
    churn_pods_per_worker: int = 2


@dataclass
class Samples:
    """What one iteration measured: metric -> values, plus free-form facts."""
    values: dict[str, list[float]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def add(self, metric: str, value: float) -> None:
        self.values.setdefault(metric, []).append(value)


class Scenario:
    name = ""
    title = ""
    metrics: dict[str, Metric] = {}
    # True: measures a loaded node and keeps the target's fleet of running
    # pods for the next such scenario; False: wants a node without them.
    uses_fleet = False

    def iterations(self, ctx: Context) -> int:
        return ctx.iterations

    def setup(self, ctx: Context, target: Target) -> Any:
        return None

    def iterate(self, ctx: Context, target: Target, state: Any, out: Samples) -> None:
        raise NotImplementedError

    def teardown(self, ctx: Context, target: Target, state: Any) -> None:
        """Also runs after a failure: must tolerate a half-made state."""
