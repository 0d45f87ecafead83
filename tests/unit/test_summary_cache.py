"""The List RPCs' summary cache: rebuilt when a record's version changes,
entries of removed records dropped."""

from __future__ import annotations

from dataclasses import dataclass

from cri.servicers.summary_cache import SummaryCache


@dataclass
class Rec:
    id: str
    state: str


def make() -> tuple[SummaryCache[Rec, tuple[str, str]], list[str]]:
    built: list[str] = []

    def build(r: Rec) -> tuple[str, str]:
        built.append(r.id)
        return (r.id, r.state)
    return SummaryCache(build, lambda r: r.state, lambda r: r.id), built


def test_summary_reused_until_version_changes() -> None:
    cache, built = make()
    recs = [Rec("a", "running"), Rec("b", "running")]
    assert cache.summaries(recs, 2) == [("a", "running"), ("b", "running")]
    assert cache.summaries(recs, 2) == [("a", "running"), ("b", "running")]
    assert built == ["a", "b"]
    recs[1].state = "exited"
    assert cache.summaries(recs, 2) == [("a", "running"), ("b", "exited")]
    assert built == ["a", "b", "b"]


def test_entries_of_removed_records_are_dropped() -> None:
    cache, built = make()
    for i in range(200):
        cache.summaries([Rec(f"r{i}", "running")], 1)
    assert len(cache._entries) <= 2 * 1 + 64 + 1
    # A filtered list (fewer records than exist) must not drop live ones
    # wrongly: whatever is dropped is simply rebuilt on the next call.
    live = [Rec("x", "running"), Rec("y", "running")]
    assert cache.summaries(live, 2) == [("x", "running"), ("y", "running")]
