"""runtime/private_dirs.py on a temp dir: new directories come out exactly
0700 whatever the umask, existing ones (an older crispy's, or made by hand)
are tightened and taken back from another owner, roots keep what an
operator may legitimately want (group search) and lose the rest."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Iterator

import pytest

from runtime import private_dirs

NOBODY = 65534


def mode(p: Path) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


@pytest.fixture
def umask_all() -> Iterator[None]:
    old = os.umask(0o777)
    try:
        yield
    finally:
        os.umask(old)


def test_new_dir_is_0700_even_under_a_umask_that_takes_everything(tmp_path: Path, umask_all: None) -> None:
    assert private_dirs.ensure_private(tmp_path / "a") is False
    assert mode(tmp_path / "a") == 0o700
    assert private_dirs.ensure_root(tmp_path / "r") is False
    assert mode(tmp_path / "r") == 0o700


def test_existing_loose_dir_is_tightened_once(tmp_path: Path) -> None:
    d = tmp_path / "snapshots"
    d.mkdir()
    os.chmod(d, 0o1777)
    assert private_dirs.ensure_private(d) is True
    assert mode(d) == 0o700
    assert private_dirs.ensure_private(d) is False


def test_dir_owned_by_someone_else_is_taken_back(tmp_path: Path) -> None:
    d = tmp_path / "rootfs"
    d.mkdir(mode=0o700)
    os.chown(d, NOBODY, NOBODY)
    assert private_dirs.ensure_private(d) is True
    st = os.stat(d)
    assert (st.st_uid, mode(d)) == (os.geteuid(), 0o700)


@pytest.mark.parametrize("before,after", [(0o755, 0o750), (0o777, 0o750), (0o711, 0o710), (0o750, 0o750),
                                          (0o700, 0o700), (0o2775, 0o2750)])
def test_root_keeps_group_search_and_loses_the_rest(tmp_path: Path, before: int, after: int) -> None:
    root = tmp_path / "data"
    root.mkdir()
    os.chmod(root, before)
    os.chown(root, NOBODY, 1234)
    assert private_dirs.ensure_root(root) is True
    st = os.stat(root)
    # The group may be how an operator lets people at the socket.
    assert (mode(root), st.st_uid, st.st_gid) == (after, os.geteuid(), 1234)


def test_root_through_a_symlink_tightens_the_target(tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    disk.mkdir(mode=0o755)
    os.chmod(disk, 0o755)
    (tmp_path / "link").symlink_to(disk)
    private_dirs.ensure_root(tmp_path / "link")
    assert mode(disk) == 0o750


def test_root_parents_are_made_the_usual_way(tmp_path: Path) -> None:
    # /var/lib missing must not become a 0700 /var/lib.
    old = os.umask(0o022)
    try:
        private_dirs.ensure_root(tmp_path / "var" / "lib" / "crispy")
    finally:
        os.umask(old)
    assert mode(tmp_path / "var" / "lib") == 0o755
    assert mode(tmp_path / "var" / "lib" / "crispy") == 0o700


def test_a_file_in_the_way_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "images").write_text("")
    with pytest.raises(NotADirectoryError):
        private_dirs.ensure_private(tmp_path / "images")


def test_make_private_recreates_a_missing_parent_privately(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        private_dirs.make_private(tmp_path / "rootfs" / "abc")
    finally:
        os.umask(old)
    assert mode(tmp_path / "rootfs") == 0o700 and mode(tmp_path / "rootfs" / "abc") == 0o700
    with pytest.raises(FileExistsError):
        private_dirs.make_private(tmp_path / "rootfs" / "abc")


def test_tighten_children_closes_per_object_dirs_and_leaves_links_alone(tmp_path: Path) -> None:
    pods = tmp_path / "pods"
    pods.mkdir(mode=0o700)
    for name, m in (("a", 0o711), ("b", 0o755), ("c", 0o700)):
        (pods / name).mkdir()
        os.chmod(pods / name, m)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.chmod(elsewhere, 0o755)
    (pods / "link").symlink_to(elsewhere)
    (pods / "file").write_text("")
    os.chmod(pods / "file", 0o644)
    assert private_dirs.tighten_children(pods) == 2
    assert [mode(pods / n) for n in "abc"] == [0o700] * 3
    assert mode(elsewhere) == 0o755 and mode(pods / "file") == 0o644
