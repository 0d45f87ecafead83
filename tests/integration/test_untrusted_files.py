"""Reading files crispy does not control: regular files only, bounded,
resolved inside a container root, and never blocking on open."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path
from typing import Any, Callable

import pytest

from runtime import cdi, seccomp, untrusted_files, users
from runtime.errors import FailedPrecondition, InvalidArgument


def finishes(fn: Callable[[], Any], fifos: list[Path], within: float = 10.0) -> Any:
    """fn()'s result (or exception) if it returns within `within` seconds;
    a test failure if it blocks. A call blocked opening one of `fifos` is
    let go afterwards (a writer opens it), so no thread stays stuck."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - re-raised in the test
            out["error"] = e
    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(within)
    if t.is_alive():
        for f in fifos:
            try:
                os.close(os.open(f, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass
        t.join(10)
        pytest.fail(f"the call blocked for {within}s")
    if "error" in out:
        raise out["error"]
    return out.get("value")


@pytest.fixture(params=["openat2", "walk"])
def resolver(request, monkeypatch):
    """Every in-root test runs with openat2 and with the fallback walk."""
    monkeypatch.setattr(untrusted_files, "_have_openat2", None if request.param == "openat2" else False)
    return request.param


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    (r / "etc").mkdir(parents=True)
    (r / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    return r


def test_regular_file_is_read(root, resolver):
    assert untrusted_files.read_in_root(str(root), "/etc/passwd", 1024) == b"root:x:0:0:root:/root:/bin/sh\n"
    assert untrusted_files.read_in_root(str(root), "/etc/absent", 1024) is None
    assert untrusted_files.read_in_root(str(root), "/etc/passwd/below", 1024) is None
    assert untrusted_files.kind_in_root(str(root), "/etc/passwd") == ""
    assert untrusted_files.kind_in_root(str(root), "/etc/absent") is None


@pytest.mark.parametrize("make,kind", [
    (lambda p: os.mkfifo(p), "a FIFO"),
    (lambda p: os.mknod(p, 0o600 | 0o020000, os.makedev(1, 5)), "a character device"),
    (lambda p: os.mkdir(p), "a directory"),
    (lambda p: socket.socket(socket.AF_UNIX).bind(str(p)), "a socket"),
])
def test_anything_but_a_regular_file_is_refused_without_blocking(root, resolver, make, kind):
    target = root / "etc/group"
    make(target)
    with pytest.raises(untrusted_files.UnreadableFile, match=f"is {kind}, not a regular file"):
        finishes(lambda: untrusted_files.read_in_root(str(root), "/etc/group", 1024), [target])
    assert untrusted_files.kind_in_root(str(root), "/etc/group") == kind


def test_size_is_bounded(root, resolver):
    (root / "etc/group").write_bytes(b"g:x:1:\n" * 200)
    assert len(untrusted_files.read_in_root(str(root), "/etc/group", 1400)) == 1400
    with pytest.raises(untrusted_files.UnreadableFile, match="larger than 1399 bytes"):
        untrusted_files.read_in_root(str(root), "/etc/group", 1399)


def test_symlinks_stay_inside_the_root(root, resolver, tmp_path):
    (tmp_path / "host-secret").write_text("host")
    (root / "etc/real").write_text("inside")
    os.symlink("/etc/real", root / "etc/abs")
    os.symlink("../../../../../../etc/real", root / "etc/up")
    os.symlink(str(tmp_path / "host-secret"), root / "etc/out")
    assert untrusted_files.read_in_root(str(root), "/etc/abs", 64) == b"inside"
    assert untrusted_files.read_in_root(str(root), "/etc/up", 64) == b"inside"
    assert untrusted_files.read_in_root(str(root), "/../../etc/real", 64) == b"inside"
    # The host path, seen from inside the root, is not there.
    assert untrusted_files.read_in_root(str(root), "/etc/out", 64) is None
    os.symlink("loop2", root / "etc/loop1")
    os.symlink("loop1", root / "etc/loop2")
    with pytest.raises(untrusted_files.SymlinkLoop):
        untrusted_files.read_in_root(str(root), "/etc/loop1", 64)


def test_symlink_to_a_fifo_is_refused(root, resolver):
    os.mkfifo(root / "pipe")
    os.symlink("/pipe", root / "etc/group")
    with pytest.raises(untrusted_files.UnreadableFile, match="FIFO"):
        finishes(lambda: untrusted_files.read_in_root(str(root), "/etc/group", 1024), [root / "pipe"])


def test_host_file(tmp_path):
    (tmp_path / "p.json").write_text("{}")
    os.symlink(tmp_path / "p.json", tmp_path / "link.json")
    assert untrusted_files.read_host_file(str(tmp_path / "link.json"), 16) == b"{}"
    with pytest.raises(FileNotFoundError):
        untrusted_files.read_host_file(str(tmp_path / "absent.json"), 16)
    os.mkfifo(tmp_path / "fifo.json")
    with pytest.raises(untrusted_files.UnreadableFile, match="FIFO"):
        finishes(lambda: untrusted_files.read_host_file(str(tmp_path / "fifo.json"), 16), [tmp_path / "fifo.json"])


# ---- the callers ---------------------------------------------------------------------

def test_users_refuse_a_fifo_passwd_or_group(root):
    os.mkfifo(root / "etc/group")
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    # Refused even when crispy needs no group lookup: runc opens it too.
    with pytest.raises(FailedPrecondition, match="the image's /etc/group is a FIFO, not a regular file"):
        finishes(lambda: users.resolve(str(root), uid=4242), [root / "etc/group"])
    os.unlink(root / "etc/group")
    os.unlink(root / "etc/passwd")
    os.mkfifo(root / "etc/passwd")
    with pytest.raises(FailedPrecondition, match="the image's /etc/passwd is a FIFO"):
        finishes(lambda: users.resolve(str(root), username="www"), [root / "etc/passwd"])


def test_users_read_the_group_file_only_for_a_group_lookup(root):
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\nwww:x:33:33::/var/www:/bin/sh\n")
    (root / "etc/group").write_bytes(b"www:x:33:\n" + b"g:x:7:www\n" * (users.MAX_FILE_BYTES // 10 + 1))
    assert users.resolve(str(root), uid=4242).additional_gids == [0]
    assert users.resolve(str(root), user="www", strict_groups=True, supplemental=[5]).additional_gids == [33, 5]
    assert users.resolve(str(root), uid=33, strict_groups=True).additional_gids == [33]
    with pytest.raises(FailedPrecondition, match="the image's /etc/group is larger than"):
        users.resolve(str(root), user="www")
    with pytest.raises(FailedPrecondition, match="/etc/group is larger than"):
        users.resolve(str(root), user="www:g", strict_groups=True)


def test_users_symlink_loop_is_invalid_argument(root):
    os.unlink(root / "etc/passwd")
    os.symlink("/etc/passwd", root / "etc/passwd")
    with pytest.raises(InvalidArgument, match="too many symbolic links resolving /etc/passwd"):
        users.resolve(str(root))


def test_seccomp_profile_fifo_is_refused(tmp_path):
    os.mkfifo(tmp_path / "profile.json")
    with pytest.raises(InvalidArgument, match="seccomp profile .* is a FIFO, not a regular file"):
        finishes(lambda: seccomp.load_file(str(tmp_path / "profile.json")), [tmp_path / "profile.json"])


def test_cdi_spec_fifo_is_skipped_with_an_error(tmp_path):
    os.mkfifo(tmp_path / "vendor.json")
    reg = finishes(lambda: cdi.load([str(tmp_path)]), [tmp_path / "vendor.json"])
    assert reg.devices == {}
    assert reg.errors == [f"{tmp_path}/vendor.json: is a FIFO, not a regular file"]
