"""Sealed copies of the OCI runtime binary (runtime/oci/sealed_binary.py)."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from runtime.oci.sealed_binary import SEALS, SealedBinaries


@pytest.fixture
def binaries():
    b = SealedBinaries()
    yield b
    b.close()


def _fd_of(exe: str) -> int:
    assert exe.startswith(f"/proc/{os.getpid()}/fd/"), exe
    return int(exe.rsplit("/", 1)[1])


def test_copy_is_sealed_identical_and_runs(binaries: SealedBinaries, tmp_path: Path) -> None:
    src = tmp_path / "tool"
    shutil.copy(shutil.which("true") or "/bin/true", src)
    exe = binaries.exe(str(src))
    fd = _fd_of(exe)
    # All four seals: what runc and crun check before skipping their own copy.
    assert fcntl.fcntl(fd, fcntl.F_GET_SEALS) == SEALS
    assert Path(exe).read_bytes() == src.read_bytes()
    with pytest.raises(PermissionError):
        os.pwrite(fd, b"x", 0)
    assert subprocess.run([exe]).returncode == 0
    # One copy per binary, not per call.
    assert binaries.exe(str(src)) == exe


def test_a_changed_binary_is_copied_again(binaries: SealedBinaries, tmp_path: Path) -> None:
    src = tmp_path / "tool"
    src.write_bytes(b"#!/bin/sh\nexit 3\n")
    src.chmod(0o755)
    first = binaries.exe(str(src))
    assert subprocess.run([first]).returncode == 3
    src.write_bytes(b"#!/bin/sh\nexit 4\n")  # an upgrade: new size and mtime
    second = binaries.exe(str(src))
    assert second != first
    assert subprocess.run([second]).returncode == 4
    # The old copy stays usable for a conmon that was handed it a moment ago.
    assert subprocess.run([first]).returncode == 3


def test_missing_binary_falls_back_to_its_path(binaries: SealedBinaries, tmp_path: Path) -> None:
    missing = str(tmp_path / "nope")
    assert binaries.exe(missing) == missing


def test_close_releases_every_copy(tmp_path: Path) -> None:
    src = tmp_path / "tool"
    src.write_bytes(b"a")
    b = SealedBinaries()
    fd1 = _fd_of(b.exe(str(src)))
    src.write_bytes(b"bb")
    fd2 = _fd_of(b.exe(str(src)))
    b.close()
    for fd in (fd1, fd2):
        with pytest.raises(OSError):
            os.fstat(fd)


@pytest.mark.parametrize("name", ["crun", "runc"])
def test_installed_runtime_runs_from_its_copy(binaries: SealedBinaries, name: str) -> None:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed")
    out = subprocess.run([binaries.exe(path), "--version"], capture_output=True, text=True, check=True).stdout
    assert f"{name} version" in out
