"""User and group resolution against an image's /etc/passwd and /etc/group."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from runtime import users
from runtime.errors import InvalidArgument


@pytest.fixture
def root(tmp_path: Path) -> str:
    etc = tmp_path / "r/etc"
    etc.mkdir(parents=True)
    (etc / "passwd").write_text(
        "# a comment\n"
        "root:x:0:0:root:/root:/bin/sh\n"
        "broken line without colons\n"
        "bad:x:notanumber:0::/:/bin/sh\n"
        "www:x:33:33:www:/var/www:/bin/false\n"
        "short:x:44:44\n")
    (etc / "group").write_text("root:x:0:\nwww:x:33:\nweb:x:80:www, other\nbad:x:zz:www\ndocker:x:999:www\n")
    return str(tmp_path / "r")


def test_parse_skips_malformed_lines(root):
    assert [p.name for p in users.read_passwd(root)] == ["root", "www", "short"]
    assert [g.name for g in users.read_group(root)] == ["root", "www", "web", "docker"]
    assert users.read_group(root)[2].members == ["www", "other"]


def test_resolve_by_name_and_membership(root):
    u = users.resolve(root, user="www")
    assert (u.uid, u.gid, u.additional_gids, u.home, u.username) == (33, 33, [33, 80, 999], "/var/www", "www")


def test_entry_without_home(root):
    assert users.resolve(root, user="short").home == "/"


def test_missing_files_mean_numeric_only(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert users.resolve(str(empty), user="1000:1000").additional_gids == [1000]
    assert users.resolve(str(empty)).uid == 0
    with pytest.raises(InvalidArgument, match="passwd"):
        users.resolve(str(empty), user="www")


def test_bad_user_strings(root):
    with pytest.raises(InvalidArgument, match="no user part"):
        users.resolve(root, user=":33")
    with pytest.raises(InvalidArgument, match="out of range"):
        users.resolve(root, user="99999999999")
    with pytest.raises(InvalidArgument, match="without a group"):
        users.resolve(root, username="www:web")


def test_resolve_in_root_confines_symlinks(tmp_path):
    r = tmp_path / "r"
    (r / "a/b").mkdir(parents=True)
    os.symlink("/a/b", r / "abs")
    os.symlink("../../../../..", r / "a/b/up")
    os.symlink("loop2", r / "loop1")
    os.symlink("loop1", r / "loop2")
    assert users.resolve_in_root(str(r), "/abs/f") == str(r / "a/b/f")
    assert users.resolve_in_root(str(r), "/a/b/up/etc/passwd") == str(r / "etc/passwd")
    assert users.resolve_in_root(str(r), "/../../etc") == str(r / "etc")
    with pytest.raises(InvalidArgument, match="too many symbolic links"):
        users.resolve_in_root(str(r), "/loop1/x")
