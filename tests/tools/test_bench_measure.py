"""bench/measure.py: percentiles, ratios and the /proc readers (on a fake
/proc tree: the real one is exercised by the bench's integration test)."""

from pathlib import Path

import pytest

from bench import measure


def test_percentile_interpolates_between_ranks():
    samples = [4.0, 1.0, 3.0, 2.0]
    assert measure.percentile(samples, 0) == 1.0
    assert measure.percentile(samples, 100) == 4.0
    assert measure.percentile(samples, 50) == pytest.approx(2.5)
    assert measure.percentile(samples, 95) == pytest.approx(3.85)
    assert measure.percentile([7.0], 95) == 7.0


def test_percentile_rejects_nonsense():
    with pytest.raises(ValueError):
        measure.percentile([], 50)
    with pytest.raises(ValueError):
        measure.percentile([1.0], 101)


def test_summary_of_samples():
    s = measure.Summary.of([0.1, 0.2, 0.3, 0.4, 1.0])
    assert (s.n, s.p50, s.max) == (5, 0.3, 1.0)
    assert s.p95 == pytest.approx(0.88)
    assert s.mean == pytest.approx(0.4)


def test_ratio_handles_missing_sides():
    assert measure.ratio(1.0, 4.0) == 0.25
    assert measure.ratio(None, 4.0) is None
    assert measure.ratio(1.0, None) is None
    assert measure.ratio(1.0, 0.0) is None


def _proc(root: Path, pid: int, ppid: int, comm: str, cmdline: str, rss: int, pss: int | None) -> None:
    d = root / str(pid)
    d.mkdir()
    (d / "comm").write_text(comm + "\n")
    # A comm with a space and a parenthesis, as the kernel allows.
    (d / "stat").write_text(f"{pid} ({comm} x) S {ppid} 1 1 0\n")
    (d / "cmdline").write_bytes(cmdline.replace(" ", "\0").encode() + b"\0")
    (d / "status").write_text(f"Name:\t{comm}\nVmRSS:\t  {rss} kB\n")
    if pss is not None:
        (d / "smaps_rollup").write_text(f"00400000-ffffffff ---p 00000000 00:00 0 [rollup]\nRss: {rss} kB\nPss: {pss} kB\n")


def test_helpers_are_found_by_command_line_and_descent(tmp_path):
    _proc(tmp_path, 1, 0, "init", "/sbin/init", 10, 10)
    _proc(tmp_path, 100, 1, "containerd", "containerd --config /b/ctrd/config.toml", 40000, 39000)
    _proc(tmp_path, 200, 1, "containerd-shim", "shim -address /b/ctrd/containerd.sock", 12000, 4000)
    _proc(tmp_path, 201, 200, "pause", "/pause", 400, 150)
    _proc(tmp_path, 202, 200, "sleep", "/bin/sleep 3600", 300, 100)
    _proc(tmp_path, 300, 1, "containerd-shim", "shim -address /b/other/containerd.sock", 12000, 4000)
    _proc(tmp_path, 301, 300, "pause", "/pause", 400, 150)
    (tmp_path / "self").mkdir()  # not a pid: ignored

    assert measure.helper_pids("/b/ctrd/", {100}, tmp_path) == {200, 201, 202}

    snap = measure.snapshot(100, "/b/ctrd/", tmp_path)
    assert snap.daemon == measure.ProcMem(100, "containerd", 40000, 39000)
    assert snap.helper_total("pss") == 4250
    assert snap.helper_total("rss", frozenset({"sleep"})) == 12400
    assert snap.by_comm()["pause"] == {"count": 1, "kib": 150}


def test_proc_mem_without_smaps_rollup_falls_back_to_rss(tmp_path):
    _proc(tmp_path, 5, 1, "conmon", "conmon -b /x", 900, None)
    assert measure.proc_mem(5, tmp_path).pss_kib == 900
    assert measure.proc_mem(6, tmp_path) is None


def test_real_proc_reads_this_process():
    import os
    me = measure.proc_mem(os.getpid())
    assert me is not None and me.rss_kib > 1000 and 0 < me.pss_kib <= me.rss_kib
