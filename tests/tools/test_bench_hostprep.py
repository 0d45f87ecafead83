"""bench/hostprep.py clean-up of cgroup trees, on plain directory fixtures
(a directory holding a file stands for a populated cgroup: rmdir fails)."""

from bench import hostprep


def test_remove_cgroup_tree_removes_empty_and_reports_populated(tmp_path):
    for ctrl in ("memory", "pids"):
        (tmp_path / ctrl / "crispybench" / "crispy" / "podA").mkdir(parents=True)
    (tmp_path / "memory" / "crispybench" / "crispy" / "podB").mkdir()
    (tmp_path / "memory" / "crispybench" / "crispy" / "podB" / "busy").write_text("")
    (tmp_path / "cpu" / "other").mkdir(parents=True)

    failed = hostprep.remove_cgroup_tree("crispybench", tmp_path)

    assert not (tmp_path / "pids" / "crispybench").exists()
    assert not (tmp_path / "memory" / "crispybench" / "crispy" / "podA").exists()
    assert str(tmp_path / "memory" / "crispybench" / "crispy" / "podB") in failed
    assert (tmp_path / "cpu" / "other").is_dir()


def test_prune_empty_keeps_only_populated_tops(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "procs").write_text("123")
    assert hostprep._prune_empty(tmp_path) == ["c"]
    assert not (tmp_path / "a").exists()
